"""Planning: probe each video, validate its prompts against it, cut it into a stream of chunks."""

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from model import Prompt
from workers.tasks import ChunkTask
from workers.video_source import VideoInfo, probe_video

from .manifest import VideoEntry, check_prompts_against_video


SEGMENT_STRIDE = 100_000  # pseudo-label stream number: manifest row * SEGMENT_STRIDE + segment


@dataclass(frozen=True)
class Segment:
    """Where a pseudo-label stream sits in its video: frames [start, stop), overlapping its neighbours."""

    index: int  # 0, 1, ... within the video
    count: int  # segments of the video
    start: int
    stop: int
    rows: tuple[int, int]  # frames whose rows it writes: from the middle of the overlap before to the one after
    overlaps: tuple[tuple[int, int], ...]  # its frames shared with the segment before and the one after


@dataclass(frozen=True)
class StreamPlan:
    """One video tracked as one stream (memory must flow through the whole video), or, pseudo-labelling, one
    segment of a video (`segment` set), its objects discovered and numbered from `discover_from`."""

    stream: int  # the video's manifest row: stable across runs, so resume finds its files
    entry: VideoEntry
    info: VideoInfo
    chunks: tuple[tuple[int, int], ...]  # [start, stop) per chunk
    prompts: tuple[tuple[int, Prompt], ...]  # (frame index, prompt) in native pixels
    first_frames: dict  # object id -> first prompted frame
    notes: tuple[str, ...] = ()  # what the planner changed in the prompts (boxes clipped to the frame)
    segment: Segment | None = None  # pseudo-labelling: this stream's segment
    discover_from: int | None = None  # pseudo-labelling: the first id of discovered objects

    def task(self, chunk: int) -> ChunkTask:
        start, stop = self.chunks[chunk]
        prompts = tuple((f, p) for f, p in self.prompts if start <= f < stop)
        seg = self.segment
        if seg is None:
            return ChunkTask(self.entry.video_id, self.stream, chunk, start, stop, self.info, prompts)
        overlaps = tuple((max(a, start), min(b, stop)) for a, b in seg.overlaps if a < stop and b > start)
        return ChunkTask(self.entry.video_id, self.stream, chunk, start, stop, self.info, prompts,
                         self.discover_from, seg.rows, overlaps, seg.index, seg.count > 1)

    def expected_rows(self, chunk: int) -> int | None:
        """One row per object per frame, from the frame the object joins at; None when objects are
        discovered (their number is only known once computed)."""
        if self.discover_from is not None:
            return None
        start, stop = self.chunks[chunk]
        return sum(max(0, stop - max(start, f)) for f in self.first_frames.values())

    @property
    def runs(self) -> bool:
        """Whether the model runs at all: a prompted stream needs prompts, a discovering one does not."""
        return bool(self.first_frames) or self.discover_from is not None

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


def cut_segments(num_frames: int, segment_frames: int, overlap: int) -> list[Segment]:
    """Segments of at most `segment_frames` frames, `overlap` frames shared by neighbours, of equal length
    (so parallel segments finish together); one segment when the video fits."""
    if num_frames <= segment_frames:
        return [Segment(0, 1, 0, num_frames, (0, num_frames), ())]
    count = -(-(num_frames - overlap) // (segment_frames - overlap))
    step = -(-(num_frames - overlap) // count)  # segment length - overlap
    bounds = [(k * step, min(k * step + step + overlap, num_frames)) for k in range(count)]
    middles = [a_next + (b - a_next) // 2 for (_, b), (a_next, _) in zip(bounds, bounds[1:])]
    cuts = [0, *middles, num_frames]
    segments = []
    for k, (a, b) in enumerate(bounds):
        shared = ((a, bounds[k - 1][1]),) if k else ()
        shared += ((bounds[k + 1][0], b),) if k + 1 < count else ()
        segments.append(Segment(k, count, a, b, (cuts[k], cuts[k + 1]), shared))
    return segments


def plan_segments(entries: list[VideoEntry], infos: list, chunk_frames: int, segment_frames: int,
                  overlap: int) -> tuple[list[StreamPlan], dict]:
    """Pseudo-labelling: every video cut into segments, each an independent stream of chunks that discovers
    objects (numbered after the largest prompted id of its video); longest first."""
    whole, failures = plan_streams(entries, infos, chunk_frames)
    plans = []
    for p in whole:
        first_id = max(p.first_frames, default=0) + 1
        segments = cut_segments(p.num_frames, segment_frames, overlap)
        if len(segments) >= SEGMENT_STRIDE:
            failures[p.entry.video_id] = (f"{p.num_frames} frames make {len(segments)} segments of "
                                          f"--segment-frames {segment_frames}; at most {SEGMENT_STRIDE - 1}")
            continue
        for seg in segments:
            chunks = tuple((s, min(s + chunk_frames, seg.stop)) for s in range(seg.start, seg.stop, chunk_frames))
            prompts = tuple((f, q) for f, q in p.prompts if seg.start <= f < seg.stop)
            first = {}
            for f, q in sorted(prompts, key=lambda fp: fp[0]):
                first.setdefault(q.object_id, f)
            plans.append(StreamPlan(p.entry.row * SEGMENT_STRIDE + seg.index, p.entry, p.info, chunks, prompts,
                                    first, p.notes, seg, first_id))
    plans.sort(key=lambda p: (-(p.chunks[-1][1] - p.chunks[0][0]), p.stream))
    return plans, failures
