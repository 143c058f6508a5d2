"""Automatic mask generation (model/auto_masks.py): scores, boxes, NMS and cleanup on hand-made tensors; the
whole generator on a hand-made decoder whose answers are known; the shipped synthetic-tiny model end to end.

`python -m tests.test_auto_masks` prints how well synthetic-tiny's automatic masks recall the true objects of
synthetic frames, at SAM's default thresholds and at others (a report, not a test)."""

import dataclasses
import itertools

import numpy as np
import pytest
import torch
from torch import nn
from torch.testing import assert_close

from model import embedded_checkpoint, get_config, load_model
from model.auto_masks import (AutoMaskConfig, box_iou, box_nms, decode_candidates, default_points_per_side,
                              generate_masks, mask_boxes, point_grid, remove_small_regions, stability_score)

S, G = 128, 32  # model input size and its decoder mask grid (S / 4) in the hand-made scene


# ---- scores, boxes, NMS --------------------------------------------------------------------------------
def test_stability_score_on_hand_made_logits():
    logits = torch.full((3, 4, 4), -5.0)
    logits[0, :2, :2] = 5.0  # crisp: every foreground pixel is far above both thresholds -> 1
    logits[1, :2, :2] = 5.0
    logits[1, 2:, 2:] = 0.5  # 4 pixels above -1 but not above +1 -> 4 / 8
    logits[2] = 0.2  # nothing above +1, everything above -1 -> 0
    assert_close(stability_score(logits, 1.0), torch.tensor([1.0, 0.5, 0.0]))
    assert_close(stability_score(torch.full((2, 4, 4), -5.0), 1.0), torch.zeros(2))  # empty: rejected


def test_stability_score_matches_sam():
    amg = pytest.importorskip("sam2.utils.amg")
    logits = torch.randn(2, 5, 16, 16, generator=torch.Generator().manual_seed(0)) * 3
    for offset in (0.25, 1.0):
        assert_close(stability_score(logits, offset), amg.calculate_stability_score(logits, 0.0, offset).float())


def test_mask_boxes_are_inclusive_extremes():
    masks = torch.zeros(3, 8, 10, dtype=torch.bool)
    masks[0, 2:5, 3:7] = True
    masks[1, 7, 9] = True
    boxes = mask_boxes(masks)
    assert_close(boxes, torch.tensor([[3.0, 2, 6, 4], [9, 7, 9, 7], [0, 0, 0, 0]]))
    amg = pytest.importorskip("sam2.utils.amg")
    random = torch.rand(4, 2, 9, 7, generator=torch.Generator().manual_seed(1)) > 0.9
    assert_close(mask_boxes(random), amg.batched_mask_to_box(random).float())


def test_box_nms_removes_a_duplicate_and_keeps_disjoint_boxes():
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 9], [20, 20, 30, 30], [40, 0, 50, 10]])
    scores = torch.tensor([0.7, 0.9, 0.8, 0.5])
    keep = box_nms(boxes, scores, 0.7)
    assert keep.dtype == torch.long
    assert keep.tolist() == [1, 2, 3]  # box 0 duplicates box 1 (IoU 0.9), which scores higher; score order
    assert box_nms(boxes, scores, 0.95).tolist() == [1, 2, 0, 3]  # IoU 0.9 is not above 0.95
    assert box_nms(boxes[:0], scores[:0], 0.7).shape == (0,)


def test_box_nms_matches_torchvision_rules():
    """Greedy by score, suppression when IoU > thresh, torchvision's box areas (compared with a brute force)."""
    g = torch.Generator().manual_seed(2)
    xy = torch.randint(0, 20, (40, 2), generator=g).float()
    boxes = torch.cat([xy, xy + torch.randint(1, 12, (40, 2), generator=g)], dim=1)
    scores = torch.rand(40, generator=g)
    iou = box_iou(boxes, boxes)
    expected = []
    for i in scores.argsort(descending=True).tolist():
        if all(iou[i, j] <= 0.5 for j in expected):
            expected.append(i)
    assert box_nms(boxes, scores, 0.5).tolist() == expected


