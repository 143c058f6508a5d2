"""DAVIS J&F (model/metrics.py) on hand-made masks with values computed by hand, cross-checked against a
brute-force boundary F; and jobs.evaluate end to end on a tiny prediction / ground-truth pair."""

import math
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from jobs import evaluate as E
from model.metrics import (MetricsError, boundary_f, boundary_precision_recall, boundary_radius, davis_summary,
                           dilate_disk, frame_scores, jaccard, object_score, reappearance_frames, seg2bmap)
from workers.masklets import ChunkRows
from workers.output import RunOutput, read_masklets

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")


def square(size, rows, cols):
    """A (size, size) mask with rows[0]..rows[1], cols[0]..cols[1] (inclusive) set."""
    m = np.zeros((size, size), bool)
    m[rows[0]:rows[1] + 1, cols[0]:cols[1] + 1] = True
    return m


# 20x20: radius ceil(0.008 * 28.3) = 1. A 10x10 square and the same square 1 and 2 px to the right.
SQ = square(20, (5, 14), (5, 14))
SQ_1 = square(20, (5, 14), (6, 15))
SQ_2 = square(20, (5, 14), (7, 16))
# 64x64: radius ceil(0.008 * 90.5) = 1. A 10x10 square in the top-left corner of a 40x40 one.
SMALL = square(64, (10, 19), (10, 19))
LARGE = square(64, (10, 49), (10, 49))


# ---------------------------------------------------------------------------------------------- oracle


def brute_bmap(m):
    """seg2bmap written pixel by pixel: differs from a right / lower / lower-right neighbour in the image."""
    h, w = m.shape
    b = np.zeros_like(m, bool)
    for y in range(h):
        for x in range(w):
            for dy, dx in ((0, 1), (1, 0), (1, 1)):
                if y + dy < h and x + dx < w and m[y, x] != m[y + dy, x + dx]:
                    b[y, x] = True
    return b


