"""Video object segmentation metrics as defined by DAVIS (Perazzi et al. 2016; DAVIS 2017 evaluation).

- J, region similarity: the Jaccard index (IoU) of the predicted and ground-truth masks. Both empty -> 1.
- F, boundary accuracy: the F-measure of boundary precision and recall. Boundaries are 1-pixel maps from
  `seg2bmap`; a boundary pixel of one mask counts as matched when a boundary pixel of the other lies within
  a disk of radius ceil(bound_th * image diagonal) (bound_th >= 1 is taken as a radius in pixels).
  Empty boundary maps follow DAVIS: both empty -> P = R = 1 (F = 1); only the prediction's empty -> P = 1,
  R = 0; only the ground truth's empty -> P = 0, R = 1; either way F = 0. An empty mask has an empty boundary,
  and so does a mask that fills the whole image (seg2bmap never draws the image border).
- Per object: J and F are averaged over its frames, J&F = (J + F) / 2. A dataset's J&F is, as in the DAVIS
  2017 evaluation, the mean over all objects of all videos (`davis_summary`; the mean over videos of each
  video's object mean is reported beside it).
- Reappearance (ours, not DAVIS): the first frames after an object comes back from a long occlusion, where
  a tracker's memory is tested hardest (`reappearance_frames`).

Pure numpy, no I/O; masks are 2-D arrays (bool or 0/1). Written from the definitions, without OpenCV or
scikit-image: the disk dilation is exact (the same pixel set as dilating with skimage's `disk(r)`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import SamstreamError


class MetricsError(SamstreamError, ValueError):
    """An input the metrics cannot score; `value` holds the offending value."""

    def __init__(self, message: str, value=None):
        self.value = value
        super().__init__(message)


def _mask_pair(pred, gt) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.ndim != 2 or pred.shape != gt.shape:
        raise MetricsError(f"pred and gt must be 2-D masks of one shape, got {pred.shape} and {gt.shape}",
                           (pred.shape, gt.shape))
    return pred != 0, gt != 0


# ---------------------------------------------------------------------------------------------- J


def jaccard(pred, gt) -> float:
    """Region similarity J: |pred & gt| / |pred | gt|; 1.0 when both masks are empty (DAVIS)."""
    pred, gt = _mask_pair(pred, gt)
    union = np.count_nonzero(pred | gt)
    if union == 0:
        return 1.0
    return np.count_nonzero(pred & gt) / union


# ---------------------------------------------------------------------------------------------- F


def seg2bmap(mask) -> np.ndarray:
    """The 1-pixel boundary map of a mask (Martin et al.'s seg2bmap, as DAVIS uses it).

    A pixel is a boundary pixel when its value differs from any of its right, lower and lower-right
    neighbours that lie inside the image. The boundary therefore sits half a pixel towards the origin from
    the true edge (a filled rectangle rows a..b, cols c..d gives the outline of rows a-1..b, cols c-1..d),
    and the image border is never a boundary: an all-ones mask has none.
    """
    m = np.asarray(mask)
    if m.ndim != 2:
        raise MetricsError(f"mask must be 2-D, got shape {m.shape}", m.shape)
    m = m != 0
    b = np.zeros_like(m)
    b[:, :-1] |= m[:, :-1] != m[:, 1:]
    b[:-1, :] |= m[:-1, :] != m[1:, :]
    b[:-1, :-1] |= m[:-1, :-1] != m[1:, 1:]
    return b


def boundary_radius(shape: tuple[int, int], bound_th: float = 0.008) -> float:
    """DAVIS's tolerance: bound_th >= 1 is a radius in pixels, else ceil(bound_th * diagonal)."""
    if not (isinstance(bound_th, (int, float, np.floating, np.integer)) and math.isfinite(bound_th)
            and bound_th > 0):
        raise MetricsError(f"bound_th must be a positive number, got {bound_th!r}", bound_th)
    if bound_th >= 1:
        return float(bound_th)
    return float(math.ceil(bound_th * math.hypot(shape[0], shape[1])))


def _hdilate(b: np.ndarray, half: int) -> np.ndarray:
    """Horizontal dilation by a segment of 2*half+1 pixels: window sums from one cumulative sum."""
    if half == 0:
        return b
    w = b.shape[1]
    csum = np.zeros((b.shape[0], w + 1), np.int32)
    np.cumsum(b, axis=1, out=csum[:, 1:])
    x = np.arange(w)
    return csum[:, np.minimum(x + half + 1, w)] > csum[:, np.maximum(x - half, 0)]


def dilate_disk(bmap, radius: float) -> np.ndarray:
    """Binary dilation by the disk {(dy, dx) integer: dy^2 + dx^2 <= radius^2}; outside the image is 0.

    Exact, in O(radius * pixels): the disk is a stack of horizontal segments, one per row offset dy, of
    half-width floor(sqrt(radius^2 - dy^2)); each distinct width is one cumulative-sum pass, and the rows
    are OR-ed in with a vertical shift.
    """
    b = np.asarray(bmap) != 0
    if b.ndim != 2:
        raise MetricsError(f"bmap must be 2-D, got shape {b.shape}", b.shape)
    if not (math.isfinite(radius) and radius >= 0):
        raise MetricsError(f"radius must be a finite number >= 0, got {radius!r}", radius)
    r2 = radius * radius
    reach = math.floor(radius)
    out = np.zeros_like(b)
    rows: dict[int, np.ndarray] = {}
    h = b.shape[0]
    for dy in range(-reach, reach + 1):
        half = math.isqrt(math.floor(r2 - dy * dy))  # integer arithmetic: no sqrt rounding at the rim
        row = rows.get(half)
        if row is None:
            row = rows[half] = _hdilate(b, half)
        if abs(dy) >= h:
            continue
        # out[y] |= row[y + dy] (the disk is symmetric, so the sign convention does not matter)
        if dy >= 0:
            out[:h - dy] |= row[dy:]
        else:
            out[-dy:] |= row[:h + dy]
    return out


def _support(a: np.ndarray, b: np.ndarray) -> tuple[slice, slice]:
    """The box of the set pixels of a | b (not both empty), grown by one pixel where the image allows."""
    any_set = a | b
    ys, xs = np.flatnonzero(any_set.any(axis=1)), np.flatnonzero(any_set.any(axis=0))
    return slice(max(ys[0] - 1, 0), ys[-1] + 2), slice(max(xs[0] - 1, 0), xs[-1] + 2)


def boundary_precision_recall(pred, gt, bound_th: float = 0.008) -> tuple[float, float]:
    """Boundary precision and recall (DAVIS conventions for empty boundaries, see the module docstring)."""
    pred, gt = _mask_pair(pred, gt)
    radius = boundary_radius(pred.shape, bound_th)  # from the whole image, before any crop
    if not (pred.any() or gt.any()):
        return 1.0, 1.0
    # Crop to both masks plus one background pixel: seg2bmap is unchanged there (a pixel's boundary flag
    # looks only at neighbours inside the crop, and outside it every pixel and neighbour is background, or
    # the crop edge is the image edge). Matches are looked up at boundary pixels and come only from boundary
    # pixels, all inside the crop, so dilating with zeros past its edge is exact too. Small objects get cheap.
    ys, xs = _support(pred, gt)
    pb, gb = seg2bmap(pred[ys, xs]), seg2bmap(gt[ys, xs])
    n_pred, n_gt = np.count_nonzero(pb), np.count_nonzero(gb)
    if n_pred == 0 or n_gt == 0:
        return (1.0 if n_pred == 0 else 0.0), (1.0 if n_gt == 0 else 0.0)
    precision = np.count_nonzero(pb & dilate_disk(gb, radius)) / n_pred
    recall = np.count_nonzero(gb & dilate_disk(pb, radius)) / n_gt
    return precision, recall


def boundary_f(pred, gt, bound_th: float = 0.008) -> float:
    """Boundary accuracy F = 2PR / (P + R), 0 when P + R = 0; 1.0 when both masks have no boundary."""
    precision, recall = boundary_precision_recall(pred, gt, bound_th)
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


# ---------------------------------------------------------------------------------------------- frames


def frame_scores(pred, gt, bound_th: float = 0.008) -> tuple[float, float]:
    """(J, F) of one frame; identical masks short-cut to (1, 1), which both definitions give."""
    pred, gt = _mask_pair(pred, gt)
    if np.array_equal(pred, gt):
        return 1.0, 1.0
    return jaccard(pred, gt), boundary_f(pred, gt, bound_th)


def reappearance_frames(gt_visible, min_hidden: int = 5, window: int = 5) -> list[int]:
    """Positions t (0-based, sorted) in the first `window` frames after each reappearance.

    A reappearance is a frame where the object is visible, was hidden in the `min_hidden` or more frames
    just before it, and was visible at some frame before those (a first appearance is not one). All frames
    of the window count, whether or not the object is visible there (vanishing again must be scored too);
    windows are clipped at the end of the sequence and overlapping windows are merged.
    """
    for name, value in (("min_hidden", min_hidden), ("window", window)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise MetricsError(f"{name} must be an int >= 1, got {value!r}", value)
    vis = np.asarray(gt_visible)
    if vis.ndim != 1:
        raise MetricsError(f"gt_visible must be 1-D (one flag per frame), got shape {vis.shape}", vis.shape)
    shown = np.flatnonzero(vis != 0)
    hidden_before = np.diff(shown) - 1  # hidden frames between consecutive visible ones
    starts = shown[1:][hidden_before >= min_hidden]
    frames = np.zeros(len(vis), bool)
    for t in starts:
        frames[t:t + window] = True
    return np.flatnonzero(frames).tolist()


# ---------------------------------------------------------------------------------------------- means


@dataclass(frozen=True)
class ObjectScore:
    """One object's means over the frames scored: J, F, J&F = (J + F) / 2 (NaN when no frames)."""

    J: float
    F: float
    JF: float
    frames: int


def object_score(j_frames, f_frames) -> ObjectScore:
    """Mean J and F over an object's frames, then J&F, as DAVIS does per object."""
    j, f = np.asarray(j_frames, np.float64), np.asarray(f_frames, np.float64)
    if j.ndim != 1 or j.shape != f.shape:
        raise MetricsError(f"j_frames and f_frames must be 1-D of one length, got {j.shape} and {f.shape}",
                           (j.shape, f.shape))
    if len(j) == 0:
        return ObjectScore(math.nan, math.nan, math.nan, 0)
    jm, fm = float(j.mean()), float(f.mean())
    return ObjectScore(jm, fm, (jm + fm) / 2, len(j))


def davis_summary(video_ids, j_means, f_means) -> dict[str, float]:
    """Dataset means from per-object means. NaN objects (nothing scored) are left out.

    J, F, JF: the DAVIS 2017 numbers, a mean over all objects pooled across videos. JF_video_mean: each
    video's mean over its objects, then the mean over videos (weights short and long videos alike).
    """
    vids = np.asarray(video_ids, object)
    j, f = np.asarray(j_means, np.float64), np.asarray(f_means, np.float64)
    if not (vids.ndim == j.ndim == f.ndim == 1 and len(vids) == len(j) == len(f)):
        raise MetricsError(f"video_ids, j_means, f_means must be 1-D of one length, got {vids.shape}, "
                           f"{j.shape}, {f.shape}", (vids.shape, j.shape, f.shape))
    keep = ~(np.isnan(j) | np.isnan(f))
    vids, j, f = vids[keep], j[keep], f[keep]
    if len(j) == 0:
        return {"J": math.nan, "F": math.nan, "JF": math.nan, "JF_video_mean": math.nan, "objects": 0,
                "videos": 0}
    jf = (j + f) / 2
    per_video = [jf[vids == v].mean() for v in dict.fromkeys(vids.tolist())]
    return {"J": float(j.mean()), "F": float(f.mean()), "JF": float((j.mean() + f.mean()) / 2),
            "JF_video_mean": float(np.mean(per_video)), "objects": int(len(j)), "videos": len(per_video)}
