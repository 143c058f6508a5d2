"""model/losses.py on hand-made cases: expected values come from the formulas in plain Python math."""

import dataclasses
import math

import pytest
import torch

from model.training.losses import (MaskLossWeights, combined_loss, dice_loss, iou_prediction_loss, mask_iou,
                          object_presence_loss, select_candidate, sigmoid_focal_loss, temporal_consistency_loss)
from model.sam2 import NO_OBJECT_LOGIT


def sig(x):
    return 1 / (1 + math.exp(-x))


def focal_ref(logits, targets, alpha=0.25, gamma=2.0):
    """Mean over pixels of alpha_t (1 - p_t)^gamma (-log p_t), flat lists."""
    total = 0.0
    for x, t in zip(logits, targets):
        p_t = sig(x) if t else 1 - sig(x)
        a_t = (alpha if t else 1 - alpha) if alpha >= 0 else 1.0
        total += a_t * (1 - p_t) ** gamma * -math.log(p_t)
    return total / len(logits)


def dice_ref(logits, targets):
    p = [sig(x) for x in logits]
    return 1 - (2 * sum(a * t for a, t in zip(p, targets)) + 1) / (sum(p) + sum(targets) + 1)


LOGITS = [2.0, -1.0, 0.0, 3.0]  # a 2x2 mask, row-major
TARGET = [1, 0, 1, 0]


def as2x2(values, dtype=torch.float32):
    return torch.tensor(values, dtype=dtype).view(2, 2)


# --- single losses ---------------------------------------------------------------------------------------------

def test_focal_2x2_matches_formula():
    got = sigmoid_focal_loss(as2x2(LOGITS), as2x2(TARGET))
    assert got.shape == ()
    assert got.item() == pytest.approx(focal_ref(LOGITS, TARGET), rel=1e-5)
    no_alpha = sigmoid_focal_loss(as2x2(LOGITS), as2x2(TARGET), alpha=-1, gamma=0)  # plain BCE
    assert no_alpha.item() == pytest.approx(focal_ref(LOGITS, TARGET, alpha=-1, gamma=0), rel=1e-5)


def test_focal_large_logits():
    t = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    right = 20 * (2 * t - 1)
    assert sigmoid_focal_loss(right, t).item() == pytest.approx(0.0, abs=1e-12)
    # Every pixel wrong by 20: p_t ~ 0, ce ~ 20; positives weigh 0.25, negatives 0.75 -> mean 0.5 * 20.
    assert sigmoid_focal_loss(-right, t).item() == pytest.approx(10.0, rel=1e-6)


def test_dice_2x2_matches_formula():
    logits = [0.0, 0.0, math.log(3), -math.log(3)]  # p = .5, .5, .75, .25
    got = dice_loss(as2x2(logits), as2x2(TARGET))
    assert got.item() == pytest.approx(dice_ref(logits, TARGET), rel=1e-6)
    assert got.item() == pytest.approx(0.3, rel=1e-6)  # 1 - (2 * 1.25 + 1) / (2 + 2 + 1)
    assert dice_loss(as2x2(LOGITS), as2x2(TARGET)).item() == pytest.approx(dice_ref(LOGITS, TARGET), rel=1e-6)


def test_dice_large_logits_and_smoothing():
    t = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert dice_loss(20 * (2 * t - 1), t).item() == pytest.approx(0.0, abs=1e-6)
    assert dice_loss(-20 * (2 * t - 1), t).item() == pytest.approx(1 - 1 / 5, rel=1e-6)  # 1 - (0 + 1) / (4 + 1)
    empty = torch.zeros(2, 2)
    assert dice_loss(torch.full((2, 2), -20.0), empty).item() == pytest.approx(0.0, abs=1e-6)  # +1 smoothing


def test_iou_prediction_loss_l1_and_mse():
    logits = as2x2([1.0, 1.0, -1.0, -1.0])  # predicts the top row; target is the left column: IoU 1/3
    assert mask_iou(logits, as2x2(TARGET)).item() == pytest.approx(1 / 3)
    pred = torch.tensor(0.5)
    assert iou_prediction_loss(pred, logits, as2x2(TARGET)).item() == pytest.approx(1 / 6, rel=1e-6)
    assert iou_prediction_loss(pred, logits, as2x2(TARGET), use_l1=False).item() == pytest.approx(1 / 36, rel=1e-6)
    # Both empty: IoU reads 0 (SAM 2's convention), so a predicted 0 costs nothing.
    assert iou_prediction_loss(torch.tensor(0.0), -torch.ones(2, 2), torch.zeros(2, 2)).item() == 0.0


def test_object_presence_loss():
    logits = torch.tensor([[0.0], [2.0], [2.0]])
    present = torch.tensor([True, True, False])
    want = [math.log(2), math.log(1 + math.exp(-2)), math.log(1 + math.exp(2))]
    assert object_presence_loss(logits, present).tolist() == pytest.approx(want, rel=1e-6)


