"""Automatic mask generation: every object of one frame from a grid of single positive clicks (SAM's AMG).

Why: the pseudo-label job has no prompts. On a keyframe it clicks an n x n grid over the frame (only where
no live track covers it), decodes every click, and keeps the confident, stable, non-duplicate masks as new
objects. This is SAM 2's SAM2AutomaticMaskGenerator (its defaults: crop_n_layers=0, use_m2m=False)
re-done for our model and for a GPU frame loop:

- Every candidate of a click is kept (3 with multimask decoding, as SAM's AMG does), so the decoder is
  called raw here: `SAM2Model.decode` keeps only the best of them.
- A candidate whose object score logit is <= 0 is dropped: our model's no-object gating (SAM 2's image
  predictor ignores the object score).
- Stability, boxes and the small-region cleanup work on the decoder's mask grid (S/4 x S/4 logits), not
  on masks upsampled to the image; `min_region_area` is counted in pixels of that grid.
- Everything stays on the device. Per-point and per-batch filtering only marks candidates invalid; the
  frame's one host sync comes at the end (`_select`), a second one only when `min_region_area` > 0.
  Until then every candidate's logits are held: P x M x (S/4)^2 values in the decoder's dtype (a 1024 px
  model, 32 x 32 clicks, 3 candidates: 201M values, 0.4 GB in bf16).
"""

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from .config import ModelConfig
from .postprocess import HOLE_LOGIT, NEG_INF, fill_holes
from .sam2 import SAM2Model


@dataclass(frozen=True)
class AutoMaskConfig:
    points_per_side: int | None = None  # grid of n x n single positive clicks; None: default_points_per_side(cfg)
    points_per_batch: int = 64  # clicks decoded per decoder call (bounds the decoder's memory, not the result)
    # The three thresholds below, None: the model's (ModelConfig.auto_mask_thresholds): SAM 2's 0.8, 0.95, 1.0
    # for the official presets; calibrated on its own validation videos for synthetic-tiny (MODEL_CARD.md).
    pred_iou_thresh: float | None = None  # keep candidates whose predicted IoU is above this (0: no filter)
    stability_score_thresh: float | None = None  # keep candidates whose stability is at least this (0: no filter)
    stability_score_offset: float | None = None  # logit offset of the stability score's two thresholds (+-offset)
    box_nms_thresh: float = 0.7  # box IoU above which the lower predicted IoU of two masks is dropped
    min_region_area: int = 0  # holes and disconnected islands below this many pixels of the decoder's mask grid
    #                           (image_size/4) are filled / removed, as SAM's min_mask_region_area; 0 = off
    multimask: bool | None = None  # 3 candidates per click; None: as the model decodes single clicks
    #                                (cfg.multimask_max_pt_num >= 1); False: the single output (token 0)

    def __post_init__(self):
        n = self.points_per_side
        if n is not None and (not _is_int(n) or n < 1):
            raise ValueError(f"points_per_side must be None or an int >= 1, got {n!r}")
        if not _is_int(self.points_per_batch) or self.points_per_batch < 1:
            raise ValueError(f"points_per_batch must be an int >= 1, got {self.points_per_batch!r}")
        for name in ("pred_iou_thresh", "stability_score_thresh", "box_nms_thresh"):
            v = getattr(self, name)
            if v is None and name != "box_nms_thresh":
                continue
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be a number in [0, 1], got {v!r}")
        v = self.stability_score_offset
        if v is not None and (not isinstance(v, (int, float)) or isinstance(v, bool) or not (math.isfinite(v) and v >= 0)):
            raise ValueError(f"stability_score_offset must be a finite number >= 0, got {v!r}")
        if not _is_int(self.min_region_area) or self.min_region_area < 0:
            raise ValueError(f"min_region_area must be an int >= 0, got {self.min_region_area!r}")
        if self.multimask is not None and not isinstance(self.multimask, bool):
            raise ValueError(f"multimask must be None or a bool, got {self.multimask!r}")


    def resolved(self, cfg: ModelConfig) -> "AutoMaskConfig":
        """Every None replaced by the model's default."""
        iou, stability, offset = cfg.auto_mask_thresholds
        return replace(self, points_per_side=self.points_per_side or default_points_per_side(cfg),
                       pred_iou_thresh=_given(self.pred_iou_thresh, iou),
                       stability_score_thresh=_given(self.stability_score_thresh, stability),
                       stability_score_offset=_given(self.stability_score_offset, offset))


