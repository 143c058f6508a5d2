"""What the exports read: a run's output (any fsspec URL), one video at a time, as per-object tracks over the
annotated frames (every N-th frame: 0, N, 2N, ... < frames).

Video metadata (frames, fps, width, height, status) comes from videos.parquet; each video's masklet rows come
from its own partition directory, so memory is bounded by one video's rows and a video costs one listing of
its own folder (not of the whole corpus). Only the annotated frames' rows are materialized.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
from pycocotools import mask as mask_utils

from model.errors import SamstreamError

from .masklets import PART_SCHEMA, escape_video_id, unescape_video_id
from .output import MASKLETS, RUN_MARKERS, VIDEOS, RunOutput, is_run_output
from .storage_options import safe_url

ROW_COLUMNS = ["object_id", "frame_index", "height", "width", "mask_rle", "bbox_xywh", "area", "score",
               "visible"]
VIDEO_COLUMNS = ["video_id", "status", "frames", "fps", "width", "height"]
_PARTITION_PREFIX = "video_id="


class ExportError(SamstreamError, ValueError):
    """Input that cannot be exported; `value` holds the offending value (a URL, a video id, a key)."""

    def __init__(self, message: str, value=None):
        self.value = value
        super().__init__(message)


def open_filesystem(url: str, storage_options: dict, role: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, root path) of a URL; an unknown protocol or a missing driver is an ExportError."""
    try:
        fs, root = fsspec.core.url_to_fs(url, **storage_options)
    except (ValueError, ImportError, TypeError) as e:  # "Protocol not known", s3fs/gcsfs not installed
        raise ExportError(f"{role}: cannot open {safe_url(url)!r}: {e}", url) from e
    return fs, root.rstrip("/") or "/"


def open_out_dir(url: str, storage_options: dict) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, root) of --out, checked before any work: a known protocol, and not an existing file."""
    fs, root = open_filesystem(url, storage_options, "--out")
    if fs.isfile(root):
        raise ExportError(f"--out {safe_url(url)!r} is a file; it must name a directory", url)
    return fs, root


@dataclass(frozen=True)
class VideoMeta:
    video_id: str
    frames: int
    fps: float | None
    height: int
    width: int

    def annotated(self, every: int) -> range:
        """The frames an export annotates: 0, every, 2 x every, ... below `frames`."""
        return range(0, self.frames, every)


@dataclass(frozen=True)
class Track:
    """One object over a video's annotated frames (position i is frame i x every)."""

    object_id: int
    counts: list  # COCO compressed counts of the row, None where the object has no row on that frame
    visible: np.ndarray  # bool
    area: np.ndarray  # int64, 0 where not visible
    bbox: np.ndarray  # (n, 4) float32 xywh, zeros where not visible
    score: np.ndarray  # float32 predicted IoU, NaN where there is no row


@dataclass(frozen=True)
class VideoPlan:
    """Which videos an export covers, and which it leaves out and why."""

    videos: list[VideoMeta]
    skipped: dict[str, str] = field(default_factory=dict)  # video id -> reason (failed, no metadata)
    unlisted: list[str] = field(default_factory=list)  # masklet folders without a videos.parquet row


@functools.lru_cache(maxsize=64)
def empty_rle(height: int, width: int) -> str:
    """The compressed counts of an all-zero mask (SA-V's mask of an object not visible on a frame)."""
    zeros = np.zeros((height, width, 1), np.uint8, order="F")
    return mask_utils.encode(zeros)[0]["counts"].decode("ascii")


class ExportSource:
    """A run's output read for an export."""

    def __init__(self, url: str, storage_options: dict):
        self.url = url
        self.fs, self.root = open_filesystem(url, storage_options, "--pred")
        self._check_run_output()
        self.output = RunOutput(url, storage_options)

    def _check_run_output(self) -> None:
        try:
            is_dir = self.fs.isdir(self.root)
        except Exception as e:  # the first touch of the store (denied, unreachable, a bad bucket): name the URL
            raise ExportError(f"--pred: cannot read {safe_url(self.url)!r}: {type(e).__name__}: {e}",
                              self.url) from e
        if not is_dir:
            raise ExportError(f"--pred: no such directory: {safe_url(self.url)!r}", self.url)
        if not is_run_output(self.fs, self.root):
            raise ExportError(f"--pred {safe_url(self.url)!r} is not a run output (it has none of "
                              f"{', '.join(RUN_MARKERS)})", self.url)
        if not self.fs.exists(f"{self.root}/{VIDEOS}"):
            raise ExportError(f"--pred {safe_url(self.url)!r} has no {VIDEOS} (frame counts and sizes come "
                              f"from it; the run has not finished a pass)", self.url)

    def complete(self) -> bool:
        """Whether the run verified its output (_SUCCESS); an export of an unfinished run is partial."""
        return self.output.has_success()

    def plan(self) -> VideoPlan:
        """Videos with status ok and full metadata, sorted by id; the others skipped with a reason."""
        table = self._videos_table()
        videos, skipped = [], {}
        for row in sorted(table.to_pylist(), key=lambda r: r["video_id"]):
            reason = _skip_reason(row)
            if reason:
                skipped[row["video_id"]] = reason
            else:
                videos.append(VideoMeta(row["video_id"], int(row["frames"]), row["fps"], int(row["height"]),
                                        int(row["width"])))
        listed = {row["video_id"] for row in table.to_pylist()}
        unlisted = sorted(set(self._partitions()) - listed)
        return VideoPlan(videos, skipped, unlisted)

    def _videos_table(self) -> pa.Table:
        try:
            table = self.output.read_videos()
        except (OSError, pa.ArrowException) as e:
            raise ExportError(f"--pred: cannot read {safe_url(self.url)}/{VIDEOS}: {e}", self.url) from e
        missing = [c for c in VIDEO_COLUMNS if c not in table.column_names]
        if missing:
            raise ExportError(f"--pred: {safe_url(self.url)}/{VIDEOS} lacks the columns {missing}", missing)
        return table.select(VIDEO_COLUMNS)

    def _partitions(self) -> dict[str, str]:
        """video id -> its masklet folder name, from one listing of masklets/."""
        found = {}
        for name in self.output.names(MASKLETS):
            if name.startswith(_PARTITION_PREFIX):
                try:
                    found[unescape_video_id(name[len(_PARTITION_PREFIX):])] = name
                except UnicodeDecodeError:
                    continue  # not a folder our layout writes
        return found

    def tracks(self, meta: VideoMeta, every: int) -> list[Track]:
        """The video's objects over its annotated frames, sorted by object id."""
        return build_tracks(self._rows(meta, every), meta, every)

    def _rows(self, meta: VideoMeta, every: int) -> pa.Table:
        directory = f"{self.root}/{MASKLETS}/{_PARTITION_PREFIX}{escape_video_id(meta.video_id)}"
        self.fs.invalidate_cache()  # a listing cached before the writers finished would hide their parts
        if not self.fs.isdir(directory):
            return PART_SCHEMA.empty_table().select(ROW_COLUMNS)  # an ok video with no object
        dataset = ds.dataset(directory, filesystem=self.fs, format="parquet", schema=PART_SCHEMA)
        wanted = ds.field("frame_index").isin(pa.array(list(meta.annotated(every)), pa.int32()))
        return dataset.to_table(columns=ROW_COLUMNS, filter=wanted)


