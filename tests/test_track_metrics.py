"""Unsupervised metrics (jobs/track_metrics.py) on hand-made tracks with values computed by hand; and
`python -m jobs.evaluate --unsupervised` end to end on hand-written masklet outputs (no Ray)."""

import math
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
from pycocotools import mask as mask_utils

from jobs import evaluate as E
from jobs import track_metrics as T
from workers.masklets import ChunkRows
from workers.output import RunOutput, read_masklets

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")

SIZE = 16


def block(rows, cols):
    """A (SIZE, SIZE) mask with rows[0]..rows[1]-1, cols[0]..cols[1]-1 set."""
    m = np.zeros((SIZE, SIZE), bool)
    m[rows[0]:rows[1], cols[0]:cols[1]] = True
    return m


A, B, C = block((0, 4), (0, 4)), block((8, 12), (8, 12)), block((12, 16), (0, 4))  # disjoint, 16 px each
EMPTY = np.zeros((SIZE, SIZE), bool)


def rle(m):
    return mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))


def overlaps(gt_frames, pred_frames):
    """FrameOverlaps from per-frame {id: mask} dicts (an id absent from a frame = a missing row)."""
    out = []
    for t, (g, p) in enumerate(zip(gt_frames, pred_frames)):
        out.append(T.frame_overlap(t, list(g), [rle(m) for m in g.values()], list(p),
                                   [rle(m) for m in p.values()]))
    return out


def score(gt_frames, pred_frames):
    return T.score_tracks("v", overlaps(gt_frames, pred_frames))[0]


# ---------------------------------------------------------------------------------------------- overlaps


def test_frame_overlap_is_exact_and_drops_empty_masks():
    rng = np.random.default_rng(0)
    masks = rng.random((5, 37, 23)) < 0.4
    masks[3] = False  # an empty mask is no detection
    f = T.frame_overlap(7, [1, 2, 3], [rle(m) for m in masks[:3]], [5, 6, 9], [rle(m) for m in masks[2:]])
    assert f.frame == 7 and f.gt_ids.tolist() == [1, 2, 3] and f.pred_ids.tolist() == [5, 9]
    flat = masks.reshape(5, -1).astype(np.int64)
    np.testing.assert_array_equal(f.inter, flat[:3] @ flat[[2, 4]].T)
    np.testing.assert_array_equal(f.gt_area, flat[:3].sum(1))
    assert f.iou()[2, 0] == 1.0  # gt 3 and track 5 are the same mask


def test_video_iou_sums_intersections_and_unions_over_frames():
    half = block((0, 4), (2, 6))  # A shifted 2 px: intersection 8, union 24
    v = T.video_iou(overlaps([{1: A}, {1: A}], [{4: A}, {4: half}]))
    assert v.iou[0, 0] == pytest.approx((16 + 8) / (16 + 24))  # 0.6; the mean of per-frame IoUs is 2/3
    v = T.video_iou(overlaps([{1: A}, {1: A}], [{4: A}, {}]))   # missing row on frame 1: an empty mask
    assert v.iou[0, 0] == pytest.approx(16 / 32)


def test_hungarian_maximises_the_total_and_drops_zero_pairs():
    v = T.VideoIoU(np.array([1, 2, 3]), np.array([7, 8]), np.array([[0.6, 0.5], [0.55, 0.0], [0.0, 0.0]]))
    got = {(m.gt_id, m.pred_id): m.iou for m in T.hungarian(v)}
    assert got == {(1, 8): 0.5, (2, 7): 0.55}  # 1.05 beats greedy's 0.6; object 3 has nothing
    assert [(m.gt_id, m.pred_id) for m in T.hungarian(v, [8])] == [(1, 8)]


def test_top_proposals_rank_by_mean_score():
    scores = {5: 0.9, 3: 0.9, 8: math.nan, 1: 0.2, 2: 0.95}
    assert T.top_proposals(scores, 3) == [2, 3, 5]  # ties go to the lower id
    assert T.top_proposals(scores, 20) == [2, 3, 5, 1, 8]  # NaN last


# ---------------------------------------------------------------------------------------------- metrics


def test_perfect_prediction_with_other_ids():
    gt = [{1: A, 2: B}] * 4
    s = score(gt, [{70: A, 90: B}] * 4)
    assert (s.recall, s.precision, s.matched) == (1.0, 1.0, 2)
    k = s.tracking
    assert (k.HOTA, k.DetA, k.AssA, k.OWTA, k.IDF1, k.id_switches) == (1.0, 1.0, 1.0, 1.0, 1.0, 0)


def test_id_switch_mid_video():
    # Track 11 follows A on frames 0-3, track 12 on 4-5. Video IoU A-11 = 4/6 (matched), A-12 = 2/6.
    s = score([{1: A}] * 6, [{11: A}] * 4 + [{12: A}] * 2)
    assert (s.recall, s.precision) == (1.0, 0.5)
    k = s.tracking
    assert k.id_switches == 1 and k.id_switches_per_100 == pytest.approx(100 / 6)
    assert k.IDF1 == pytest.approx(4 / (4 + 0.5 * 2 + 0.5 * 2))  # IDTP 4, IDFN 2, IDFP 2
    # Every detection matched (DetA 1); AssA: 4 TPs of A-11 at 4/6, 2 of A-12 at 2/6 -> 20/36.
    assert k.DetA == 1.0 and k.AssA == pytest.approx(5 / 9) and k.HOTA == pytest.approx(math.sqrt(5 / 9))


