"""Surfaces of the synthetic objects and occluders (model.synthetic): periodic texture tiles by family.

A tile is (n, n, 3) uint8 with n a power of two (64, or 128 for photographs), periodic so that sprites and bars
can wrap texel coordinates with `& (n - 1)`. Every family but "photo" is two (or a few) colours mixed by a
pattern, plus texel grain. Pure numpy; the caller's `np.random.Generator` is the only randomness.
"""

from __future__ import annotations

import numpy as np

from .photos import photo_crop

TEXTURE_SIZE = 64  # texels per tile side of the drawn patterns; a power of two
PHOTO_TILE = 128  # photographs get bigger tiles: a big object wraps its photo less often
TEXTURE_KINDS = ("flat", "stripes", "checker", "dots", "noise")  # the original families (make_texture's default)
TEXTURE_FAMILIES = TEXTURE_KINDS + ("gradient", "photo", "voronoi")


def value_noise(rng: np.random.Generator, shape: tuple[int, int], cells: tuple[int, int],
                channels: int = 1) -> np.ndarray:
    """Smooth noise in [0, 1], (h, w, channels), periodic: random values on a torus of cells, interpolated."""
    grid = rng.random((cells[0], cells[1], channels))

    def axis(n: int, c: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pos = np.arange(n) * c / n
        i0 = np.floor(pos).astype(np.int64)
        f = pos - i0
        return i0 % c, (i0 + 1) % c, f * f * (3 - 2 * f)  # smoothstep: no creases along the grid lines

    r0, r1, fr = axis(shape[0], cells[0])
    c0, c1, fc = axis(shape[1], cells[1])
    rows = grid[r0] * (1 - fr)[:, None, None] + grid[r1] * fr[:, None, None]
    return rows[:, c0] * (1 - fc)[None, :, None] + rows[:, c1] * fc[None, :, None]


def random_color(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(15, 241, 3).astype(np.float64)


def _pattern(rng: np.random.Generator, kind: str, n: int) -> np.ndarray:
    """(n, n) mix in [0, 1] between a tile's two colours, periodic on the tile."""
    rr, cc = np.mgrid[0:n, 0:n]
    period = int(rng.choice([8, 16, 32]))  # divides n: the pattern stays periodic
    if kind == "flat":
        return np.zeros((n, n))
    if kind == "stripes":
        q = (rr, cc, rr + cc, rr - cc)[rng.integers(4)]
        return (np.mod(q, period) < period // 2).astype(np.float64)
    if kind == "checker":
        return ((rr // (period // 2) + cc // (period // 2)) % 2).astype(np.float64)
    if kind == "dots":
        d = np.hypot(np.mod(rr, period) - period / 2, np.mod(cc, period) - period / 2)
        return (d < period * rng.uniform(0.2, 0.4)).astype(np.float64)
    if kind == "noise":
        return value_noise(rng, (n, n), (4, 4))[..., 0]
    if kind == "gradient":  # a smooth triangle wave along an integer direction: periodic on the tile
        a, b = [(1, 0), (0, 1), (1, 1), (1, -1), (2, 1), (1, 2)][rng.integers(6)]
        q = np.mod((a * rr + b * cc) / n + rng.uniform(0, 1), 1.0)
        return 1 - np.abs(2 * q - 1)
    raise ValueError(f"unknown texture kind {kind!r}; known: {', '.join(TEXTURE_FAMILIES)}")


def _voronoi(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, n, 3) float: cells around random sites on the torus, each a jittered colour of a small palette,
    with darker borders."""
    sites = rng.random((int(rng.integers(6, 20)), 2)) * n
    rr, cc = np.mgrid[0:n, 0:n].astype(np.float64)
    dy = np.abs(rr[..., None] - sites[:, 0])
    dx = np.abs(cc[..., None] - sites[:, 1])
    d = np.hypot(np.minimum(dy, n - dy), np.minimum(dx, n - dx))  # wrapped distances: the tile is periodic
    order = np.sort(d, axis=-1)
    palette = np.stack([random_color(rng) for _ in range(int(rng.integers(2, 5)))])
    colors = palette[rng.integers(len(palette), size=len(sites))] + rng.normal(0, 12, (len(sites), 3))
    tile = colors[np.argmin(d, axis=-1)]
    border = (order[..., 1] - order[..., 0]) < rng.uniform(0.8, 2.0)
    return np.where(border[..., None], tile * 0.55, tile)


def make_texture(rng: np.random.Generator, kind: str | None = None) -> np.ndarray:
    """A periodic (n, n, 3) uint8 tile of family `kind` (default: one of TEXTURE_KINDS); n = TEXTURE_SIZE, or
    PHOTO_TILE for "photo"."""
    kind = kind or TEXTURE_KINDS[rng.integers(len(TEXTURE_KINDS))]
    n = TEXTURE_SIZE
    if kind == "photo":  # a photograph's crop: not periodic, its seam shows only on objects wider than a tile
        tile = photo_crop(rng, PHOTO_TILE, PHOTO_TILE, (0.3, 1.0))
        n = PHOTO_TILE
    elif kind == "voronoi":
        tile = _voronoi(rng, n)
    else:
        mix = _pattern(rng, kind, n)[..., None]
        tile = random_color(rng) * (1 - mix) + random_color(rng) * mix
    tile = tile + rng.normal(0, 6, (n, n, 3))
    return np.clip(tile, 0, 255).astype(np.uint8)


def tile_image(tile: np.ndarray, height: int, width: int, texel_px: float, offset: tuple[int, int]) -> np.ndarray:
    """(height, width, 3): `tile` repeated at `texel_px` pixels per texel from texel `offset` (mosaics)."""
    n = tile.shape[0]
    rows = (np.floor(np.arange(height) / texel_px).astype(np.int64) + offset[0]) & (n - 1)
    cols = (np.floor(np.arange(width) / texel_px).astype(np.int64) + offset[1]) & (n - 1)
    return tile[rows[:, None], cols[None, :]]