def _skip_reason(row: dict) -> str | None:
    if row["status"] != "ok":
        return f"status {row['status']}"
    missing = [k for k in ("frames", "height", "width") if row[k] is None]
    if missing:
        return f"no {', '.join(missing)} in {VIDEOS}"
    return None


# ---------------------------------------------------------------------------------------------- tracks


def _check_rows(cols: dict, meta: VideoMeta) -> None:
    """Rows must fit the video: masks of its size (an RLE's size is the frame's) on frames it has."""
    bad = (cols["height"] != meta.height) | (cols["width"] != meta.width)
    if bad.any():
        i = int(np.argmax(bad))
        raise ExportError(f"video {meta.video_id!r} object {cols['object_id'][i]} frame {cols['frame_index'][i]}:"
                          f" mask is {cols['height'][i]}x{cols['width'][i]}, {VIDEOS} says "
                          f"{meta.height}x{meta.width}", meta.video_id)
    beyond = cols["frame_index"] >= meta.frames
    if beyond.any():
        raise ExportError(f"video {meta.video_id!r} has rows on frame {int(cols['frame_index'][beyond].max())}, "
                          f"past its {meta.frames} frames", meta.video_id)


def _columns(table: pa.Table) -> dict:
    cols = {c: table.column(c).to_numpy() for c in ("object_id", "frame_index", "height", "width", "area",
                                                     "score", "visible")}
    boxes = table.column("bbox_xywh").combine_chunks()
    cols["bbox"] = np.asarray(boxes.flatten().to_numpy(), np.float32).reshape(-1, 4)
    cols["mask_rle"] = table.column("mask_rle").to_pylist()
    return cols


def build_tracks(table: pa.Table, meta: VideoMeta, every: int) -> list[Track]:
    """Rows of annotated frames -> one Track per object; a (object, frame) given twice is an error."""
    cols = _columns(table)
    _check_rows(cols, meta)
    n = len(meta.annotated(every))
    pos = cols["frame_index"].astype(np.int64) // every
    obj = cols["object_id"].astype(np.int64)
    order = np.lexsort((pos, obj))
    keys = obj[order] * n + pos[order]
    twice = np.flatnonzero(keys[1:] == keys[:-1])
    if twice.size:
        i = order[twice[0]]
        raise ExportError(f"video {meta.video_id!r} has more than one row for object {obj[i]} frame "
                          f"{cols['frame_index'][i]}", (meta.video_id, int(obj[i]), int(cols["frame_index"][i])))
    ids, starts = np.unique(obj[order], return_index=True)
    bounds = list(starts) + [len(order)]
    return [_track(int(ids[k]), order[bounds[k]:bounds[k + 1]], pos, cols, n) for k in range(len(ids))]


def _track(object_id: int, rows: np.ndarray, pos: np.ndarray, cols: dict, n: int) -> Track:
    at = pos[rows]
    counts: list = [None] * n
    for i, p in zip(rows.tolist(), at.tolist()):
        counts[p] = cols["mask_rle"][i]
    visible, area = np.zeros(n, bool), np.zeros(n, np.int64)
    bbox, score = np.zeros((n, 4), np.float32), np.full(n, np.nan, np.float32)
    visible[at], area[at] = cols["visible"][rows], cols["area"][rows]
    bbox[at], score[at] = cols["bbox"][rows], cols["score"][rows]
    area[~visible], bbox[~visible] = 0, 0  # a row not visible carries an empty mask: no area, no box
    return Track(object_id, counts, visible, area, bbox, score)
