"""Training losses for SAM 2 style video segmentation: focal + dice + IoU + object presence (SAM 2's recipe),
plus a temporal-consistency term of our own.

Definitions follow Meta's `training/loss_fns.py` (class MultiStepMultiMasksAndIous) with the settings of the
SAM 2.1 training configs: weights focal 20 : dice 1 : iou 1 : class 1, `supervise_all_iou: true`,
`iou_use_l1_loss: true`, `pred_obj_scores: true` with a plain BCE on the object score (focal gamma 0, no alpha).

Conventions:
- Every per-mask function maps (..., H, W) logits / targets to (...) values, so the same code serves one mask
  per object (N, 1, H, W) and M candidates per object (N, M, H, W). Targets are binary (bool or 0/1 float).
- Per-mask values are means over pixels; `combined_loss` sums them over objects and divides by `num_objects`
  (SAM 2's normalisation: N, counting absent objects too). Over frames and correction steps SAM 2 sums, so a
  training loop adds up `combined_loss` of each (frame, step).
- No host-device syncs: no .item(), no data-dependent Python branches, no boolean indexing; gating and
  candidate choice are done with torch.where / gather.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

DICE_SMOOTH = 1.0  # SAM 2 adds 1 to numerator and denominator: an empty prediction of an empty target costs 0


def _as_target(targets: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Binary targets as floats of `like`'s dtype, broadcast to its shape (candidates share one target)."""
    return targets.to(like.dtype).expand_as(like)


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25,
                       gamma: float = 2.0) -> torch.Tensor:
    """RetinaNet focal loss per mask, mean over pixels: (..., H, W) -> (...).

    pixel loss = alpha_t * (1 - p_t)^gamma * BCE(logit, t), p_t = sigmoid(logit) if t else 1 - sigmoid(logit),
    alpha_t = alpha if t else 1 - alpha; alpha < 0 turns the class weighting off (as in SAM 2).
    """
    logits = logits.float()
    t = _as_target(targets, logits)
    p = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, t, reduction="none")  # stable for large |logits|
    p_t = p * t + (1 - p) * (1 - t)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * t + (1 - alpha) * (1 - t)) * loss
    return loss.flatten(-2).mean(-1)


