"""Stitching segment tracks into global ids: the overlap IoU on RLEs (checked against dense masks) and the
linking rules (Hungarian over candidate pairs, the floor, given ids, numbering of new ids), on hand-made
overlaps. Pure functions: no Ray."""

import pickle
import random

import numpy as np
import pyarrow as pa
import pytest

import cluster.stitch as S
from cluster.stitch import SegmentTracks, StitchError, overlap_iou, stitch
from model.errors import SamstreamError
from workers.masklets import encode_masks

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")

H, W = 16, 24


def box(y0, x0, y1, x1) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


EMPTY = np.zeros((H, W), bool)
LEFT, RIGHT, MIDDLE = box(2, 1, 10, 7), box(2, 16, 10, 22), box(6, 9, 14, 15)


def rows(tracks: dict[int, dict[int, np.ndarray]]) -> pa.Table:
    """{object id: {frame: mask}} -> masklet-like rows; an empty mask is a row with visible False."""
    items = [(o, f, m) for o, per_frame in tracks.items() for f, m in per_frame.items()]
    counts, _, areas = encode_masks(np.stack([m for _, _, m in items])) if items else ([], None, [])
    return pa.table({
        "object_id": pa.array([o for o, _, _ in items], pa.int32()),
        "frame_index": pa.array([f for _, f, _ in items], pa.int32()),
        "height": pa.array([H] * len(items), pa.int32()), "width": pa.array([W] * len(items), pa.int32()),
        "mask_rle": pa.array(counts, pa.string()), "visible": pa.array([a > 0 for a in areas], pa.bool_()),
    })


def still(mask: np.ndarray, frames) -> dict[int, np.ndarray]:
    return {f: mask for f in frames}


def shuffled(table: pa.Table, seed: int) -> pa.Table:
    order = list(range(table.num_rows))
    random.Random(seed).shuffle(order)
    return table.take(pa.array(order))


def dense_iou(a: dict, b: dict, frames: range) -> float:
    """The definition, on dense masks: mean IoU over frames where at least one is visible, 0 if none."""
    values = []
    for f in frames:
        ma, mb = a.get(f, EMPTY), b.get(f, EMPTY)
        union = (ma | mb).sum()
        if union:
            values.append((ma & mb).sum() / union)
    return float(np.mean(values)) if values else 0.0


def seg(k, ids, given=()) -> SegmentTracks:
    return SegmentTracks(k, tuple(ids), frozenset(given))


# ---------------------------------------------------------------------------------------------- overlap IoU


def test_overlap_iou_matches_dense_masks():
    rng = np.random.default_rng(0)
    frames = range(10, 18)

    def track():  # random boxes on random frames, some invisible, some frames outside the overlap
        out = {}
        for f in rng.choice(np.arange(6, 22), size=rng.integers(1, 12), replace=False).tolist():
            y, x = rng.integers(0, H - 4), rng.integers(0, W - 4)
            out[f] = EMPTY if rng.random() < 0.2 else box(y, x, y + rng.integers(2, 8), x + rng.integers(2, 10))
        return out

    a = {o: track() for o in (3, 7, 8, 12)}
    b = {o: track() for o in (1, 3, 5)}
    ids_a, ids_b, iou = overlap_iou(rows(a), rows(b), frames)
    assert ids_a == sorted(o for o, t in a.items() if set(t) & set(frames))
    assert ids_b == sorted(o for o, t in b.items() if set(t) & set(frames))
    want = [[dense_iou(a[i], b[j], frames) for j in ids_b] for i in ids_a]
    np.testing.assert_allclose(iou, want, rtol=0, atol=1e-12)


def test_overlap_iou_skips_frames_where_neither_is_visible():
    frames = range(0, 4)
    a = {1: {0: LEFT, 1: EMPTY, 2: EMPTY, 3: LEFT}}
    b = {2: {0: LEFT, 1: EMPTY, 2: RIGHT, 3: EMPTY}}
    # frame 0: 1.0; frame 1: neither visible, skipped; frame 2: only b visible, 0; frame 3: only a, 0
    assert overlap_iou(rows(a), rows(b), frames)[2].tolist() == [[pytest.approx(1 / 3)]]
    never = {1: {0: EMPTY, 1: EMPTY}}
    assert overlap_iou(rows(never), rows(never), frames)[2].tolist() == [[0.0]]  # an id with only invisible rows


