"""Exports of a masklet output (a segment or pseudo-label run's, any fsspec URL) to the formats video
segmentation training pipelines read: SA-V style per-video JSON (workers/export_sav.py) and YouTube-VIS JSON
(workers/export_ytvis.py). What is read, and how memory stays bounded by one video: workers/export_source.py.

Videos whose status in videos.parquet is not ok (failed) are skipped and reported, as are masklet folders
without a videos.parquet row; an output without _SUCCESS (an unfinished run) is exported as it is, and the
report says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tqdm import tqdm

from .export_sav import SavWriter
from .export_source import ExportError, ExportSource
from .export_ytvis import YtvisWriter

WRITERS = {"sav": SavWriter, "ytvis": YtvisWriter}
FORMATS = tuple(WRITERS)
DEFAULT_EVERY = {"sav": 4, "ytvis": 1}  # SA-V annotates every 4th frame (6 of 24 fps); YouTube-VIS lists all


@dataclass(frozen=True)
class ExportConfig:
    format: str
    pred: str
    out: str
    every: int
    storage_options: dict = field(default_factory=dict, repr=False)  # may hold credentials: never shown
    progress: bool = False

    def __post_init__(self):
        if self.format not in WRITERS:
            raise ExportError(f"unknown export format {self.format!r} (known: {', '.join(FORMATS)})", self.format)
        if isinstance(self.every, bool) or not isinstance(self.every, int) or self.every < 1:
            raise ExportError(f"every must be an int >= 1, got {self.every!r}", self.every)
        for name in ("pred", "out"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name).strip():
                raise ExportError(f"--{name} must be a non-empty URL, got {getattr(self, name)!r}",
                                  getattr(self, name))


@dataclass(frozen=True)
class ExportReport:
    format: str
    videos: int  # exported
    objects: int  # exported (visible on at least one annotated frame)
    hidden_objects: int  # never visible on an annotated frame, left out
    annotated_frames: int  # over all exported videos
    skipped: dict[str, str]  # video id -> why it was not exported (failed, no metadata)
    unlisted: list[str]  # masklet folders without a videos.parquet row, not exported
    complete: bool  # the output had _SUCCESS
    where: str


def run_export(config: ExportConfig) -> ExportReport:
    """Export every ok video of `config.pred`, one at a time, to `config.out`."""
    source = ExportSource(config.pred, config.storage_options)
    writer = WRITERS[config.format](config.out, config.storage_options, config.every)
    plan = source.plan()
    objects = hidden = frames = 0
    with writer:
        for meta in tqdm(plan.videos, desc=f"export {config.format}", unit="video", disable=not config.progress):
            tracks = source.tracks(meta, config.every)
            shown = [t for t in tracks if t.visible.any()]
            writer.add(meta, shown)
            objects, hidden = objects + len(shown), hidden + len(tracks) - len(shown)
            frames += len(meta.annotated(config.every))
    return ExportReport(config.format, len(plan.videos), objects, hidden, frames, plan.skipped, plan.unlisted,
                        source.complete(), writer.where)