def dice_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Soft dice loss per mask: (..., H, W) -> (...).

    loss = 1 - (S - D + 1) / (S + 1), S = sum(p) + sum(t), D = sum|p - t|, p = sigmoid(logit). This is SAM 2's
    current (semimetric, Wang et al. 2023) form; for binary targets S - D = 2 sum(p t), i.e. the classic
    1 - (2 sum(p t) + 1) / (sum(p) + sum(t) + 1).
    """
    p = logits.float().sigmoid().flatten(-2)
    t = _as_target(targets, logits.float()).flatten(-2)
    total = p.sum(-1) + t.sum(-1)
    diff = (p - t).abs().sum(-1)
    return 1 - (total - diff + DICE_SMOOTH) / (total + DICE_SMOOTH)


def mask_iou(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """IoU of the binarised prediction (logit > 0) with the target: (..., H, W) -> (...); 0 when both are empty."""
    pred = (logits > 0).flatten(-2)
    gt = (targets > 0).expand_as(logits).flatten(-2)
    inter = (pred & gt).sum(-1).float()
    union = (pred | gt).sum(-1).float()
    return inter / union.clamp(min=1.0)  # SAM 2's clamp: an empty union reads as IoU 0, without a sync


def iou_prediction_loss(pred_iou: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor,
                        use_l1: bool = True) -> torch.Tensor:
    """|pred_iou - IoU(logits > 0, targets)| per mask: pred_iou (...), logits (..., H, W) -> (...).

    L1 by default, as the SAM 2.1 training configs set (`iou_use_l1_loss: true`); use_l1=False gives the
    squared error (SAM 2's code default). The actual IoU is a constant target: thresholding has no gradient, so
    only the IoU head learns from this loss.
    """
    actual = mask_iou(logits, targets)
    err = pred_iou.float() - actual
    return err.abs() if use_l1 else err.square()


def object_presence_loss(object_score_logits: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """BCE of the occlusion head against visibility: logits (N, 1) or (N,), present (N,) -> (N,)."""
    logits = object_score_logits.float().reshape(-1)
    return F.binary_cross_entropy_with_logits(logits, present.to(logits.dtype).reshape(-1), reduction="none")


def temporal_consistency_loss(logits_t: torch.Tensor, logits_prev: torch.Tensor, targets_t: torch.Tensor,
                              targets_prev: torch.Tensor) -> torch.Tensor:
    """Penalty on prediction changes the ground truth does not make: (..., H, W) -> (...).

    loss = sum_x s(x) |sigmoid(l_t(x)) - sigmoid(l_prev(x))| / max(sum_x s(x), 1), s(x) = [gt_t(x) == gt_prev(x)]:
    the mean absolute change of the soft mask over the pixels whose label did not change. It is 0 when the
    prediction changes only where the ground truth does, and at most 1. Pixels where the label flips are left
    to the focal/dice terms. Gradients reach both frames; pass logits_prev.detach() to treat the previous frame
    as a fixed reference.
    """
    p_t, p_prev = logits_t.float().sigmoid(), logits_prev.float().sigmoid()
    stable = ((targets_t > 0) == (targets_prev > 0)).to(p_t.dtype).expand_as(p_t)
    change = (p_t - p_prev).abs() * stable
    return change.flatten(-2).sum(-1) / stable.flatten(-2).sum(-1).clamp(min=1.0)


@dataclass(frozen=True)
class MaskLossWeights:
    """Weights of combined_loss's parts. Defaults: SAM 2.1's training recipe; temporal 0 keeps it exactly."""

    focal: float = 20.0
    dice: float = 1.0
    iou: float = 1.0
    presence: float = 1.0
    temporal: float = 0.0


def select_candidate(focal: torch.Tensor, dice: torch.Tensor, weights: MaskLossWeights) -> torch.Tensor:
    """Index (N,) of the candidate with the lowest weighted focal + dice per object, from (N, M) losses."""
    return (weights.focal * focal + weights.dice * dice).argmin(dim=-1)


def _pick(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """values[n, index[n], ...] for each n: (N, M, ...) -> (N, ...); gradients reach only the picked entries."""
    idx = index.view(-1, 1, *([1] * (values.dim() - 2))).expand(-1, 1, *values.shape[2:])
    return values.gather(1, idx).squeeze(1)


def _to_size(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Logits (N, M, h, w) resized to the targets' (H, W), bilinear like SAM 2's upsampling of low-res masks."""
    if logits.shape[-2:] == targets.shape[-2:]:
        return logits
    return F.interpolate(logits.float(), size=targets.shape[-2:], mode="bilinear", align_corners=False)


def _check(mask_logits: torch.Tensor, pred_iou: torch.Tensor, targets: torch.Tensor) -> None:
    if mask_logits.dim() != 4:
        raise ValueError(f"mask_logits must be (N, M, H, W), got {tuple(mask_logits.shape)}")
    n, m = mask_logits.shape[:2]
    if targets.shape[0] != n or pred_iou.shape != (n, m):
        raise ValueError(f"shapes disagree: mask_logits {tuple(mask_logits.shape)}, pred_iou "
                         f"{tuple(pred_iou.shape)} (want ({n}, {m})), targets {tuple(targets.shape)}")


def combined_loss(mask_logits: torch.Tensor, pred_iou: torch.Tensor, object_score_logits: torch.Tensor,
                  targets: torch.Tensor, *, present: torch.Tensor | None = None,
                  prev_logits: torch.Tensor | None = None, prev_targets: torch.Tensor | None = None,
                  weights: MaskLossWeights = MaskLossWeights(),
                  num_objects: float | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """SAM 2's loss for one frame (one prediction step) of N objects -> (total, parts).

    mask_logits (N, M, h, w) candidates (M = 1 for single-mask output; Decoded.low_res is fine: logits are
    resized to the targets' size); pred_iou (N, M) or (N,); object_score_logits (N, 1); targets (N, H, W) or
    (N, 1, H, W) binary; present (N,) visibility, default: the target has a foreground pixel (as SAM 2).
    prev_logits (N, 1, h, w) / prev_targets: the previous frame's chosen mask and target, for the temporal term.
    num_objects: the normaliser, default N (pass the global mean object count when training data-parallel).

    Parts (unweighted, each summed over objects / num_objects): focal and dice of the candidate with the lowest
    weighted focal + dice (the only candidate they backprop through), iou averaged over all candidates,
    presence on every object, temporal on objects present in both frames. Focal, dice and iou are zero for
    absent objects: there is no mask to supervise. total = sum of weight * part.
    """
    if pred_iou.dim() == 1:
        pred_iou = pred_iou.unsqueeze(1)
    targets = targets.unsqueeze(1) if targets.dim() == 3 else targets  # (N, 1, H, W)
    _check(mask_logits, pred_iou, targets)
    logits = _to_size(mask_logits, targets)  # (N, M, H, W)
    present = targets.flatten(1).any(-1) if present is None else present.reshape(-1).bool()  # (N,)
    norm = float(max(num_objects if num_objects is not None else logits.shape[0], 1))

    focal_all = sigmoid_focal_loss(logits, targets)  # (N, M)
    dice_all = dice_loss(logits, targets)  # (N, M)
    best = select_candidate(focal_all.detach(), dice_all.detach(), weights)  # (N,)
    zero = focal_all.new_zeros(())
    parts = {
        "focal": torch.where(present, _pick(focal_all, best), zero).sum() / norm,
        "dice": torch.where(present, _pick(dice_all, best), zero).sum() / norm,
        "iou": torch.where(present, iou_prediction_loss(pred_iou, logits, targets).mean(-1), zero).sum() / norm,
        "presence": object_presence_loss(object_score_logits, present).sum() / norm,
        "temporal": _temporal_part(_pick(logits, best), targets[:, 0], present, prev_logits, prev_targets, norm),
    }
    total = sum(getattr(weights, name) * value for name, value in parts.items())
    return total, parts


def _temporal_part(chosen: torch.Tensor, targets: torch.Tensor, present: torch.Tensor,
                   prev_logits: torch.Tensor | None, prev_targets: torch.Tensor | None,
                   norm: float) -> torch.Tensor:
    """Temporal term over objects present in both frames; 0 without a previous frame. chosen (N, H, W)."""
    if prev_logits is None or prev_targets is None:
        return chosen.new_zeros(())
    prev_targets = prev_targets.reshape(targets.shape[0], 1, *prev_targets.shape[-2:])  # (N, 1, H', W')
    prev = _to_size(prev_logits.reshape(prev_targets.shape[0], 1, *prev_logits.shape[-2:]), targets)[:, 0]
    if prev_targets.shape[-2:] != targets.shape[-2:]:
        raise ValueError(f"prev_targets {tuple(prev_targets.shape)} and targets {tuple(targets.shape)} differ in size")
    both = present & prev_targets.flatten(1).any(-1)
    loss = temporal_consistency_loss(chosen, prev, targets, prev_targets[:, 0])  # (N,)
    return torch.where(both, loss, loss.new_zeros(())).sum() / norm