def test_overlap_iou_empty_and_one_sided():
    ids_a, ids_b, iou = overlap_iou(rows({}), rows({4: still(LEFT, range(3))}), range(3))
    assert (ids_a, ids_b, iou.shape) == ([], [4], (0, 1))
    ids_a, ids_b, iou = overlap_iou(rows({4: still(LEFT, range(3))}), rows({5: still(LEFT, range(5, 8))}), range(3))
    assert (ids_a, ids_b, iou.shape) == ([4], [], (1, 0))  # the later rows lie outside the overlap


def test_overlap_iou_works_on_rles_without_decoding(monkeypatch):
    def refuse(*_):
        raise AssertionError("overlap_iou decoded a mask")

    monkeypatch.setattr(S.mask_utils, "decode", refuse)
    a = {1: still(LEFT, range(8)), 2: still(RIGHT, range(8))}
    _, _, iou = overlap_iou(rows(a), rows(a), range(8))
    np.testing.assert_allclose(iou, np.eye(2))


def test_overlap_iou_does_not_depend_on_row_order():
    rng = np.random.default_rng(1)
    a = {o: {f: box(*rng.integers(0, 6, 2), *rng.integers(7, 16, 2)) for f in range(20)} for o in range(5)}
    b = {o: {f: box(*rng.integers(0, 6, 2), *rng.integers(7, 16, 2)) for f in range(20)} for o in range(4)}
    first = overlap_iou(rows(a), rows(b), range(4, 17))
    again = overlap_iou(shuffled(rows(a), 1), shuffled(rows(b), 2), range(4, 17))
    assert first[:2] == again[:2] and np.array_equal(first[2], again[2])  # bitwise: same summation order


def test_overlap_iou_rejects_bad_rows():
    good = rows({1: still(LEFT, range(3))})
    with pytest.raises(StitchError, match="lacks columns \\['visible'\\]"):
        overlap_iou(good.drop_columns(["visible"]), good, range(3))
    with pytest.raises(StitchError, match="two rows for \\(object_id, frame_index\\) \\(1, 2\\)"):
        overlap_iou(pa.concat_tables([good, good.slice(2, 1)]), good, range(3))
    other = good.set_column(2, "height", pa.array([H + 1] * 3, pa.int32()))
    with pytest.raises(StitchError, match="several \\(height, width\\)"):
        overlap_iou(good, other, range(3))
    with pytest.raises(StitchError, match="frames must be a range"):
        overlap_iou(good, good, [0, 1, 2])


# ---------------------------------------------------------------------------------------------- stitching


def three_segments(local: list[dict[str, int]], spans: dict[str, range], masks: dict[str, np.ndarray]):
    """Video frames [0, 30) cut into [0, 12), [8, 22), [18, 30): overlaps [8, 12) and [18, 22).

    local[k]: object name -> its local id in segment k; spans: frames where the object exists (visible)."""
    cuts = [range(0, 12), range(8, 22), range(18, 30)]
    tables = [rows({local[k][n]: still(masks[n], [f for f in cut if f in spans[n]]) for n in local[k]})
              for k, cut in enumerate(cuts)]
    overlaps = [overlap_iou(tables[k], tables[k + 1], range(cuts[k + 1].start, cuts[k].stop)) for k in (0, 1)]
    return tables, overlaps


ALL = range(0, 30)


def test_swapped_ids_are_mapped_back():
    masks, spans = {"l": LEFT, "r": RIGHT}, {"l": ALL, "r": ALL}
    local = [{"l": 10, "r": 11}, {"l": 11, "r": 10}, {"l": 10, "r": 11}]
    _, overlaps = three_segments(local, spans, masks)
    result = stitch([seg(k, [10, 11]) for k in range(3)], overlaps, floor=0.5, first_new_id=10)
    assert result.mapping == ({10: 10, 11: 11}, {11: 10, 10: 11}, {10: 10, 11: 11})
    assert result.links == ((0, 10, 11, 1.0), (0, 11, 10, 1.0), (1, 10, 11, 1.0), (1, 11, 10, 1.0))


