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