def test_temporal_loss_hand_value():
    prev_t, cur_t = as2x2([1, 0, 0, 0]), as2x2([1, 1, 0, 0])  # the object grows into pixel (0, 1)
    prev = as2x2([5.0, -5.0, 0.0, 0.0])
    cur = as2x2([5.0, 5.0, 0.0, math.log(3)])  # follows the growth, and pixel (1, 1) drifts .5 -> .75
    # Stable pixels: (0,0), (1,0), (1,1); changes there: 0, 0, 0.25.
    assert temporal_consistency_loss(cur, prev, cur_t, prev_t).item() == pytest.approx(0.25 / 3, rel=1e-6)


def test_temporal_loss_zero_iff_prediction_changes_as_ground_truth():
    torch.manual_seed(0)
    prev_t = torch.zeros(3, 8, 8)
    prev_t[:, 2:5, 2:5] = 1
    cur_t = torch.roll(prev_t, shifts=2, dims=-1)  # the object moves right
    prev = torch.randn(3, 8, 8)
    changed = cur_t != prev_t
    follows = torch.where(changed, prev + 7 * (2 * cur_t - 1), prev)  # changes only where the labels change
    assert torch.all(temporal_consistency_loss(follows, prev, cur_t, prev_t) == 0)
    flicker = follows + 0.5 * (~changed)  # any drift on stable pixels costs
    assert torch.all(temporal_consistency_loss(flicker, prev, cur_t, prev_t) > 0)


def test_per_mask_shapes_batched():
    logits, targets = torch.randn(4, 3, 6, 6), (torch.rand(4, 1, 6, 6) > 0.5)
    assert sigmoid_focal_loss(logits, targets).shape == (4, 3)
    assert dice_loss(logits, targets).shape == (4, 3)
    assert iou_prediction_loss(torch.rand(4, 3), logits, targets).shape == (4, 3)
    assert temporal_consistency_loss(logits, logits.flip(0), targets, targets.flip(0)).shape == (4, 3)
    # Batched values equal the per-mask ones.
    one = sigmoid_focal_loss(logits[2, 1], targets[2, 0])
    assert torch.allclose(sigmoid_focal_loss(logits, targets)[2, 1], one)


# --- combined loss ---------------------------------------------------------------------------------------------