def test_point_grid_is_cell_centres_row_by_row():
    grid = point_grid(2, 128, "cpu")
    assert_close(grid, torch.tensor([[32.0, 32], [96, 32], [32, 96], [96, 96]]))
    amg = pytest.importorskip("sam2.utils.amg")
    assert_close(point_grid(16, S), torch.from_numpy(amg.build_point_grid(16) * S).float())
    with pytest.raises(ValueError, match="0"):
        point_grid(0, S)


def test_default_points_per_side():
    assert default_points_per_side(get_config("sam2.1-large")) == 32
    assert default_points_per_side(get_config("sam2.1-tiny", image_size=256)) == 32
    assert default_points_per_side(get_config("synthetic-tiny")) == 16
    sam2, ours = (AutoMaskConfig().resolved(get_config(p)) for p in ("sam2.1-tiny", "synthetic-tiny"))
    assert (sam2.pred_iou_thresh, sam2.stability_score_thresh, sam2.stability_score_offset) == (0.8, 0.95, 1.0)
    assert (ours.pred_iou_thresh, ours.stability_score_thresh, ours.stability_score_offset) == (0.6, 0.8, 0.4)
    given = AutoMaskConfig(pred_iou_thresh=0.3).resolved(get_config("synthetic-tiny"))
    assert given.pred_iou_thresh == 0.3 and given.points_per_side == 16


@pytest.mark.parametrize("field,value", [("points_per_side", 0), ("points_per_batch", 0), ("pred_iou_thresh", 1.5),
                                         ("stability_score_thresh", -0.1), ("box_nms_thresh", 2.0),
                                         ("stability_score_offset", -1.0), ("min_region_area", -3),
                                         ("multimask", "yes")])
def test_invalid_config_names_the_value(field, value):
    with pytest.raises(ValueError, match=field):
        AutoMaskConfig(**{field: value})


# ---- small regions -------------------------------------------------------------------------------------
def test_remove_small_regions_fills_holes_and_removes_islands():
    logits = torch.full((3, 1, 12, 12), -4.0)
    logits[0, 0, 2:9, 2:9] = 4.0  # a square with a 1-pixel hole and a 2-pixel island
    logits[0, 0, 5, 5] = -4.0
    logits[0, 0, 11, 10:12] = 4.0
    logits[1, 0, 2:9, 2:9] = 4.0  # clean: unchanged
    logits[2, 0, 0, 0] = 4.0  # only small islands: the largest (3 px) stays
    logits[2, 0, 5, 5:8] = 4.0
    out, changed = remove_small_regions(logits, 4)
    expected = torch.zeros(3, 1, 12, 12, dtype=torch.bool)
    expected[0:2, 0, 2:9, 2:9] = True
    expected[2, 0, 5, 5:8] = True
    assert torch.equal(out > 0, expected)
    assert changed.tolist() == [True, False, True]
    assert_close(out[1], logits[1])


def test_remove_small_regions_matches_sam():
    pytest.importorskip("cv2")
    amg = pytest.importorskip("sam2.utils.amg")
    g = torch.Generator().manual_seed(3)
    logits = torch.nn.functional.avg_pool2d(torch.randn(24, 1, 20, 20, generator=g), 3, 1, 1) * 4 + 0.3
    for area in (3, 6, 12):
        out, changed = remove_small_regions(logits, area)
        for i in range(logits.shape[0]):
            mask, c1 = amg.remove_small_regions(logits[i, 0].numpy() > 0, area, "holes")
            mask, c2 = amg.remove_small_regions(mask, area, "islands")
            assert np.array_equal((out[i, 0] > 0).numpy(), mask), (area, i)
            assert bool(changed[i]) == (c1 or c2), (area, i)


# ---- the generator on a hand-made decoder --------------------------------------------------------------
def _box_mask(r0, r1, c0, c1) -> torch.Tensor:
    m = torch.zeros(G, G, dtype=torch.bool)
    m[r0:r1 + 1, c0:c1 + 1] = True
    return m


