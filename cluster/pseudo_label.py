"""After a pseudo-label run's chunks: stitch each video's segments into global ids, relabel, build tracks.

Per video, from part footers (workers/tracks.py) and the overlap rows kept under _state/overlap/ only:
1. the local ids of each segment (footers);
2. per overlap, the mean mask IoU of every pair of tracks over the shared frames, then Hungarian with a
   floor (cluster/stitch.py) -> global ids, new chains numbered from the video's first discovered id in
   segment order (a single-segment video keeps its ids and is never rewritten);
3. each part still holding local ids is rewritten with the global ones (atomically, under its own name;
   its footer then says "global", so a restart never relabels twice);
4. tracks.parquet rows from the footers' summed statistics, and a check that no (object, frame) repeats.
Same input, same ids: segments are tracked deterministically and stitching depends only on their rows.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pyarrow as pa

from model.errors import SamstreamError
from workers.output import RunOutput
from workers.tracks import GLOBAL, LOCAL, PartTracks, TrackStats, count_distinct_keys, relabel, tracks_table, with_tracks

from .plan import StreamPlan
from .stitch import SegmentTracks, overlap_iou, stitch


class StitchInputError(SamstreamError):
    """Rows stitching needs are gone (an overlap file deleted under a running output)."""


@dataclass
class VideoTracks:
    """A stitched video: its tracks.parquet rows, or why it failed."""

    table: pa.Table | None
    error: str | None = None


def finish_video(output: RunOutput, plans: list[StreamPlan], stitch_iou: float) -> VideoTracks:
    """Stitch, relabel and summarise one video whose every chunk is written. `plans`: its segments."""
    plans = sorted(plans, key=lambda p: p.segment.index)
    vid = plans[0].entry.video_id
    footers = [[output.part_tracks(vid, p.stream, c) for c in range(len(p.chunks))] for p in plans]
    if any(f is None for parts in footers for f in parts):
        return VideoTracks(None, "verification: a part lacks its track statistics")
    given = {o for p in plans for o in p.first_frames}  # user-given ids, of any segment
    if any(f.ids == LOCAL for parts in footers for f in parts):
        try:
            mapping = _stitch(output, plans, footers, stitch_iou, given)
        except SamstreamError as e:  # overlap rows gone or not stitchable: this video fails, not the run
            return VideoTracks(None, f"stitching: {e}")
        _relabel_parts(output, plans, footers, mapping)
    return _summarise(output, vid, footers, given)


def _stitch(output: RunOutput, plans: list[StreamPlan], footers, floor: float, given: set[int]) -> tuple:
    overlaps, rows = [], {}
    for k, (earlier, later) in enumerate(zip(plans, plans[1:])):
        frames = range(later.segment.start, earlier.segment.stop)
        tail, head = _overlap_rows(output, earlier, frames), _overlap_rows(output, later, frames)
        rows.setdefault(k, set()).update(tail.column("object_id").to_pylist())
        rows.setdefault(k + 1, set()).update(head.column("object_id").to_pylist())
        overlaps.append(overlap_iou(tail, head, frames))
    segments = []
    for k, (p, parts) in enumerate(zip(plans, footers)):
        # A track may have rows on an overlap only (found after its middle, or ended before it): no part row.
        ids = sorted({o for f in parts for o in f.tracks} | rows.get(k, set()))
        segments.append(SegmentTracks(p.segment.index, tuple(ids), frozenset(o for o in ids if o in given)))
    return stitch(segments, overlaps, floor, plans[0].discover_from).mapping


def _overlap_rows(output: RunOutput, plan: StreamPlan, frames: range) -> pa.Table:
    tables = []
    for c, (start, stop) in enumerate(plan.chunks):
        if start < frames.stop and stop > frames.start:
            t = output.read_overlap(plan.stream, c)
            if t is None:
                raise StitchInputError(f"the overlap rows of stream {plan.stream} chunk {c} are gone; run again to "
                                       f"recompute the video")
            tables.append(t)
    return pa.concat_tables(tables)


def _relabel_parts(output: RunOutput, plans: list[StreamPlan], footers, mapping: tuple) -> None:
    """Rewrite every part still holding local ids (threads: each is one read and one write); `footers` is
    updated to what was written."""
    def one(job):
        k, c = job
        p, ids = plans[k], mapping[plans[k].segment.index]
        table = relabel(output.read_part(p.entry.video_id, p.stream, c), ids)
        tracks = PartTracks(p.segment.index, GLOBAL, {ids[o]: s for o, s in footers[k][c].tracks.items()})
        output.write_part(p.entry.video_id, p.stream, c, with_tracks(table.replace_schema_metadata(None), tracks))
        return k, c, tracks

    jobs = [(k, c) for k, parts in enumerate(footers) for c, f in enumerate(parts) if f.ids == LOCAL]
    with ThreadPoolExecutor(max_workers=8) as pool:
        for k, c, tracks in pool.map(one, jobs):
            footers[k][c] = tracks


def _summarise(output: RunOutput, vid: str, footers, given: set[int]) -> VideoTracks:
    stats: dict[int, TrackStats] = {}
    segments: dict[int, set[int]] = {}
    rows = 0
    for parts in footers:
        for f in parts:
            for oid, s in f.tracks.items():
                stats[oid] = stats[oid] + s if oid in stats else s
                segments.setdefault(oid, set()).add(f.segment)
                rows += s.rows
    keys = output.video_keys(vid)
    distinct = count_distinct_keys(keys)
    if not keys.num_rows == rows == distinct:
        return VideoTracks(None, f"verification: {keys.num_rows} rows, {distinct} distinct (object, frame), "
                                 f"{rows} in the parts' footers")
    return VideoTracks(tracks_table(vid, stats, segments, given))