def test_two_tracks_swap_objects():
    # Tracks 1 and 2 swap A and B at frame 2: two ID switches; every video IoU is 2 / (4 + 4 - 2) = 1/3.
    s = score([{1: A, 2: B}] * 4, [{1: A, 2: B}] * 2 + [{1: B, 2: A}] * 2)
    assert (s.recall, s.precision, s.matched) == (0.0, 0.0, 0)
    k = s.tracking
    assert k.id_switches == 2 and k.id_switches_per_100 == 50.0
    assert k.IDF1 == pytest.approx(4 / (4 + 2 + 2))  # IDTP 2 + 2 of 8 GT and 8 tracker detections
    assert k.AssA == pytest.approx(1 / 3) and k.HOTA == pytest.approx(math.sqrt(1 / 3))


def test_extra_false_track():
    s = score([{1: A}] * 4, [{5: A, 6: C}] * 4)
    assert (s.recall, s.precision) == (1.0, 0.5)
    k = s.tracking
    assert k.DetA == 0.5 and k.HOTA == pytest.approx(math.sqrt(0.5))  # 4 TP, 4 FP
    assert k.DetRe == 1.0 and k.OWTA == 1.0  # open-world: false positives are not counted
    assert k.IDF1 == pytest.approx(4 / (4 + 2))


def test_missed_ground_truth_object():
    s = score([{1: A, 2: B}] * 4, [{5: A}] * 4)
    assert (s.recall, s.precision) == (0.5, 1.0)
    k = s.tracking
    assert k.DetRe == 0.5 and k.DetA == 0.5 and k.AssA == 1.0
    assert k.HOTA == pytest.approx(math.sqrt(0.5)) and k.OWTA == pytest.approx(math.sqrt(0.5))


def test_hota_averages_over_alpha():
    # 10 of A's 16 pixels: IoU 0.625 on every frame, matched at alpha 0.05 .. 0.60 (12 of 19), not above.
    part = A & ~block((0, 4), (0, 1)) & ~block((0, 2), (1, 2))
    assert T.video_iou(overlaps([{1: A}], [{2: part}])).iou[0, 0] == 0.625
    k = score([{1: A}] * 3, [{2: part}] * 3).tracking
    assert k.HOTA == pytest.approx(12 / 19) and k.DetA == pytest.approx(12 / 19)
    assert k.IDF1 == 1.0 and k.id_switches == 0  # CLEAR and identity match at IoU >= 0.5


def test_videos_combine_as_trackeval_sequences():
    perfect, missed = score([{1: A}] * 4, [{3: A}] * 4), score([{1: A}] * 4, [{}] * 4)
    assert missed.tracking.HOTA == 0.0 and math.isnan(missed.precision)
    s = T.summarize_tracks([perfect, missed])
    assert (s.videos, s.gt_objects, s.pred_tracks, s.recall, s.precision) == (2, 2, 1, 0.5, 1.0)
    k = s.tracking
    assert k.frames == 8 and k.DetA == 0.5 and k.AssA == 1.0  # 4 TP + 4 FN; AssA weighted by TPs
    assert k.IDF1 == pytest.approx(4 / (4 + 2)) and k.HOTA == pytest.approx(math.sqrt(0.5))


# ---------------------------------------------------------------------------------------------- the job


def add(rows, t, objects, scores):
    """One frame: every object gets a row (EMPTY where it is absent, as the pseudo-label job writes)."""
    ids = sorted(objects)
    rows.add(t, t / 30, ids, [objects[i] for i in ids], [scores[i] for i in ids], [1.0] * len(ids))


def write_runs(tmp_path):
    """cat: GT A, B (6 frames) and 3 (never visible); tracks 11 (A on 0-3), 12 (A on 4-5), 13 (B), 14 (C,
    false). dog: GT only, the run recorded it as failed. bird: prediction only."""
    gt, pred = RunOutput(str(tmp_path / "gt")), RunOutput(str(tmp_path / "pred"))
    g, p = ChunkRows("cat"), ChunkRows("cat")
    for t in range(6):
        add(g, t, {1: A, 2: B, 3: EMPTY}, {1: 1, 2: 1, 3: 1})
        first = t < 4
        # Track 12's invisible rows carry a high score: only visible rows may count towards its mean.
        add(p, t, {11: A if first else EMPTY, 12: EMPTY if first else A, 13: B, 14: C},
            {11: 0.9, 12: 0.99 if first else 0.8, 13: 0.95, 14: 0.3})
    gt.write_part("cat", 0, 0, g.to_table())
    pred.write_part("cat", 0, 0, p.to_table())
    g = ChunkRows("dog")
    for t in range(3):
        add(g, t, {1: A}, {1: 1})
    gt.write_part("dog", 0, 0, g.to_table())
    p = ChunkRows("bird")
    add(p, 0, {1: A}, {1: 0.5})
    pred.write_part("bird", 0, 0, p.to_table())
    pred.write_videos([{"video_id": v, "url": f"{v}.mp4", "status": s, "error": e}
                       for v, s, e in (("cat", "ok", None), ("dog", "failed", "decode"), ("bird", "ok", None))])
    return tmp_path / "gt", tmp_path / "pred"