def test_object_crossing_three_segments_keeps_one_id_and_new_objects_get_the_next_ids():
    # "a" lives throughout; "b" appears in segment 1 only (after the first overlap); "c" appears in segment 2.
    masks = {"a": MIDDLE, "b": LEFT, "c": RIGHT}
    spans = {"a": ALL, "b": range(13, 17), "c": range(23, 30)}
    local = [{"a": 0}, {"a": 1, "b": 0}, {"c": 0, "a": 1}]
    _, overlaps = three_segments(local, spans, masks)
    result = stitch([seg(0, [0]), seg(1, [0, 1]), seg(2, [0, 1])], overlaps, floor=0.5, first_new_id=0)
    assert result.mapping == ({0: 0}, {1: 0, 0: 1}, {1: 0, 0: 2})  # b: next id after segment 0, c after b
    assert [link[:3] for link in result.links] == [(0, 0, 1), (1, 1, 1)]


def test_track_ending_inside_the_overlap():
    # Overlap [8, 12). Object 0/5: the earlier track stops after frame 9 while the later one stays visible, so
    # frames 10, 11 count 0: IoU = 2/4 = 0.5, linked iff floor <= 0.5. Object 1/6: both tracks stop after
    # frame 9 (the object left the view), frames 10, 11 are skipped: IoU 1.
    earlier = rows({0: still(LEFT, range(0, 10)), 1: still(RIGHT, range(0, 10))})
    later = rows({5: still(LEFT, range(8, 22)), 6: still(RIGHT, range(8, 10))})
    overlap = overlap_iou(earlier, later, range(8, 12))
    assert overlap[:2] == ([0, 1], [5, 6])
    np.testing.assert_allclose(overlap[2], [[0.5, 0], [0, 1]])
    segments = [seg(0, [0, 1]), seg(1, [5, 6])]
    assert stitch(segments, [overlap], floor=0.5, first_new_id=0).mapping == ({0: 0, 1: 1}, {5: 0, 6: 1})
    assert stitch(segments, [overlap], floor=0.6, first_new_id=0).mapping == ({0: 0, 1: 1}, {5: 2, 6: 1})


def test_ambiguous_pair_below_the_floor_gets_a_new_id():
    # The later object covers half of the earlier one: IoU 0.5 < floor 0.7.
    a = {0: still(box(2, 2, 10, 10), range(4)), 1: still(RIGHT, range(4))}
    b = {0: still(RIGHT, range(4)), 1: still(box(2, 2, 10, 6), range(4))}
    overlap = overlap_iou(rows(a), rows(b), range(4))
    assert overlap[2][0, 1] == pytest.approx(0.5)
    result = stitch([seg(0, [0, 1]), seg(1, [0, 1])], [overlap], floor=0.7, first_new_id=0)
    assert result.mapping == ({0: 0, 1: 1}, {0: 1, 1: 2})
    assert result.links == ((0, 1, 0, 1.0),)


def test_hungarian_runs_over_candidate_pairs_only():
    # Raw Hungarian would pick (0,1)+(1,0) = 0.8, both below the floor, and link nothing. Sub-floor pairs weigh
    # 0, so the one linkable pair (0,0) is linked.
    iou = np.array([[0.5, 0.4], [0.4, 0.0]])
    result = stitch([seg(0, [0, 1]), seg(1, [0, 1])], [([0, 1], [0, 1], iou)], floor=0.45, first_new_id=0)
    assert result.links == ((0, 0, 0, 0.5),)
    assert result.mapping == ({0: 0, 1: 1}, {0: 0, 1: 2})


def test_hungarian_maximises_summed_iou():
    iou = np.array([[0.9, 0.8], [0.85, 0.1]])  # greedy would take 0.9 and leave 0.1; Hungarian: 0.8 + 0.85
    result = stitch([seg(0, [0, 1]), seg(1, [0, 1])], [([0, 1], [0, 1], iou)], floor=0.5, first_new_id=0)
    assert result.mapping == ({0: 0, 1: 1}, {1: 0, 0: 1})


