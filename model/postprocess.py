"""Mask post-processing: fill small holes in mask logits.

SAM 2 turns every background region (logit <= 0) of at most `fill_hole_area` pixels, 8-connected, into
foreground with logit 0.1. The reference finds those regions with a CUDA connected-components extension;
this is an exact pure-PyTorch version with no host-device syncs (a fixed number of iterations, no
.item(), no data-dependent loops), so it runs on any device, inside a CUDA frame loop and under
torch.compile.
"""

import torch
import torch.nn.functional as F

HOLE_LOGIT = 0.1  # the score a filled hole gets: just above the 0 threshold
NEG_INF = float("-inf")


def _max3x3(x: torch.Tensor) -> torch.Tensor:
    """Max over each pixel's 3x3 neighbourhood (itself + 8 neighbours); the border pads with -inf."""
    return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)


def fill_holes(mask_logits: torch.Tensor, max_area: int) -> torch.Tensor:
    """Set to HOLE_LOGIT every 8-connected background component (logit <= 0) with area <= max_area.

    mask_logits: (N, 1, H, W) float. Returns the same shape and dtype; max_area <= 0 returns the input.

    Method: each background pixel starts with its own label (flat index + 1) and repeatedly takes the
    smallest label in its 3x3 background neighbourhood. A component of area A has diameter < A, so after
    max_area rounds every component of area <= max_area carries one label. A label's pixel set is then a
    whole component of area <= max_area iff it has <= max_area pixels and none of them touches a
    background pixel with another label (no such contact means the set is closed under adjacency).
    """
    if max_area <= 0:
        return mask_logits
    N, C, H, W = mask_logits.shape
    bg = mask_logits <= 0  # (N, C, H, W) bool
    # Labels in float32 are exact up to 2^24 > H*W for any mask we handle; -inf marks foreground so the
    # max-pools below only ever see background pixels.
    assert H * W < 2**24, "labels would lose exactness in float32"
    ids = torch.arange(1, H * W + 1, device=mask_logits.device, dtype=torch.float32).view(1, 1, H, W)
    neg = torch.where(bg, -ids, NEG_INF)  # (N, C, H, W): minus the label, so a max-pool is a min over labels

    for _ in range(min(max_area, H * W)):  # fixed count: no sync on the data
        neg = torch.where(bg, _max3x3(neg), NEG_INF)

    label = -neg  # (N, C, H, W): +inf on foreground
    pos = torch.where(bg, label, NEG_INF)
    conflict = bg & (_max3x3(pos) != -_max3x3(neg))  # a background neighbour carries another label

    # Per-label statistics on flattened planes; foreground pixels go to bin 0 with weight 0.
    idx = torch.where(bg, label - 1, 0).long().reshape(N * C, H * W)  # (N*C, H*W) label index
    w_bg = bg.reshape(N * C, H * W).to(torch.int32)
    w_conflict = conflict.reshape(N * C, H * W).to(torch.int32)
    area = torch.zeros(N * C, H * W, dtype=torch.int32, device=mask_logits.device)
    area = area.scatter_add(1, idx, w_bg)  # (N*C, H*W): pixel count per label
    n_conflict = torch.zeros_like(area).scatter_add(1, idx, w_conflict)  # (N*C, H*W)

    small = (area.gather(1, idx) <= max_area) & (n_conflict.gather(1, idx) == 0)  # (N*C, H*W)
    is_hole = bg & small.reshape(N, C, H, W)
    return torch.where(is_hole, HOLE_LOGIT, mask_logits)