def brute_dilate(b, radius):
    out = np.zeros_like(b)
    h, w = b.shape
    reach = int(math.floor(radius))
    for dy in range(-reach, reach + 1):
        for dx in range(-reach, reach + 1):
            if dy * dy + dx * dx <= radius * radius:
                shifted = np.zeros_like(b)
                shifted[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
                    b[max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
                out |= shifted
    return out


def brute_f(pred, gt, radius):
    pb, gb = brute_bmap(pred), brute_bmap(gt)
    p = (pb & brute_dilate(gb, radius)).sum() / pb.sum()
    r = (gb & brute_dilate(pb, radius)).sum() / gb.sum()
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


# ---------------------------------------------------------------------------------------------- J and F


def test_identical_masks_score_one():
    assert jaccard(SQ, SQ) == 1.0 and boundary_f(SQ, SQ) == 1.0
    assert frame_scores(SMALL, SMALL) == (1.0, 1.0)


def test_disjoint_masks_score_zero():
    a, b = square(20, (0, 4), (0, 4)), square(20, (12, 16), (12, 16))
    assert jaccard(a, b) == 0.0
    assert boundary_f(a, b) == 0.0  # boundaries 7 px apart, tolerance 1 px


def test_shift_by_one_pixel_is_within_the_boundary_tolerance():
    assert boundary_radius(SQ.shape) == 1
    assert jaccard(SQ_1, SQ) == pytest.approx(90 / 110)  # 10x9 shared, 10x11 covered
    assert boundary_f(SQ_1, SQ) == 1.0  # every boundary pixel has its twin 1 px away


def test_shift_by_two_pixels_matches_part_of_the_boundary():
    # Boundaries: outlines rows 4..14 x cols 4..14 (40 px) and cols 6..16. Matched within 1 px: 10 of 11 on
    # the top and bottom rows, 0 of 9 on the near side (2 px away), 2 of 9 on the far side (next to the other
    # outline's top and bottom rows) -> 22/40 each way.
    assert jaccard(SQ_2, SQ) == pytest.approx(80 / 120)
    assert boundary_precision_recall(SQ_2, SQ) == (pytest.approx(22 / 40), pytest.approx(22 / 40))
    assert boundary_f(SQ_2, SQ) == pytest.approx(0.55)


def test_square_inside_a_much_larger_square():
    # Outlines: SMALL rows 9..19 x cols 9..19 (40 px), LARGE rows 9..49 x cols 9..49 (160 px); they share
    # the top and left sides. SMALL's matched: top 11 + left 10 + the first pixel of its right and bottom
    # sides (1 px from LARGE's top / left) = 23 -> P = 23/40. LARGE's matched: top cols 9..20 (12) + left
    # rows 10..20 (11) = 23 -> R = 23/160. F = 2PR/(P+R) = 0.23.
    assert jaccard(SMALL, LARGE) == pytest.approx(100 / 1600)
    p, r = boundary_precision_recall(SMALL, LARGE)
    assert (p, r) == (pytest.approx(23 / 40), pytest.approx(23 / 160))
    assert boundary_f(SMALL, LARGE) == pytest.approx(0.23)
    assert boundary_f(LARGE, SMALL) == pytest.approx(0.23)  # precision and recall swap, F is symmetric


def test_empty_masks_follow_davis():
    empty = np.zeros((20, 20), bool)
    assert jaccard(empty, empty) == 1.0 and boundary_f(empty, empty) == 1.0
    assert jaccard(empty, SQ) == 0.0 and boundary_f(empty, SQ) == 0.0
    assert jaccard(SQ, empty) == 0.0 and boundary_f(SQ, empty) == 0.0
    assert boundary_precision_recall(empty, SQ) == (1.0, 0.0)
    assert boundary_precision_recall(SQ, empty) == (0.0, 1.0)
    full = np.ones((20, 20), bool)  # no boundary either: seg2bmap never draws the image border
    assert boundary_f(full, full) == 1.0 and boundary_f(full, SQ) == 0.0
    assert jaccard(full, SQ) == pytest.approx(100 / 400)


@pytest.mark.parametrize("seed", range(4))
def test_boundary_f_matches_a_brute_force_oracle(seed):
    rng = np.random.default_rng(seed)
    h, w = rng.integers(20, 70, size=2)
    masks = []
    for _ in range(2):
        m = np.zeros((h, w), bool)
        for _ in range(3):
            y, x = rng.integers(0, h), rng.integers(0, w)
            m[y:y + rng.integers(1, h), x:x + rng.integers(1, w)] ^= True  # overlaps make holes
        masks.append(m)
    for th in (0.008, 0.03, 2.5):
        radius = boundary_radius((h, w), th)
        assert boundary_f(*masks, bound_th=th) == pytest.approx(brute_f(*masks, radius))


def test_seg2bmap_on_hand_drawn_masks():
    m = np.zeros((5, 5), int)
    m[1:3, 1:3] = 1
    expected = np.array([[1, 1, 1, 0, 0],
                         [1, 0, 1, 0, 0],
                         [1, 1, 1, 0, 0],
                         [0, 0, 0, 0, 0],
                         [0, 0, 0, 0, 0]], bool)  # half a pixel towards the origin
    np.testing.assert_array_equal(seg2bmap(m), expected)
    bottom = np.zeros((3, 3), bool)
    bottom[2] = True  # on the last row only right neighbours are compared: the image edge is no boundary
    np.testing.assert_array_equal(seg2bmap(bottom), [[0, 0, 0], [1, 1, 1], [0, 0, 0]])
    assert not seg2bmap(np.ones((4, 6), bool)).any()
    rng = np.random.default_rng(1)
    noise = rng.random((13, 17)) < 0.4
    np.testing.assert_array_equal(seg2bmap(noise), brute_bmap(noise))


@pytest.mark.parametrize("radius", [0, 1, 2, 3, 5, 8, 2.5, 3.7])
def test_dilate_disk_is_exact(radius):
    b = np.random.default_rng(3).random((31, 23)) < 0.03
    b[0, 0] = b[30, 22] = True  # corners: nothing may wrap around
    np.testing.assert_array_equal(dilate_disk(b, radius), brute_dilate(b, radius))
    one = np.zeros((9, 9), bool)
    one[4, 4] = True  # a single pixel dilates to skimage's disk(2): 13 pixels
    assert dilate_disk(one, 2).sum() == 13


def test_bad_inputs_raise_typed_errors():
    with pytest.raises(MetricsError, match=r"\(20, 20\) and \(64, 64\)"):
        jaccard(SQ, SMALL)
    with pytest.raises(MetricsError, match="bound_th"):
        boundary_f(SQ, SQ, bound_th=0)
    with pytest.raises(MetricsError, match="min_hidden"):
        reappearance_frames([True], min_hidden=0)
    with pytest.raises(MetricsError, match="1-D"):
        reappearance_frames(np.ones((2, 2), bool))


# ---------------------------------------------------------------------------------------------- means


def test_reappearance_frames():
    v = lambda s: np.array([c == "1" for c in s])  # noqa: E731
    assert reappearance_frames(v("11000001111111")) == [7, 8, 9, 10, 11]  # 5 hidden, back at 7
    assert reappearance_frames(v("1100001111")) == []                    # only 4 hidden
    assert reappearance_frames(v("00000001111")) == []                   # first appearance, not a return
    assert reappearance_frames(v("100000110")) == [6, 7, 8]              # clipped at the end; 8 hidden counts
    assert reappearance_frames(v("1000001000001")) == [6, 7, 8, 9, 10, 12]
    assert reappearance_frames(v("10010000011"), min_hidden=2, window=2) == [3, 4, 9, 10]
    assert reappearance_frames(v("100000101111"), window=3) == [6, 7, 8]  # hidden again inside the window
    assert reappearance_frames([]) == [] and reappearance_frames([0, 0]) == []


def test_object_and_dataset_means():
    s = object_score([1.0, 0.5], [1.0, 0.0])
    assert (s.J, s.F, s.JF, s.frames) == (0.75, 0.5, 0.625, 2)
    assert math.isnan(object_score([], []).JF)
    out = davis_summary(["a", "a", "b", "c"], [1.0, 0.0, 0.5, math.nan], [1.0, 0.0, 0.5, math.nan])
    assert out["JF"] == pytest.approx(0.5) and out["objects"] == 3  # over objects: (1 + 0 + 0.5) / 3
    assert out["JF_video_mean"] == pytest.approx(0.5)                 # over videos: (0.5 + 0.5) / 2


# ---------------------------------------------------------------------------------------------- the job

EMPTY20 = np.zeros((20, 20), bool)
# cat, object 1 (20x20): visible on 0-1, hidden 2-7 (6 frames), back on 8-11. Prediction: exact on 0-7,
# shifted 1 px on 8-9 (J 9/11, F 1), 2 px on 10 (J 2/3, F 0.55), none on 11 (empty: J 0, F 0).
CAT_GT = [SQ, SQ] + [EMPTY20] * 6 + [SQ] * 4
CAT_PRED = [SQ, SQ] + [EMPTY20] * 6 + [SQ_1, SQ_1, SQ_2]
CAT_J = [1.0] * 8 + [9 / 11, 9 / 11, 2 / 3, 0.0]
CAT_F = [1.0] * 8 + [1.0, 1.0, 0.55, 0.0]


def write_pair(tmp_path):
    """Ground truth and prediction runs in the job's layout; returns their directories."""
    gt, pred = RunOutput(str(tmp_path / "gt")), RunOutput(str(tmp_path / "pred"))
    rows = ChunkRows("cat")
    for t, m in enumerate(CAT_GT):  # object 2 is never visible, and never predicted
        rows.add(t, t / 30, [1, 2], [m, EMPTY20], [1, 1], [1, 1], is_prompt=t == 0)
    gt.write_part("cat", 0, 0, rows.to_table())
    rows = ChunkRows("dog")
    for t in range(4):
        rows.add(t, t / 30, [1], [SMALL], [1], [1])
    gt.write_part("dog", 0, 0, rows.to_table())

    rows = ChunkRows("cat")
    for t, m in enumerate(CAT_PRED):  # object 9 is not in the ground truth
        rows.add(t, t / 30, [1, 9], [m, SQ], [1, 1], [1, 1], is_prompt=t == 0)
    rows.add(11, 11 / 30, [9], [SQ], [1], [1])
    pred.write_part("cat", 0, 0, rows.to_table())
    rows = ChunkRows("dog")
    for t in range(4):
        rows.add(t, t / 30, [1], [LARGE], [1], [1])
    pred.write_part("dog", 0, 0, rows.to_table())
    rows = ChunkRows("extra")
    rows.add(0, 0.0, [1], [SMALL], [1], [1])
    pred.write_part("extra", 0, 0, rows.to_table())
    return tmp_path / "gt", tmp_path / "pred"


def expected_rows():
    j1, f1 = np.mean(CAT_J), np.mean(CAT_F)
    jr, fr = np.mean(CAT_J[8:]), np.mean(CAT_F[8:])  # reappearance: frames 8..11
    return {("cat", 1): (j1, f1, 12, 1, jr, fr, 4), ("cat", 2): (1.0, 1.0, 12, 12, math.nan, math.nan, 0),
            ("dog", 1): (1 / 16, 0.23, 4, 0, math.nan, math.nan, 0)}


def check_table(table):
    got = {(r["video_id"], r["object_id"]): r for r in table.to_pylist()}
    assert set(got) == set(expected_rows())
    for key, (j, f, n, missing, jr, fr, nr) in expected_rows().items():
        r = got[key]
        assert (r["frames"], r["frames_missing"], r["reappear_frames"]) == (n, missing, nr), key
        assert r["J"] == pytest.approx(j) and r["F"] == pytest.approx(f) and r["JF"] == pytest.approx((j + f) / 2)
        assert r["J_reappear"] == pytest.approx(jr, nan_ok=True)
        assert r["JF_reappear"] == pytest.approx((jr + fr) / 2, nan_ok=True)


def test_evaluate_end_to_end(tmp_path, capsys):
    gt, pred = write_pair(tmp_path)
    out = tmp_path / "m" / "metrics.parquet"
    assert E.main(["--pred", str(pred), "--gt", str(gt), "--out", str(out), "--no-progress"]) == 0
    check_table(pq.read_table(out))
    text = capsys.readouterr().out
    rows = expected_rows().values()
    jf = (np.mean([r[0] for r in rows]) + np.mean([r[1] for r in rows])) / 2  # DAVIS: mean over objects
    assert f"J&F {jf:.4f}" in text
    assert f"reappearance J&F {(np.mean(CAT_J[8:]) + np.mean(CAT_F[8:])) / 2:.4f}" in text
    assert "13 ground-truth frames without a prediction" in text
    assert "video 'cat' object 1: 1 of its frames" in text and "video 'cat' object 2: 12" in text
    assert "1 videos, 1 objects of evaluated videos" in text  # 'extra' and cat's object 9


def test_ground_truth_as_a_parquet_file_and_default_out(tmp_path):
    gt, pred = write_pair(tmp_path)
    pq.write_table(read_masklets(str(gt)), tmp_path / "gt.parquet")
    cmd = [sys.executable, "-m", "jobs.evaluate", "--pred", str(pred), "--gt", str(tmp_path / "gt.parquet"),
           "--no-progress"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    check_table(pq.read_table(pred / "metrics.parquet"))


def test_frame_filters(tmp_path):
    gt, pred = write_pair(tmp_path)
    src_gt, src_pred = E.MaskletSource(str(gt), {}, "gt"), E.MaskletSource(str(pred), {}, "pred", ["is_prompt"])
    skip = E.score_video("cat", src_gt.video("cat"), src_pred.video("cat"), E.Options(skip_first_last=True))
    assert skip[0]["frames"] == 10 and skip[0]["J"] == pytest.approx(np.mean(CAT_J[1:11]))
    assert skip[0]["reappear_frames"] == 3 and skip[0]["frames_missing"] == 0  # frame 11 was left out
    prompts = E.score_video("cat", src_gt.video("cat"), src_pred.video("cat"), E.Options(exclude_prompts=True))
    assert prompts[0]["frames"] == 11 and prompts[0]["J"] == pytest.approx(np.mean(CAT_J[1:]))
    assert prompts[1]["frames"] == 12  # object 2 has no predictions, so no prompt frames


def test_bad_input_exits_1(tmp_path, capsys):
    gt, pred = write_pair(tmp_path)
    assert E.main(["--pred", str(pred), "--gt", str(tmp_path / "nope"), "--no-progress"]) == 1
    assert "no such file or directory" in capsys.readouterr().err
    other = RunOutput(str(tmp_path / "other"))
    rows = ChunkRows("dog")
    rows.add(0, 0.0, [1], [np.zeros((32, 32), bool)], [1], [1])
    other.write_part("dog", 0, 0, rows.to_table())
    assert E.main(["--pred", str(tmp_path / "other"), "--gt", str(gt), "--no-progress"]) == 1
    assert "prediction is 32x32, ground truth 64x64" in capsys.readouterr().err