def _scene() -> dict[int, torch.Tensor]:
    """Three objects on the 32 x 32 mask grid (owner 1..3); the 16 x 16 click grid falls on odd cells."""
    yy, xx = torch.meshgrid(torch.arange(G), torch.arange(G), indexing="ij")
    disc = (yy - 24) ** 2 + (xx - 8) ** 2 <= 25
    return {1: _box_mask(2, 9, 2, 9), 2: _box_mask(12, 19, 20, 29), 3: disc}


class FakePromptEncoder(nn.Module):
    """Passes the clicks through as the sparse embedding: token 0 holds x, y."""

    def forward(self, points, masks=None):
        coords, labels = points
        assert coords.shape[1:] == (1, 2) and masks is None and labels.dtype == torch.int32
        assert bool((labels == 1).all())
        sparse = torch.cat([coords, torch.zeros_like(coords)], dim=1)  # (N, 2, 2)
        return sparse, torch.zeros(coords.shape[0], 1, 1, 1)

    def get_dense_pe(self):
        return torch.zeros(1, 1, 1, 1)


class FakeMaskDecoder(nn.Module):
    """Answers each click from tables: owner of the clicked cell -> candidates (mask logits, IoU) and an
    object score logit. Records every call's batch size and multimask flag."""

    def __init__(self, single, multi, obj_logit, owner_of):
        super().__init__()
        self.single, self.multi, self.obj_logit, self.owner_of = single, multi, obj_logit, owner_of
        self.calls = []

    def forward(self, image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings,
                multimask_output, high_res_features):
        N = sparse_prompt_embeddings.shape[0]
        assert image_embeddings.shape == (N, 1, 2, 2) and bool((image_embeddings == 1.0).all())  # no-memory added
        assert [x.shape[0] for x in high_res_features] == [N, N]
        self.calls.append((N, multimask_output))
        owners = [self.owner_of(x, y) for x, y in sparse_prompt_embeddings[:, 0].tolist()]
        table = self.multi if multimask_output else self.single
        masks = torch.stack([torch.stack([m for m, _ in table[o]]) for o in owners])  # (N, M, G, G)
        ious = torch.tensor([[i for _, i in table[o]] for o in owners])  # (N, M)
        obj = torch.tensor([[self.obj_logit[o]] for o in owners])  # (N, 1)
        return masks, ious, torch.zeros(N, masks.shape[1], 4), obj


class FakeModel(nn.Module):
    def __init__(self, decoder):
        super().__init__()
        # synthetic-tiny's shapes with SAM 2's thresholds: the hand-made answers are placed around those.
        self.cfg = dataclasses.replace(get_config("synthetic-tiny"), auto_mask_thresholds=(0.8, 0.95, 1.0))
        self.sam_prompt_encoder = FakePromptEncoder()
        self.sam_mask_decoder = decoder

    def without_memory(self, feat):
        return feat + 1.0


def _logits(mask: torch.Tensor, inside: float = 8.0) -> torch.Tensor:
    return torch.where(mask, inside, -8.0)


OBJECT_IOU = {1: 0.97, 2: 0.93, 3: 0.90}
LEFT_BG, RIGHT_BG = 0, 4  # background clicks: left half absent (but confident), right half low IoU


