"""Cutting long videos into overlapping segments, and the per-part track statistics stitching relies on."""

import numpy as np
import pytest

from cluster.plan import cut_segments
from workers.masklets import ChunkRows
from workers.output import RunOutput
from workers.tracks import GLOBAL, LOCAL, PartTracks, part_tracks, relabel, with_tracks


@pytest.mark.parametrize("frames, length, overlap", [(100, 600, 32), (600, 600, 32), (601, 600, 32),
                                                     (1200, 600, 32), (3000, 600, 32), (96, 40, 8), (41, 40, 1)])
def test_segments_cover_the_video_and_rows_are_owned_once(frames, length, overlap):
    segs = cut_segments(frames, length, overlap)
    assert segs[0].start == 0 and segs[-1].stop == frames
    assert all(s.stop - s.start <= length for s in segs)
    owned = [f for s in segs for f in range(*s.rows)]
    assert owned == list(range(frames))  # every frame's rows written by exactly one segment
    for a, b in zip(segs, segs[1:]):
        assert a.stop - b.start == overlap  # neighbours share exactly `overlap` frames
        assert a.rows[1] == b.rows[0] and b.start <= a.rows[1] < a.stop  # the cut lies inside the overlap
        assert a.overlaps[-1] == b.overlaps[0] == (b.start, a.stop)
    lengths = [s.stop - s.start for s in segs]
    assert max(lengths) - min(lengths) <= len(segs)  # balanced, so parallel segments finish together
    assert len(segs) == (1 if frames <= length else -(-(frames - overlap) // (length - overlap)))


def _rows(frames, ids, visible_from=0):
    rows = ChunkRows("v")
    for f in frames:
        masks = np.zeros((len(ids), 8, 8), bool)
        if f >= visible_from:
            masks[:, 2:5, 2:5] = True
        rows.add(f, f / 24, ids, masks, [0.9] * len(ids), [0.8] * len(ids))
    return rows.to_table()


def test_track_statistics_travel_in_the_footer_and_survive_relabelling(tmp_path):
    table = _rows(range(10, 16), [3, 7], visible_from=12)
    stats = part_tracks(table, segment=2, ids=LOCAL)
    assert stats.tracks[3].first == 10 and stats.tracks[3].last == 15 and stats.tracks[3].rows == 6
    assert stats.tracks[7].visible == 4 and stats.tracks[7].score_sum == pytest.approx(0.9 * 4)
    out = RunOutput(str(tmp_path))
    out.write_part("v", 5, 1, with_tracks(table, stats))
    back = out.part_tracks("v", 5, 1)
    assert back == stats
    moved = relabel(out.read_part("v", 5, 1), {3: 11, 7: 4})
    assert sorted(set(moved.column("object_id").to_pylist())) == [4, 11]
    assert moved.column("frame_index").equals(table.column("frame_index"))
    with pytest.raises(KeyError, match=r"\[7\]"):
        relabel(table, {3: 1})
    assert PartTracks.from_metadata(None) is None
    out.write_part("v", 5, 2, table)  # a segment job's part carries none
    assert out.part_tracks("v", 5, 2) is None
    assert GLOBAL != LOCAL


def _segment_output(tmp_path):
    """A 20-frame video in 2 segments ([0, 12), [8, 20), overlap 4, rows cut at 10) written by hand: object A
    (square) throughout, as 1 then 2; object B appears at frame 11, after segment 0's cut: its rows there are
    overlap rows only; segment 1 numbers B 1 and A 2 (swapped)."""
    from cluster.manifest import VideoEntry
    from cluster.plan import plan_segments
    from workers.video_source import VideoInfo
    plans, failures = plan_segments([VideoEntry(0, "v.mp4", "v")], [VideoInfo("v.mp4", 20, 24.0, 8, 8)],
                                    chunk_frames=6, segment_frames=12, overlap=4)
    assert not failures and [p.segment.rows for p in plans] == [(0, 10), (10, 20)]

    def masks(f, ids):
        m = np.zeros((len(ids), 8, 8), bool)
        for i, o in enumerate(ids):
            if o == "A":
                m[i, 0:4, 0:4] = True
            elif f >= 11:
                m[i, 4:8, 4:8] = True
        return m

    out = RunOutput(str(tmp_path))
    names = [{"A": 1, "B": 3}, {"A": 2, "B": 1}]  # local ids per segment
    for p in plans:
        for c in range(len(p.chunks)):
            task, own, lap = p.task(c), ChunkRows("v"), ChunkRows("v")
            for f in range(task.start, task.stop):
                objs = ["A"] + (["B"] if f >= 11 or (p.segment.index == 1) else [])
                ids = [names[p.segment.index][o] for o in objs]
                row = (f, f / 24, ids, masks(f, objs), [0.9] * len(ids), [0.9] * len(ids))
                if task.rows[0] <= f < task.rows[1]:
                    own.add(*row)
                if any(a <= f < b for a, b in task.overlaps):
                    lap.add(*row)
            if task.overlaps:
                out.write_overlap(p.stream, c, lap.to_table())
            table = own.to_table()
            out.write_part("v", p.stream, c, with_tracks(table, part_tracks(table, p.segment.index, LOCAL)))
    return out, plans


def test_stitching_links_a_track_seen_only_on_the_overlap(tmp_path):
    from cluster.pseudo_label import finish_video
    out, plans = _segment_output(tmp_path)
    result = finish_video(out, plans, stitch_iou=0.5)
    assert result.error is None, result.error
    rows = out.video_keys("v").to_pandas()
    assert len(rows) == len(rows.drop_duplicates()) == 20 + 10  # A on 20 frames, B on segment 1's 10
    tracks = result.table.to_pandas().set_index("object_id")
    # Chains numbered by (first segment, local id): A (segment 0's 1) is 1, B (segment 0's 3, seen on its
    # overlap rows only, linked to segment 1's 1) is 2; no part row carries segment 0's B.
    assert sorted(tracks.index) == [1, 2]
    assert list(tracks.loc[1, "segments"]) == [0, 1] and tracks.loc[1, "frames"] == 20
    assert list(tracks.loc[2, "segments"]) == [1] and tracks.loc[2, "first_frame"] == 10
    assert all(out.part_tracks("v", p.stream, c).ids == GLOBAL for p in plans for c in range(len(p.chunks)))
    again = finish_video(out, plans, stitch_iou=0.5)  # a restart after relabelling: nothing changes
    assert again.table.equals(result.table)
