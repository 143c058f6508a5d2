"""Planning: probe each video, validate its prompts against it, cut it into a stream of chunks."""

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from model import Prompt
from workers.tasks import ChunkTask
from workers.video_source import VideoInfo, probe_video

from .manifest import VideoEntry, check_prompts_against_video


@dataclass(frozen=True)
class StreamPlan:
    """One video tracked as one stream (memory must flow through the whole video)."""

    stream: int  # the video's manifest row: stable across runs, so resume finds its files
    entry: VideoEntry
    info: VideoInfo
    chunks: tuple[tuple[int, int], ...]  # [start, stop) per chunk
    prompts: tuple[tuple[int, Prompt], ...]  # (frame index, prompt) in native pixels
    first_frames: dict  # object id -> first prompted frame
    notes: tuple[str, ...] = ()  # what the planner changed in the prompts (boxes clipped to the frame)

    def task(self, chunk: int) -> ChunkTask:
        start, stop = self.chunks[chunk]
        prompts = tuple((f, p) for f, p in self.prompts if start <= f < stop)
        return ChunkTask(self.entry.video_id, self.stream, chunk, start, stop, self.info, prompts)

    def expected_rows(self, chunk: int) -> int:
        """One row per object per frame, from the frame the object joins at."""
        start, stop = self.chunks[chunk]
        return sum(max(0, stop - max(start, f)) for f in self.first_frames.values())

    @property
    def num_frames(self) -> int:
        return self.info.num_frames


def probe_all(entries: list[VideoEntry], storage_options: dict, threads: int = 8) -> list:
    """VideoInfo per entry, or the exception that probing raised (the video then fails alone)."""
    def probe(entry):
        try:
            return probe_video(entry.url, storage_options)
        except Exception as e:  # recorded as that video's failure
            return e
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(probe, entries))


def plan_streams(entries: list[VideoEntry], infos: list, chunk_frames: int) -> tuple[list[StreamPlan], dict]:
    """Streams ordered longest first, and {video_id: error} for videos that cannot run."""
    plans, failures = [], {}
    for entry, info in zip(entries, infos):
        if isinstance(info, Exception):
            failures[entry.video_id] = f"{type(info).__name__}: {info}"
            continue
        try:
            specs, notes = check_prompts_against_video(entry, info.num_frames, info.height, info.width)
            prompts = tuple((p.frame_index, _to_prompt(p, info)) for p in specs)
        except Exception as e:
            failures[entry.video_id] = f"{type(e).__name__}: {e}"
            continue
        chunks = tuple((s, min(s + chunk_frames, info.num_frames)) for s in range(0, info.num_frames, chunk_frames))
        first = {}
        for f, p in sorted(prompts, key=lambda fp: fp[0]):
            first.setdefault(p.object_id, f)
        plans.append(StreamPlan(entry.row, entry, info, chunks, prompts, first, tuple(notes)))
    plans.sort(key=lambda p: (-p.num_frames, p.stream))
    return plans, failures


def _to_prompt(spec, info: VideoInfo) -> Prompt:
    mask = spec.to_mask(info.height, info.width) if spec.mask_rle is not None else None
    return Prompt(spec.object_id, points=spec.points, labels=spec.labels, box=spec.box, mask=mask)