def _frame(n=2, m=3, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    targets = torch.zeros(n, size, size)
    targets[:, 2:6, 1:5] = 1
    logits = torch.randn(n, m, size, size, generator=g)
    return logits, torch.rand(n, m, generator=g), torch.randn(n, 1, generator=g), targets


def test_weights_defaults_and_frozen():
    w = MaskLossWeights()
    assert (w.focal, w.dice, w.iou, w.presence, w.temporal) == (20.0, 1.0, 1.0, 1.0, 0.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        w.focal = 1.0


def test_multimask_picks_lowest_focal_dice_and_backprops_only_through_it():
    logits, pred_iou, scores, targets = _frame()
    good = 12 * (2 * targets - 1)
    logits[0, 1], logits[1, 2] = good[0], good[1]  # the right candidate per object
    logits.requires_grad_(True)
    pred_iou.requires_grad_(True)
    focal_all, dice_all = sigmoid_focal_loss(logits, targets[:, None]), dice_loss(logits, targets[:, None])
    assert select_candidate(focal_all, dice_all, MaskLossWeights()).tolist() == [1, 2]

    total, parts = combined_loss(logits, pred_iou, scores, targets)
    assert parts["focal"].item() == pytest.approx((focal_all[0, 1] + focal_all[1, 2]).item() / 2, rel=1e-6)
    assert parts["dice"].item() == pytest.approx((dice_all[0, 1] + dice_all[1, 2]).item() / 2, rel=1e-6)
    total.backward()
    touched = logits.grad.flatten(2).abs().sum(-1) > 0  # (N, M)
    assert touched.tolist() == [[False, True, False], [False, False, True]]
    assert torch.all(pred_iou.grad != 0)  # IoU prediction is supervised on every candidate


def test_total_is_weighted_sum_of_parts():
    logits, pred_iou, scores, targets = _frame()
    weights = MaskLossWeights(focal=3.0, dice=2.0, iou=0.5, presence=0.25, temporal=4.0)
    total, parts = combined_loss(logits, pred_iou, scores, targets, prev_logits=logits[:, :1].flip(-1),
                                 prev_targets=targets.flip(-1), weights=weights)
    assert set(parts) == {"focal", "dice", "iou", "presence", "temporal"}
    want = sum(getattr(weights, k) * v for k, v in parts.items())
    assert total.item() == pytest.approx(want.item(), rel=1e-6)
    assert parts["temporal"].item() > 0


def test_absent_objects_get_no_mask_loss():
    logits, pred_iou, scores, targets = _frame(n=3)
    targets[1] = 0  # object 1 is not in this frame
    logits.requires_grad_(True)
    pred_iou.requires_grad_(True)
    total, parts = combined_loss(logits, pred_iou, scores, targets)
    total.backward()
    assert torch.all(logits.grad[1] == 0) and torch.all(pred_iou.grad[1] == 0)
    # Mask parts are the present objects' only, still divided by all 3 objects (SAM 2's num_objects).
    keep = torch.tensor([0, 2])
    _, sub = combined_loss(logits[keep].detach(), pred_iou[keep].detach(), scores[keep], targets[keep])
    for name in ("focal", "dice", "iou"):
        assert parts[name].item() == pytest.approx(sub[name].item() * 2 / 3, rel=1e-6)
    # Presence still counts the absent object, with target 0.
    want = object_presence_loss(scores, torch.tensor([True, False, True])).sum() / 3
    assert parts["presence"].item() == pytest.approx(want.item(), rel=1e-6)


def test_explicit_present_and_num_objects():
    logits, pred_iou, scores, targets = _frame()
    _, parts = combined_loss(logits, pred_iou, scores, targets, present=torch.tensor([False, False]))
    assert parts["focal"].item() == parts["dice"].item() == parts["iou"].item() == 0.0
    _, by2 = combined_loss(logits, pred_iou, scores, targets)
    _, by8 = combined_loss(logits, pred_iou, scores, targets, num_objects=8)
    assert by8["dice"].item() == pytest.approx(by2["dice"].item() / 4, rel=1e-6)


def test_single_mask_decoder_output_and_resizing():
    # Decoded-like output: low_res (N, 1, S/4, S/4), iou (N,), object_score_logits (N, 1); targets at S.
    targets = torch.zeros(2, 16, 16)
    targets[:, 4:12, 4:12] = 1
    low_res = torch.full((2, 1, 4, 4), 1.5)  # constant logits resize to the same constant
    total, parts = combined_loss(low_res, torch.tensor([0.2, 0.9]), torch.zeros(2, 1), targets)
    full = torch.full((2, 1, 16, 16), 1.5)
    assert parts["focal"].item() == pytest.approx(sigmoid_focal_loss(full, targets[:, None]).mean().item(), rel=1e-6)
    # Prediction covers everything: IoU 64 / 256 = 0.25; L1 errors .05 and .65.
    assert parts["iou"].item() == pytest.approx((0.05 + 0.65) / 2, rel=1e-5)
    with pytest.raises(ValueError, match="pred_iou"):
        combined_loss(low_res, torch.zeros(2, 3), torch.zeros(2, 1), targets)


def test_temporal_part_in_combined_loss():
    logits, pred_iou, scores, targets = _frame(m=1)
    w = MaskLossWeights(temporal=1.0)
    _, same = combined_loss(logits, pred_iou, scores, targets, prev_logits=logits, prev_targets=targets, weights=w)
    assert same["temporal"].item() == 0.0
    _, moved = combined_loss(logits, pred_iou, scores, targets, prev_logits=logits + 1, prev_targets=targets,
                             weights=w)
    assert moved["temporal"].item() > 0
    prev_targets = targets.clone()
    prev_targets[0] = 0  # object 0 was absent before: no temporal term for it
    _, half = combined_loss(logits, pred_iou, scores, targets, prev_logits=logits + 1, prev_targets=prev_targets,
                            weights=w)
    only1 = temporal_consistency_loss(logits[1, 0], logits[1, 0] + 1, targets[1], targets[1]) / 2
    assert half["temporal"].item() == pytest.approx(only1.item(), rel=1e-6)


def test_gradients_flow_and_are_finite():
    logits, pred_iou, scores, targets = _frame()
    logits[1] = NO_OBJECT_LOGIT  # a predicted-absent object's masks, as the decoder writes them
    prev = torch.randn(2, 1, 8, 8, requires_grad=True)
    for t in (logits, pred_iou, scores):
        t.requires_grad_(True)
    total, parts = combined_loss(logits, pred_iou, scores, targets, prev_logits=prev, prev_targets=targets,
                                 weights=MaskLossWeights(temporal=1.0))
    total.backward()
    assert all(torch.isfinite(v) for v in parts.values())
    for t in (logits, pred_iou, scores, prev):
        assert t.grad is not None and torch.all(torch.isfinite(t.grad))
    assert logits.grad[0].abs().sum() > 0 and scores.grad.abs().sum() > 0 and prev.grad.abs().sum() > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="host-device sync check needs CUDA")
def test_no_host_device_sync_on_cuda():
    logits, pred_iou, scores, targets = (x.cuda() for x in _frame())
    logits.requires_grad_(True)
    torch.cuda.set_sync_debug_mode("error")
    try:
        total, _ = combined_loss(logits, pred_iou, scores, targets, prev_logits=logits[:, :1].detach(),
                                 prev_targets=targets, weights=MaskLossWeights(temporal=1.0))
        total.backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