def test_segment_zero_is_the_identity():
    rng = np.random.default_rng(3)
    ids0, ids1 = [3, 100, 101, 102, 103], [3, 100, 101, 102, 103, 104]
    iou = rng.random((5, 6))
    result = stitch([seg(0, ids0, {3}), seg(1, ids1, {3})], [(ids0, ids1, iou)], floor=0.3, first_new_id=100)
    assert result.mapping[0] == {i: i for i in ids0}
    unmatched = [i for i in ids1 if result.mapping[1][i] not in ids0]
    assert [result.mapping[1][i] for i in unmatched] == list(range(104, 104 + len(unmatched)))  # then 104, ...


def test_identity_caveat_a_discovery_adopting_a_later_given_id():
    # Segment 0's discovery 10 is the user's object 3 prompted in segment 1: it takes id 3, and 11 becomes 10.
    iou = np.array([[0.9], [0.0]])
    result = stitch([seg(0, [10, 11]), seg(1, [3], {3})], [([10, 11], [3], iou)], floor=0.5, first_new_id=10)
    assert result.mapping == ({10: 3, 11: 10}, {3: 3})


def test_given_ids_keep_their_id_and_are_linked_whatever_the_iou():
    iou = np.array([[0.0, 0.9], [0.9, 0.0]])  # 5 is given on both sides but its masks disagree
    result = stitch([seg(0, [5, 10], {5}), seg(1, [5, 10], {5})], [([5, 10], [5, 10], iou)], 0.5, 10)
    assert result.mapping == ({5: 5, 10: 10}, {5: 5, 10: 11})
    assert result.links == ((0, 5, 5, 0.0),)


def test_two_different_given_ids_are_never_linked():
    iou = np.array([[1.0]])
    result = stitch([seg(0, [5], {5}), seg(1, [6], {6})], [([5], [6], iou)], floor=0.5, first_new_id=10)
    assert result.mapping == ({5: 5}, {6: 6}) and result.links == ()


def test_a_chain_carrying_a_given_id_never_takes_another():
    # 5 (given) -> 10 (discovered, so it becomes 5) -> 6 (given elsewhere): the last link is refused.
    overlaps = [([5], [10], np.array([[0.9]])), ([10], [6], np.array([[0.9]]))]
    segments = [seg(0, [5], {5}), seg(1, [10]), seg(2, [6], {6})]
    result = stitch(segments, overlaps, floor=0.5, first_new_id=10)
    assert result.mapping == ({5: 5}, {10: 5}, {6: 6})
    assert [link[:3] for link in result.links] == [(0, 5, 10)]


def test_no_segment_gets_two_tracks_with_one_given_id():
    # Segment 1 holds the user's 5 itself (prompted after the overlap); the discovered 10 that matches
    # segment 0's 5 must not become a second 5 there.
    overlaps = [([5], [10], np.array([[0.9]]))]
    result = stitch([seg(0, [5], {5}), seg(1, [5, 10], {5})], overlaps, floor=0.5, first_new_id=10)
    assert result.mapping == ({5: 5}, {5: 5, 10: 10}) and result.links == ()
    # Same across two boundaries: 5 -> 10 in segment 1, then 11 (segment 1) -> 5 (given in segment 2) would
    # give segment 1 two tracks called 5.
    overlaps = [([5], [10, 11], np.array([[0.9, 0.0]])), ([10, 11], [5], np.array([[0.0], [0.9]]))]
    segments = [seg(0, [5], {5}), seg(1, [10, 11]), seg(2, [5], {5})]
    result = stitch(segments, overlaps, floor=0.5, first_new_id=10)
    assert result.mapping == ({5: 5}, {10: 5, 11: 10}, {5: 5})