def _given(value, default):
    return default if value is None else value


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass
class Proposals:
    """K kept masks of one frame, sorted by predicted IoU descending; tensors on the model's device."""

    low_res: torch.Tensor  # (K, 1, S/4, S/4) float32 mask logits (after the min_region_area cleanup)
    ious: torch.Tensor  # (K,) predicted IoU
    stability: torch.Tensor  # (K,) stability score (of the decoder's logits, before cleanup, as SAM)
    boxes: torch.Tensor  # (K, 4) float32 x0, y0, x1, y1: inclusive indices of the mask's extreme pixels, S/4 grid
    points: torch.Tensor  # (K, 2) x, y in model pixels: the click that made each


def default_points_per_side(cfg: ModelConfig) -> int:
    """Clicks per side: SAM's 32 for the official 1024 px presets. A smaller model input keeps a click at least
    every 8 model pixels (2 cells of the decoder's mask grid), so image_size // 8, at most 32: 16 for
    synthetic-tiny at 128 px. Scaling SAM's 32 px spacing with the image (4 clicks per side at 128 px) would
    miss objects: the synthetic objects' smallest diameter is 0.14 of the frame (18 px at 128), and at 8 px
    spacing each gets >= 2 clicks across. 256 clicks of a 3.1M-parameter decoder are cheap."""
    return max(1, min(32, cfg.image_size // 8))


def point_grid(n: int, image_size: int, device=None) -> torch.Tensor:
    """(n*n, 2) x, y click positions in model pixels: the centres of an n x n grid of cells, row by row
    (SAM's build_point_grid(n) * image_size)."""
    if not _is_int(n) or n < 1:
        raise ValueError(f"points per side must be an int >= 1, got {n!r}")
    side = (torch.arange(n, dtype=torch.float32, device=device) + 0.5) * (image_size / n)  # (n,)
    y, x = torch.meshgrid(side, side, indexing="ij")  # (n, n) each: row i has y = side[i]
    return torch.stack([x, y], dim=-1).reshape(n * n, 2)  # (n*n, 2)


# ---- scores and boxes (pure torch, batched) -------------------------------------------------------------
def stability_score(logits: torch.Tensor, threshold_offset: float) -> torch.Tensor:
    """IoU of (logits > +offset) with (logits > -offset) per mask: (..., H, W) -> (...) float32. The first is
    inside the second, so it is a ratio of areas. An empty union scores 0 (SAM's is nan: rejected either way)."""
    inter = (logits > threshold_offset).flatten(-2).sum(-1)  # (...)
    union = (logits > -threshold_offset).flatten(-2).sum(-1)
    return torch.where(union > 0, inter / union.clamp(min=1), 0.0).float()


def mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """(..., H, W) bool -> (..., 4) float32 x0, y0, x1, y1, the inclusive indices of the extreme foreground
    pixels (SAM's batched_mask_to_box); [0, 0, 0, 0] for an empty mask."""
    rows, cols = masks.any(dim=-1), masks.any(dim=-2)  # (..., H), (..., W)

    def extent(hit: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = hit.shape[-1]
        idx = torch.arange(n, device=hit.device)
        return torch.where(hit, idx, n).amin(-1), torch.where(hit, idx, -1).amax(-1)

    (x0, x1), (y0, y1) = extent(cols), extent(rows)
    box = torch.stack([x0, y0, x1, y1], dim=-1)  # (..., 4)
    return torch.where(rows.any(dim=-1, keepdim=True), box, 0).float()


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of (M, 4) and (N, 4) x0, y0, x1, y1 boxes -> (M, N), areas as torchvision computes them
    ((x1 - x0) * (y1 - y0)); a zero union gives 0."""
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])  # (M,)
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])  # (N,)
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])  # (M, N, 2)
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=-1)  # (M, N)
    union = area_a[:, None] + area_b[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), 0.0)


def box_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_thresh: float) -> torch.Tensor:
    """Greedy NMS: visit boxes by score descending (ties: lower index first) and drop every later box whose
    IoU with a kept one is above iou_thresh. Returns the kept indices (long, on boxes' device), highest score
    first. The overlap matrix goes to the host once (one sync when boxes live on a GPU)."""
    order = torch.sort(scores, descending=True, stable=True).indices  # (M,)
    over = (box_iou(boxes[order].float(), boxes[order].float()) > iou_thresh).cpu()  # (M, M)
    removed = torch.zeros(order.shape[0], dtype=torch.bool)
    keep = []
    for i in range(order.shape[0]):
        if not removed[i]:
            keep.append(i)
            removed |= over[i]
    return order[torch.tensor(keep, dtype=torch.long, device=order.device)]


# ---- small regions --------------------------------------------------------------------------------------
def remove_small_regions(logits: torch.Tensor, min_area: int) -> tuple[torch.Tensor, torch.Tensor]:
    """SAM's min_mask_region_area cleanup, exact, on (N, 1, H, W) logits: fill 8-connected background
    components ("holes", also those touching the border) of fewer than min_area pixels, then remove foreground
    islands of fewer than min_area pixels, keeping the largest if all are small. Filled pixels get
    +HOLE_LOGIT, removed ones -HOLE_LOGIT. Returns (logits, changed (N,) bool: any hole or small island
    found, as SAM reports it). No host sync."""
    if min_area <= 1:  # SAM's test is area < min_area: nothing is below 1
        return logits, torch.zeros(logits.shape[0], dtype=torch.bool, device=logits.device)
    max_area = min_area - 1  # fill_holes takes components of area <= max_area
    filled = fill_holes(logits, max_area)
    fg = filled > 0  # (N, 1, H, W)
    # Islands are the holes of the inverted mask. Invert signs, not values: a logit of exactly 0 is
    # background and must stay background (-0 <= 0 would make it foreground of the inverse).
    island = fg & (fill_holes(torch.where(fg, -1.0, 1.0), max_area) > 0)  # (N, 1, H, W)
    all_small = ~(fg & ~island).flatten(1).any(dim=1)  # (N,): no foreground would be left
    keep = all_small[:, None, None, None] & _largest_component(fg, max_area)
    out = torch.where(island & ~keep, -HOLE_LOGIT, filled)
    changed = ((filled > 0) != (logits > 0)).flatten(1).any(dim=1) | island.flatten(1).any(dim=1)
    return out, changed


def _largest_component(fg: torch.Tensor, rounds: int) -> torch.Tensor:
    """Per mask, its largest 8-connected foreground component (ties: the first in raster order, as
    cv2's labels), exact where every component has at most `rounds` pixels (fill_holes' argument).
    fg (N, 1, H, W) bool -> the same shape."""
    N, _, H, W = fg.shape
    ids = torch.arange(1, H * W + 1, device=fg.device, dtype=torch.float32).view(1, 1, H, W)
    neg = torch.where(fg, -ids, NEG_INF)  # minus the label: a max-pool is a min over labels
    for _ in range(min(rounds, H * W)):  # fixed count: no sync on the data
        neg = torch.where(fg, F.max_pool2d(neg, kernel_size=3, stride=1, padding=1), NEG_INF)
    label = torch.where(fg, -neg - 1, 0).long().reshape(N, H * W)  # (N, HW): smallest flat index in component
    w = fg.reshape(N, H * W).to(torch.int32)
    area = torch.zeros(N, H * W, dtype=torch.int32, device=fg.device).scatter_add(1, label, w)  # (N, HW)
    best = area.argmax(dim=1, keepdim=True)  # (N, 1): first maximum = lowest label
    return (fg.reshape(N, H * W) & (label == best)).reshape(N, 1, H, W)


# ---- decoding -------------------------------------------------------------------------------------------
def decode_candidates(model: SAM2Model, feat: torch.Tensor, high_res: list[torch.Tensor],
                      points: torch.Tensor, multimask: bool):
    """The raw call of `SAM2Model.decode` for N single positive clicks on one frame, every candidate kept.
    feat (1, C, h, w) with the no-memory embedding, points (N, 2) model pixels -> masks (N, M, S/4, S/4)
    logits, ious (N, M), object score logits (N, 1); M = 3 if multimask else 1 (token 0, with the decoder's
    dynamic fallback when the config enables it, exactly as `decode` gets it)."""
    N = points.shape[0]
    labels = torch.ones(N, 1, dtype=torch.int32, device=points.device)
    sparse, dense = model.sam_prompt_encoder(points=(points[:, None], labels), masks=None)  # (N, 2, C)
    masks, ious, _, obj_logits = model.sam_mask_decoder(
        image_embeddings=feat.expand(N, -1, -1, -1), image_pe=model.sam_prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=multimask,
        high_res_features=[x.expand(N, -1, -1, -1) for x in high_res])
    return masks, ious, obj_logits


@dataclass
class _Candidates:
    """Every candidate of a set of clicks, R = clicks x M rows, invalid ones only marked."""

    logits: torch.Tensor  # (R, 1, S/4, S/4) in the decoder's dtype
    ious: torch.Tensor  # (R,) float32
    stability: torch.Tensor  # (R,) float32
    boxes: torch.Tensor  # (R, 4) float32
    points: torch.Tensor  # (R, 2)
    valid: torch.Tensor  # (R,) bool: present, confident, stable, from an allowed click

    @staticmethod
    def cat(parts: list["_Candidates"]) -> "_Candidates":
        return _Candidates(*(torch.cat([getattr(p, f) for p in parts]) for f in
                             ("logits", "ious", "stability", "boxes", "points", "valid")))

    def take(self, index: torch.Tensor) -> "_Candidates":
        return _Candidates(self.logits[index], self.ious[index], self.stability[index], self.boxes[index],
                           self.points[index], self.valid[index])


def _batch_candidates(model, feat, high_res, points, ok, config: AutoMaskConfig, multimask: bool) -> _Candidates:
    """Decode one batch of clicks (B, 2) and score every candidate, without a host sync."""
    masks, ious, obj_logits = decode_candidates(model, feat, high_res, points, multimask)  # (B, M, h, w)
    B, M = ious.shape
    logits = masks.flatten(0, 1)[:, None]  # (B*M, 1, h, w)
    ious = ious.float().flatten()  # (B*M,)
    stability = stability_score(logits[:, 0], config.stability_score_offset)  # (B*M,)
    valid = ((obj_logits > 0) & ok[:, None]).expand(B, M).flatten()  # (B*M,)
    if config.pred_iou_thresh > 0:  # SAM's tests: IoU strictly above, stability at least
        valid = valid & (ious > config.pred_iou_thresh)
    if config.stability_score_thresh > 0:
        valid = valid & (stability >= config.stability_score_thresh)
    boxes = mask_boxes(logits[:, 0] > 0)  # (B*M, 4)
    clicks = points[:, None].expand(B, M, 2).reshape(B * M, 2)  # (B*M, 2): each click once per candidate
    return _Candidates(logits, ious, stability, boxes, clicks, valid)


def _select(cand: _Candidates, config: AutoMaskConfig) -> Proposals:
    """Valid candidates -> NMS -> cleanup -> NMS again (preferring unchanged masks) -> sorted by IoU."""
    device = cand.valid.device
    # The frame's one host sync: which candidates are valid, with their scores and boxes for NMS.
    host = torch.cat([cand.valid[:, None].float(), cand.ious[:, None], cand.boxes], dim=1).cpu()  # (R, 6)
    idx = host[:, 0].nonzero()[:, 0]  # (M,)
    idx = idx[box_nms(host[idx, 2:], host[idx, 1], config.box_nms_thresh)]  # by IoU, descending
    kept = cand.take(idx.to(device))
    logits = kept.logits.float()
    if config.min_region_area > 0 and idx.numel():
        logits, changed = remove_small_regions(logits, config.min_region_area)
        boxes = mask_boxes(logits[:, 0] > 0)  # (K, 4)
        # The second sync (cleanup only): SAM reruns NMS on the new boxes, unchanged masks first (a stable
        # sort keeps IoU order within each group), then we restore the IoU order.
        host2 = torch.cat([changed[:, None].float(), boxes], dim=1).cpu()  # (K, 5)
        keep = box_nms(host2[:, 1:], 1.0 - host2[:, 0], config.box_nms_thresh)
        keep = keep.sort().values  # kept rows were in IoU order: ascending index restores it
        k = keep.to(device)
        return Proposals(logits[k], kept.ious[k], kept.stability[k], boxes[k], kept.points[k])
    return Proposals(logits, kept.ious, kept.stability, kept.boxes, kept.points)


def _check_inputs(feat: torch.Tensor, point_ok: torch.Tensor | None, num_points: int) -> torch.Tensor:
    if feat.ndim != 4 or feat.shape[0] != 1:
        raise ValueError(f"feat must be one frame's features (1, C, h, w), got shape {tuple(feat.shape)}")
    if point_ok is None:
        return torch.ones(num_points, dtype=torch.bool, device=feat.device)
    if point_ok.dtype != torch.bool or tuple(point_ok.shape) != (num_points,):
        raise ValueError(f"point_ok must be a bool tensor of shape ({num_points},), got {point_ok.dtype} "
                         f"{tuple(point_ok.shape)}")
    return point_ok.to(feat.device)


@torch.inference_mode()
def generate_masks(model: SAM2Model, feat: torch.Tensor, high_res: list[torch.Tensor], config: AutoMaskConfig,
                   point_ok: torch.Tensor | None = None) -> Proposals:
    """Automatic masks of one frame. feat (1, C, h, w): the frame's lowest-resolution features before memory
    (FrameFeatures.feat[i:i+1]); high_res: the matching [x[i:i+1] for x in FrameFeatures.high_res];
    point_ok (n*n,) bool: False for grid clicks that must produce nothing (e.g. covered by live tracks)."""
    cfg = model.cfg
    config = config.resolved(cfg)
    n = config.points_per_side
    multimask = config.multimask if config.multimask is not None else cfg.multimask_max_pt_num >= 1
    points = point_grid(n, cfg.image_size, feat.device)  # (P, 2)
    ok = _check_inputs(feat, point_ok, points.shape[0])
    feat = model.without_memory(feat)  # as the tracker decodes a prompted frame
    B = config.points_per_batch
    parts = [_batch_candidates(model, feat, high_res, points[i:i + B], ok[i:i + B], config, multimask)
             for i in range(0, points.shape[0], B)]
    return _select(_Candidates.cat(parts), config)