def _fake_model(extra_first: dict[int, torch.Tensor] | None = None) -> FakeModel:
    """Clicks on object k answer its exact mask (IoU OBJECT_IOU[k]); with multimask also a near-duplicate
    (one row less, IoU 0.85) and an unstable copy (logits 0.5, IoU 0.99). `extra_first[k]` replaces the first
    candidate's mask of object k. Left background: a big stable square with IoU 0.99 and object score -3;
    right background: the same with IoU 0.3."""
    scene, extra_first = _scene(), extra_first or {}
    big = _box_mask(0, 31, 0, 31)
    single, multi = {}, {}
    for k, m in scene.items():
        first = extra_first.get(k, m)
        shaved = m.clone()
        shaved[m.nonzero()[:, 0].max()] = False
        single[k] = [(_logits(first), OBJECT_IOU[k])]
        multi[k] = [(_logits(first), OBJECT_IOU[k]), (_logits(shaved), 0.85), (_logits(m, 0.5), 0.99)]
    for o, iou in ((LEFT_BG, 0.99), (RIGHT_BG, 0.3)):
        single[o] = [(_logits(big), iou)]
        multi[o] = [(_logits(big), iou)] * 3
    obj_logit = {1: 5.0, 2: 5.0, 3: 5.0, LEFT_BG: -3.0, RIGHT_BG: 4.0}

    def owner_of(x: float, y: float) -> int:
        r, c = int(y) // 4, int(x) // 4
        hits = [k for k, m in scene.items() if m[r, c]]
        return hits[0] if hits else (LEFT_BG if x < S / 2 else RIGHT_BG)

    return FakeModel(FakeMaskDecoder(single, multi, obj_logit, owner_of))


def _run(model, config=AutoMaskConfig(), point_ok=None):
    feat = torch.zeros(1, 1, 2, 2)
    return generate_masks(model, feat, [torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 4, 4)], config, point_ok)


def _check_found(p, owners: list[int]):
    scene = _scene()
    assert p.low_res.shape == (len(owners), 1, G, G) and p.low_res.dtype == torch.float32
    for i, k in enumerate(owners):
        assert torch.equal(p.low_res[i, 0] > 0, scene[k]), f"proposal {i} is not object {k}"
        x, y = (p.points[i] / 4).long().tolist()
        assert scene[k][y, x], "the click that made it is inside it"
    assert_close(p.ious, torch.tensor([OBJECT_IOU[k] for k in owners]))
    assert_close(p.boxes, mask_boxes(p.low_res[:, 0] > 0))
    assert_close(p.stability, torch.ones(len(owners)))


@pytest.mark.parametrize("multimask", [False, True])
def test_each_object_found_once_background_rejected(multimask):
    model = _fake_model()
    p = _run(model, AutoMaskConfig(multimask=multimask))
    _check_found(p, [1, 2, 3])  # many clicks per object, one mask each, by predicted IoU; background: none
    assert model.sam_mask_decoder.calls == [(64, multimask)] * 4  # 16 x 16 clicks, 64 per call


def test_multimask_follows_the_model_by_default():
    model = _fake_model()
    _run(model)
    assert {m for _, m in model.sam_mask_decoder.calls} == {False}  # synthetic-tiny: multimask_max_pt_num 0


def test_batch_size_does_not_change_the_result():
    p = _run(_fake_model(), AutoMaskConfig(points_per_batch=100))
    _check_found(p, [1, 2, 3])
    assert [n for n, _ in _run_calls(AutoMaskConfig(points_per_batch=100))] == [100, 100, 56]


def _run_calls(config):
    model = _fake_model()
    _run(model, config)
    return model.sam_mask_decoder.calls


def test_absent_objects_are_dropped_even_when_confident():
    model = _fake_model()
    model.sam_mask_decoder.obj_logit[2] = -0.5
    _check_found(_run(model), [1, 3])


def test_thresholds():
    _check_found(_run(_fake_model(), AutoMaskConfig(pred_iou_thresh=0.92)), [1, 2])
    _check_found(_run(_fake_model(), AutoMaskConfig(pred_iou_thresh=0.97)), [])  # strictly above, as SAM
    p = _run(_fake_model(), AutoMaskConfig(pred_iou_thresh=0.0, stability_score_thresh=0.0, multimask=False))
    assert p.low_res.shape[0] == 4  # the 3 objects and the right half's low-IoU square
    assert p.ious[-1].item() == pytest.approx(0.3)