def test_result_does_not_depend_on_row_or_id_order():
    masks = {"a": MIDDLE, "b": LEFT, "c": RIGHT}
    spans = {"a": ALL, "b": range(0, 20), "c": range(9, 30)}
    local = [{"a": 0, "b": 1}, {"c": 0, "b": 1, "a": 2}, {"a": 0, "c": 1}]
    tables, overlaps = three_segments(local, spans, masks)
    segments = [seg(0, [0, 1]), seg(1, [0, 1, 2]), seg(2, [0, 1])]
    want = stitch(segments, overlaps, floor=0.5, first_new_id=0)
    assert want.mapping == ({0: 0, 1: 1}, {2: 0, 1: 1, 0: 2}, {0: 0, 1: 2})
    cuts = [range(8, 12), range(18, 22)]
    for s in range(5):
        again = [overlap_iou(shuffled(tables[k], s), shuffled(tables[k + 1], s + 7), cuts[k]) for k in (0, 1)]
        assert stitch(segments, again, floor=0.5, first_new_id=0) == want
        permuted = []
        for ids_a, ids_b, iou in overlaps:  # the same overlap with its ids listed in another order
            ra = np.random.default_rng(s).permutation(len(ids_a))
            rb = np.random.default_rng(s + 1).permutation(len(ids_b))
            permuted.append(([ids_a[i] for i in ra], [ids_b[i] for i in rb], iou[np.ix_(ra, rb)]))
        assert stitch(segments, permuted, floor=0.5, first_new_id=0) == want


def test_random_stitches_keep_global_ids_unique_per_segment():
    rng = np.random.default_rng(7)
    for _ in range(50):
        segments = []
        for k in range(4):
            ids = sorted(set(rng.choice(12, size=rng.integers(1, 8), replace=False).tolist()))
            segments.append(seg(k, ids, {i for i in ids if i < 3 and rng.random() < 0.6}))
        overlaps = [(list(a.local_ids), list(b.local_ids),
                     rng.random((len(a.local_ids), len(b.local_ids))) ** 3) for a, b in zip(segments, segments[1:])]
        result = stitch(segments, overlaps, floor=0.2, first_new_id=3)
        assert result == stitch(segments, overlaps, floor=0.2, first_new_id=3)
        for segment, mapping in zip(segments, result.mapping):
            assert sorted(mapping) == list(segment.local_ids)
            assert len(set(mapping.values())) == len(mapping)  # no two tracks of a segment share an id
            assert all(mapping[g] == g for g in segment.given_ids)
        for boundary, a, b, _ in result.links:
            assert result.mapping[boundary][a] == result.mapping[boundary + 1][b]


def test_no_segments_and_one_segment():
    assert stitch([], [], floor=0.5, first_new_id=0) == S.StitchResult((), ())
    assert stitch([seg(0, [7, 8], {7})], [], 0.5, 8).mapping == ({7: 7, 8: 8},)


@pytest.mark.parametrize("call, match", [
    (lambda: stitch([seg(0, [0]), seg(1, [0])], [([0], [0], np.zeros((1, 2)))], 0.5, 0), "shape \\(1, 2\\)"),
    (lambda: stitch([seg(0, [0]), seg(1, [0])], [([0], [9], np.zeros((1, 1)))], 0.5, 0),
     "ids \\[9\\] are not local ids of segment 1"),
    (lambda: stitch([seg(0, [0]), seg(1, [0])], [([0, 0], [0], np.zeros((2, 1)))], 0.5, 0), "ids repeat"),
    (lambda: stitch([seg(0, [0]), seg(1, [0])], [([0], [0], np.full((1, 1), np.nan))], 0.5, 0), "\\[0, 1\\]"),
    (lambda: stitch([seg(0, [0]), seg(1, [0])], [], 0.5, 0), "2 segments need 1 overlaps, got 0"),
    (lambda: stitch([seg(1, [0])], [], 0.5, 0), "segments\\[0\\] must be the SegmentTracks of segment 0"),
    (lambda: stitch([seg(0, [0])], [], 0.0, 0), "floor must be in \\(0, 1\\], got 0.0"),
    (lambda: stitch([seg(0, [4], {4})], [], 0.5, 4), "above every given id \\[4\\], got 4"),
    (lambda: seg(0, [2, 1]), "strictly ascending, got \\(2, 1\\)"),
    (lambda: seg(0, [1], {2}), "given ids \\[2\\] are not among its local_ids"),
])
def test_bad_inputs_are_named(call, match):
    with pytest.raises(StitchError, match=match) as info:
        call()
    assert isinstance(info.value, ValueError) and isinstance(info.value, SamstreamError)
    assert info.value.value is not None
    assert str(pickle.loads(pickle.dumps(info.value))) == str(info.value)  # crosses Ray's process boundary
