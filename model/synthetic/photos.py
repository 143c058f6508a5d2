"""Crops of real photographs for the held-out "photo" families (model.synthetic.families).

The photographs are public-domain / CC0 sample images shipped with scikit-image, downsampled into one asset
(assets/photos.npz; assets/PHOTOS.md names each image, its source and its license). The file is read on first
use and cached, never at import: importing model stays free of I/O.
"""

from __future__ import annotations

import functools
import io
from importlib import resources

import numpy as np

ASSET = "assets/photos.npz"


@functools.lru_cache(maxsize=1)
def photos() -> tuple[np.ndarray, ...]:
    """The photographs, sorted by name, each (160, 160, 3) float32 RGB or (160, 160, 1) grey, in [0, 255]."""
    data = resources.files(__package__).joinpath(ASSET).read_bytes()
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        arrays = [npz[name] for name in sorted(npz.files)]
    return tuple((a if a.ndim == 3 else a[..., None]).astype(np.float32) for a in arrays)


def resize(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of (h, w, c) to (height, width, c), pixel centres aligned (float32)."""
    h, w = img.shape[:2]

    def axis(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        i0 = np.minimum(np.floor(pos).astype(np.int64), n_in - 2) if n_in > 1 else np.zeros(n_out, np.int64)
        return i0, np.minimum(i0 + 1, n_in - 1), (pos - i0).astype(np.float32)

    r0, r1, fr = axis(height, h)
    c0, c1, fc = axis(width, w)
    rows = img[r0] * (1 - fr)[:, None, None] + img[r1] * fr[:, None, None]
    return rows[:, c0] * (1 - fc)[None, :, None] + rows[:, c1] * fc[None, :, None]


def photo_crop(rng: np.random.Generator, height: int, width: int, share: tuple[float, float]) -> np.ndarray:
    """(height, width, 3) float32 in [0, 255]: a random photograph's crop (its side `share` of the photo's,
    aspect as asked), maybe mirrored, with a colour cast; grey photographs are tinted."""
    pick = photos()[int(rng.integers(len(photos())))]
    side = pick.shape[0]
    ch = int(np.clip(rng.uniform(*share) * side, 8, side))
    cw = int(np.clip(ch * width / height, 8, side))
    y0, x0 = int(rng.integers(0, side - ch + 1)), int(rng.integers(0, side - cw + 1))
    crop = pick[y0:y0 + ch, x0:x0 + cw]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    out = resize(crop, height, width)
    if out.shape[2] == 1:  # grey: a random tint, so the grey photographs are not all grey
        tint = rng.uniform(0.5, 1.0, 3).astype(np.float32)
        return out * tint / tint.max() + rng.uniform(0, 40)
    return out * rng.uniform(0.8, 1.2, 3).astype(np.float32)