def test_points_not_ok_produce_nothing():
    grid = point_grid(16, S)
    scene = _scene()
    cells = (grid / 4).long()  # (256, 2) x, y cells
    on_2 = scene[2][cells[:, 1], cells[:, 0]]
    _check_found(_run(_fake_model(), point_ok=~on_2), [1, 3])
    none = _run(_fake_model(), point_ok=torch.zeros(256, dtype=torch.bool))
    assert none.low_res.shape == (0, 1, G, G) and none.ious.shape == (0,) and none.stability.shape == (0,)
    assert none.boxes.shape == (0, 4) and none.points.shape == (0, 2)
    with pytest.raises(ValueError, match="point_ok"):
        _run(_fake_model(), point_ok=torch.ones(255, dtype=torch.bool))


def test_min_region_area_cleans_masks_and_reruns_nms():
    scene = _scene()
    speckled = scene[1].clone()
    speckled[5, 5] = False  # a hole
    speckled[30, 30] = True  # an island far away: its box no longer overlaps object 1's
    p = _run(_fake_model({1: speckled}), AutoMaskConfig(multimask=False))
    assert torch.equal(p.low_res[0, 0] > 0, speckled)  # off by default
    _check_found(_run(_fake_model({1: speckled}), AutoMaskConfig(multimask=False, min_region_area=4)), [1, 2, 3])
    # With 3 candidates, the speckled one (IoU 0.97) and the shaved one (0.85) survive the first NMS (their
    # boxes differ); cleaned, the first duplicates the second, and SAM's second NMS prefers the unchanged mask.
    p = _run(_fake_model({1: speckled}), AutoMaskConfig(multimask=True, min_region_area=4))
    assert p.low_res.shape[0] == 3
    shaved = scene[1].clone()
    shaved[9] = False
    assert torch.equal(p.low_res[2, 0] > 0, shaved) and p.ious[2].item() == pytest.approx(0.85)
    assert torch.equal(p.low_res[0, 0] > 0, scene[2])  # the rest keeps its IoU order
    assert p.ious.tolist() == sorted(p.ious.tolist(), reverse=True)


def test_feat_must_be_one_frame():
    with pytest.raises(ValueError, match="one frame"):
        generate_masks(_fake_model(), torch.zeros(2, 1, 2, 2), [], AutoMaskConfig())


# ---- the real model ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny():
    return load_model("synthetic-tiny", embedded_checkpoint("synthetic-tiny"))


def _synthetic_frame(index: int, size: int = 128):
    from model.synthetic import SyntheticConfig, render_video, split_seed

    return render_video(split_seed("test", index), SyntheticConfig(height=size, width=size, num_frames=1))


def _encode(model, frame: np.ndarray):
    with torch.inference_mode():
        feats = model.encode_frames(model.preprocess(torch.from_numpy(frame))[None])
    return feats.feat[0:1], [x[0:1] for x in feats.high_res]


def test_raw_decoder_call_matches_model_decode(tiny):
    """decode_candidates is SAM2Model.decode without the choice among candidates."""
    model = load_model("sam2.1-tiny", image_size=256)  # random weights: the multimask path of official presets
    for m, multimask in ((tiny, False), (model, True), (model, False)):
        feat, high_res = _encode(m, _synthetic_frame(0, m.cfg.image_size).frames[0])
        feat = m.without_memory(feat)
        points = point_grid(3, m.cfg.image_size)
        with torch.inference_mode():
            masks, ious, obj = decode_candidates(m, feat, high_res, points, multimask)
            ref = m.decode(feat.expand(9, -1, -1, -1), [x.expand(9, -1, -1, -1) for x in high_res], points[:, None],
                           torch.ones(9, 1, dtype=torch.int32), None, multimask)
        assert masks.shape[1] == ious.shape[1] == (3 if multimask else 1)
        best = ious.argmax(1)
        chosen = torch.where(obj[:, :, None, None] > 0, masks[torch.arange(9), best][:, None], -1024.0)
        assert_close(chosen, ref.low_res)
        assert_close(ious[torch.arange(9), best], ref.iou)
        assert_close(obj, ref.object_score_logits)


