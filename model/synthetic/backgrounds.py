"""Backgrounds of the synthetic videos (model.synthetic), by family: what the objects move over.

A background is one (height, width, 3) uint8 image, a little larger than the frame; the camera's drift crops
it. Pure numpy; the caller's `np.random.Generator` is the only randomness.
"""

from __future__ import annotations

import numpy as np

from .photos import photo_crop
from .textures import TEXTURE_FAMILIES, make_texture, random_color, tile_image, value_noise

BACKGROUND_FAMILIES = ("scenery", "mosaic", "gradient", "photo", "bokeh")


def background_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """(height, width, 3) uint8 scenery: coarse colour fields, a faint pattern, fine grain."""
    coarse = value_noise(rng, (height, width), (3, 3), 1)[..., 0]
    mid = value_noise(rng, (height, width), (12, 12), 3)
    fine = value_noise(rng, (height, width), (max(height // 4, 1), max(width // 4, 1)), 1)
    a, b = random_color(rng), random_color(rng)
    img = a * (1 - coarse[..., None]) + b * coarse[..., None]
    img = img + (mid - 0.5) * rng.uniform(20, 70) + (fine - 0.5) * rng.uniform(10, 40)
    if rng.random() < 0.5:  # a faint tiled floor / wallpaper so the camera drift is visible everywhere
        rr, cc = np.mgrid[0:height, 0:width]
        period = int(rng.integers(12, 40))
        img = img + 12.0 * ((rr // period + cc // period) % 2)[..., None]
    return np.clip(img, 0, 255).astype(np.uint8)


def _mosaic(rng: np.random.Generator, height: int, width: int, textures: tuple[str, ...],
            used: list[str]) -> np.ndarray:
    """Axis-aligned rectangles of flat colour or of a texture (its family appended to `used`), overlapping:
    "plain shapes on a blocky background" is what a model trained on smooth scenery failed on."""
    img = np.empty((height, width, 3))
    img[:] = random_color(rng)
    for _ in range(int(rng.integers(8, 40))):
        h = max(int(rng.uniform(0.05, 0.45) * height), 2)
        w = max(int(rng.uniform(0.05, 0.45) * width), 2)
        y0, x0 = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
        if textures and rng.random() < 0.35:
            used.append(textures[int(rng.integers(len(textures)))])
            tile = make_texture(rng, used[-1])
            img[y0:y0 + h, x0:x0 + w] = tile_image(tile, h, w, float(rng.uniform(1, 3)), tuple(rng.integers(0, 64, 2)))
        else:
            img[y0:y0 + h, x0:x0 + w] = random_color(rng)
    return img + rng.normal(0, 3, (height, width, 1))


def _gradient(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A linear blend of two or three colours along a random direction, a vignette, faint noise."""
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    angle = rng.uniform(0, 2 * np.pi)
    q = np.cos(angle) * xx + np.sin(angle) * yy
    q = (q - q.min()) / max(np.ptp(q), 1e-9)
    stops = np.stack([random_color(rng) for _ in range(int(rng.integers(2, 4)))])
    pos = q * (len(stops) - 1)
    i = np.minimum(np.floor(pos).astype(np.int64), len(stops) - 2)
    f = (pos - i)[..., None]
    img = stops[i] * (1 - f) + stops[i + 1] * f
    r = np.hypot(xx - xx.mean(), yy - yy.mean())
    img = img * (1 - rng.uniform(0, 0.5) * (r / r.max())[..., None] ** 2)
    return img + (value_noise(rng, (height, width), (8, 8), 1) - 0.5) * rng.uniform(5, 30)


def _bokeh(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Out-of-focus lights: soft discs of colour blended over a dark smooth field."""
    img = background_image(rng, height, width).astype(np.float64) * rng.uniform(0.2, 0.5)
    short = min(height, width)
    for _ in range(int(rng.integers(15, 45))):
        r = rng.uniform(0.02, 0.12) * short
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        x0, x1 = max(int(cx - r - 2), 0), min(int(cx + r + 3), width)
        y0, y1 = max(int(cy - r - 2), 0), min(int(cy + r + 3), height)
        if x0 >= x1 or y0 >= y1:
            continue
        d = np.hypot(np.arange(x0, x1)[None, :] + 0.5 - cx, np.arange(y0, y1)[:, None] + 0.5 - cy)
        alpha = np.clip((r - d) / max(0.3 * r, 1.0), 0, 1)[..., None] * rng.uniform(0.3, 0.8)
        patch = img[y0:y1, x0:x1]
        img[y0:y1, x0:x1] = patch * (1 - alpha) + (random_color(rng) * 0.5 + 120) * alpha
    return img


def make_background(rng: np.random.Generator, kind: str, height: int, width: int,
                    textures: tuple[str, ...] = TEXTURE_FAMILIES) -> tuple[np.ndarray, tuple[str, ...]]:
    """((height, width, 3) uint8 background of family `kind`, the texture families drawn on it): a mosaic's
    textured blocks use `textures` only (the families of the video's split)."""
    used: list[str] = []
    if kind == "scenery":
        return background_image(rng, height, width), ()
    if kind == "mosaic":
        img = _mosaic(rng, height, width, textures, used)
    elif kind == "gradient":
        img = _gradient(rng, height, width)
    elif kind == "photo":  # a photograph's crop, enlarged: soft, like a shallow depth of field
        img = photo_crop(rng, height, width, (0.5, 1.0)) + rng.normal(0, 2, (height, width, 1))
    elif kind == "bokeh":
        img = _bokeh(rng, height, width)
    else:
        raise ValueError(f"unknown background family {kind!r}; known: {', '.join(BACKGROUND_FAMILIES)}")
    return np.clip(img, 0, 255).astype(np.uint8), tuple(used)