def check_cat(r, jf_a=2 / 3):
    assert (r["frames"], r["gt_objects"], r["gt_never_visible"], r["pred_tracks"], r["matched"]) == (6, 2, 1, 4, 2)
    assert (r["recall"], r["precision"], r["id_switches"]) == (1.0, 0.5, 1)
    assert r["JF"] == pytest.approx((jf_a + 1) / 2)  # A against track 11: exact on 4 of 6 frames; B exact
    assert r["IDF1"] == pytest.approx(10 / (10 + 4 + 1))  # IDTP 10, IDFP 8, IDFN 2
    # TP 12, FP 6 -> DetA 2/3; AssA (4 * 4/6 + 2 * 2/6 + 6 * 1) / 12 = 7/9
    assert r["HOTA"] == pytest.approx(math.sqrt(2 / 3 * 7 / 9)) and r["OWTA"] == pytest.approx(math.sqrt(7 / 9))


def test_unsupervised_end_to_end(tmp_path):
    gt, pred = write_runs(tmp_path)
    cmd = [sys.executable, "-m", "jobs.evaluate", "--unsupervised", "--pred", str(pred), "--gt", str(gt),
           "--no-progress"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    table = pq.read_table(pred / "metrics_unsupervised.parquet")
    assert table.schema.equals(T.UNSUPERVISED_SCHEMA, check_metadata=False)
    rows = {r["video_id"]: r for r in table.to_pylist()}
    assert sorted(rows) == ["cat", "dog"]
    check_cat(rows["cat"])
    dog = rows["dog"]
    assert (dog["recall"], dog["HOTA"], dog["JF"], dog["pred_tracks"]) == (0.0, 0.0, 0.0, 0)
    assert math.isnan(dog["precision"])
    text = done.stdout
    # Pooled: recall 2/3, precision 2/4; TP 12, FN 3, FP 6 -> DetA 4/7, AssA 7/9, HOTA 2/3.
    assert "recall 0.6667 (2 of 3 objects)   precision 0.5000 (2 of 4 tracks)" in text
    assert f"HOTA {2 / 3:.4f}" in text and f"OWTA {math.sqrt(0.8 * 7 / 9):.4f}" in text
    assert f"IDF1 {10 / 16.5:.4f}   ID switches 1 ({100 / 9:.2f} per 100 frames)" in text
    assert f"J&F {5 / 9:.4f}" in text  # DAVIS: mean over A (2/3), B (1), dog's object (0)
    assert "1 ground-truth objects, 0 tracks" in text and "failed: ['dog']" in text
    assert "videos not in the ground truth: 1" in text


def test_proposals_are_capped_by_mean_visible_score(tmp_path):
    gt, pred = write_runs(tmp_path)
    src_gt = E.MaskletSource(str(gt), {}, "gt")
    src_pred = E.MaskletSource(str(pred), {}, "pred", ["score", "visible"])
    run = lambda k: E.evaluate_unsupervised(src_gt, src_pred, E.Options(max_proposals=k))[0]  # noqa: E731
    top2 = {r["video_id"]: r for r in run(2).to_pylist()}["cat"]  # tracks 13 and 11 (12's visible mean: 0.8)
    check_cat(top2)
    assert top2["proposals"] == 2
    top1 = {r["video_id"]: r for r in run(1).to_pylist()}["cat"]  # track 13 only: A has no proposal -> 0
    check_cat(top1, jf_a=0.0)


def test_bad_input_exits_1(tmp_path, capsys):
    gt, pred = write_runs(tmp_path)
    other = RunOutput(str(tmp_path / "other"))
    rows = ChunkRows("cat")
    rows.add(0, 0.0, [1], [np.zeros((32, 32), bool)], [1], [1])
    other.write_part("cat", 0, 0, rows.to_table())
    assert E.main(["--unsupervised", "--pred", str(tmp_path / "other"), "--gt", str(gt), "--no-progress"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == ("error: video 'cat' frame 0: masks of different sizes (ground truth [(16, 16)], prediction "
                   "[(32, 32)])")
    table = read_masklets(str(gt)).drop_columns(["score"])
    pq.write_table(table, tmp_path / "noscore.parquet")
    assert E.main(["--unsupervised", "--pred", str(tmp_path / "noscore.parquet"), "--gt", str(gt),
                   "--no-progress"]) == 1
    assert "lacks the masklet columns ['score']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        E.main(["--unsupervised", "--skip-first-last", "--pred", str(pred), "--gt", str(gt)])