def test_synthetic_tiny_end_to_end(tiny):
    feat, high_res = _encode(tiny, _synthetic_frame(0).frames[0])
    config = AutoMaskConfig(pred_iou_thresh=0.5, stability_score_thresh=0.8, stability_score_offset=0.5)
    p = generate_masks(tiny, feat, high_res, config)
    K = p.low_res.shape[0]
    assert K >= 1
    assert p.low_res.shape == (K, 1, 32, 32) and p.low_res.dtype == torch.float32
    assert p.ious.shape == p.stability.shape == (K,) and p.boxes.shape == (K, 4) and p.points.shape == (K, 2)
    assert p.ious.tolist() == sorted(p.ious.tolist(), reverse=True)
    assert bool((p.ious > 0.5).all()) and bool((p.stability >= 0.8).all())
    assert_close(p.stability, stability_score(p.low_res[:, 0], 0.5))
    assert_close(p.boxes, mask_boxes(p.low_res[:, 0] > 0))
    grid = point_grid(16, 128)
    assert bool((p.points[:, None] == grid[None]).all(-1).any(-1).all())  # every click is a grid point
    iou = box_iou(p.boxes, p.boxes) - torch.eye(K)
    assert bool((iou <= 0.7).all())  # NMS left no duplicates
    # Batching does not change the result; the default thresholds and a fully covered frame run too.
    q = generate_masks(tiny, feat, high_res, dataclasses.replace(config, points_per_batch=256))
    assert_close(q.low_res, p.low_res, atol=1e-4, rtol=1e-4)
    assert_close(q.ious, p.ious, atol=1e-5, rtol=1e-5)
    generate_masks(tiny, feat, high_res, AutoMaskConfig(min_region_area=8))
    assert generate_masks(tiny, feat, high_res, config, torch.zeros(256, dtype=torch.bool)).low_res.shape[0] == 0


# ---- report: recall of the shipped model's automatic masks ---------------------------------------------
def recall_report(videos: int = 16, size: int = 256, min_area: int = 64) -> None:
    """Recall at mask IoU 0.5 of the tracked objects (visible area >= min_area px) on frame 0 of test videos,
    masks compared at the frame's native size, for a sweep of thresholds."""
    torch.set_num_threads(1)
    model = load_model("synthetic-tiny", embedded_checkpoint("synthetic-tiny"))
    frames = []
    for i in range(videos):
        v = _synthetic_frame(i, size)
        truth = torch.from_numpy(v.masks[0][v.masks[0].sum(axis=(1, 2)) >= min_area])  # (O, H, W)
        frames.append((_encode(model, v.frames[0]), truth))
    print(f"{sum(len(t) for _, t in frames)} objects on {videos} frames of {size} px; recall at IoU 0.5")
    configs = [AutoMaskConfig()] + [
        AutoMaskConfig(pred_iou_thresh=a, stability_score_thresh=b, stability_score_offset=c)
        for a, b, c in itertools.product((0.7, 0.6, 0.5, 0.0), (0.9, 0.8, 0.0), (1.0, 0.5, 0.25))
        if not (b == 0.0 and c != 1.0)]
    for config in configs:
        hits = props = matched = 0
        for (feat, high_res), truth in frames:
            p = generate_masks(model, feat, high_res, config)
            masks = torch.nn.functional.interpolate(p.low_res, size=truth.shape[-2:], mode="bilinear")[:, 0] > 0
            inter = (masks[:, None] & truth[None]).flatten(2).sum(-1)  # (K, O)
            union = (masks[:, None] | truth[None]).flatten(2).sum(-1)
            J = inter / union.clamp(min=1)
            hits += int((J.amax(0) >= 0.5).sum()) if len(masks) else 0
            matched += int((J.amax(1) >= 0.5).sum()) if truth.shape[0] else 0
            props += len(masks)
        total = sum(len(t) for _, t in frames)
        print(f"iou>{config.pred_iou_thresh:<4} stability>={config.stability_score_thresh:<4} "
              f"offset {config.stability_score_offset:<4}: recall {hits / total:.2f}, "
              f"{props / videos:5.1f} masks/frame, {matched / max(props, 1):.2f} of them match an object")


if __name__ == "__main__":
    recall_report()
