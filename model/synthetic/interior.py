"""A point well inside a mask: where a synthetic click prompt goes."""

from __future__ import annotations

import numpy as np

from .scene import SyntheticError


def _erode(m: np.ndarray, diagonal: bool) -> np.ndarray:
    """One step of binary erosion (4- or 8-neighbourhood); `m` has a False border that stays False."""
    out = np.zeros_like(m)
    core = m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
    if diagonal:
        core &= m[:-2, :-2] & m[:-2, 2:] & m[2:, :-2] & m[2:, 2:]
    out[1:-1, 1:-1] = core
    return out


def interior_point(mask: np.ndarray) -> tuple[int, int]:
    """(x, y) of a pixel of `mask` far from its boundary (the frame's edge counts as boundary).

    Erodes until nothing is left, alternating 4- and 8-neighbourhoods (an octagonal approximation of the
    Euclidean distance transform), then takes the last survivor closest to the survivors' centroid.
    """
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        raise SyntheticError("cannot pick a point inside an empty mask", 0)
    y0, x0 = ys.min(), xs.min()
    m = np.pad(mask[y0:ys.max() + 1, x0:xs.max() + 1], 1)
    step = 0
    while True:
        eroded = _erode(m, diagonal=step % 2 == 1)
        if not eroded.any():
            break
        m, step = eroded, step + 1
    ry, rx = np.nonzero(m)
    best = int(np.argmin((ry - ry.mean()) ** 2 + (rx - rx.mean()) ** 2))
    return int(rx[best] + x0 - 1), int(ry[best] + y0 - 1)
