"""Pixels of the synthetic videos (model.synthetic): tileable textures, star-shaped silhouettes, strips.

Pure numpy, no randomness of its own: every generator takes the caller's `np.random.Generator`.

A silhouette is star-shaped around its centre: a pixel belongs to it when its polar radius, in the object's
own rotated and squashed frame, is below `shape_radius(phi) * wobble(phi, t)`. That one representation
covers ellipses, polygons, stars and blobs, is vectorised over a bounding box, and gives a hard upper bound on
the object's extent (`max(sx, sy) * (1 + sum|wobble|)`), which the scene planner needs to hide an object
exactly behind an occluder or outside the frame. Pixels are hard-edged (no antialiasing) and tested at their
centres, so an owner map (which object, occluder or background owns each pixel) is exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TEXTURE_SIZE = 64  # texels per tile side; a power of two so wrapping is `& (TEXTURE_SIZE - 1)`
_WRAP = TEXTURE_SIZE - 1
SHAPE_KINDS = ("ellipse", "polygon", "star", "blob")
TEXTURE_KINDS = ("flat", "stripes", "checker", "dots", "noise")


@dataclass(frozen=True)
class Shape:
    """A star-shaped silhouette of unit circumradius (its largest radius is exactly 1 after `norm`)."""

    kind: str  # one of SHAPE_KINDS
    params: tuple[float, ...]  # ellipse: (aspect,); polygon: (sides,); star: (points, depth); blob: (k, a, phase)*
    norm: float = 1.0  # divides the raw radius so that its maximum over phi is 1


@dataclass(frozen=True)
class Wobble:
    """Non-rigid deformation: radius *= 1 + sum_j amp_j(t) cos(k_j phi + phase_j); amp_j(t) is per frame."""

    orders: tuple[int, ...]  # k_j: 2 = squeeze, 3 = triangle-ish bulge, ...
    phases: tuple[float, ...]  # phase_j of each order around the outline


# ---------------------------------------------------------------------------------------------- shapes

def _raw_radius(kind: str, params: tuple[float, ...], phi: np.ndarray) -> np.ndarray:
    if kind == "ellipse":
        b = params[0]  # minor/major axis ratio, major along the object's x axis
        return b / np.sqrt((b * np.cos(phi)) ** 2 + np.sin(phi) ** 2)
    if kind == "polygon":
        sector = 2 * np.pi / params[0]
        return np.cos(sector / 2) / np.cos(np.mod(phi, sector) - sector / 2)
    if kind == "star":
        points, depth = params
        tri = np.abs(np.mod(phi * points / (2 * np.pi), 1.0) * 2 - 1)  # 1 at a tip, 0 between tips
        return 1 - depth + depth * tri
    if kind == "blob":
        out = np.ones_like(phi)
        for k, amp, phase in np.reshape(params, (-1, 3)):
            out = out + amp * np.cos(k * phi + phase)
        return out
    raise ValueError(f"unknown shape kind {kind!r}; known: {', '.join(SHAPE_KINDS)}")


def make_shape(rng: np.random.Generator, kind: str | None = None) -> Shape:
    kind = kind or SHAPE_KINDS[rng.integers(len(SHAPE_KINDS))]
    if kind == "ellipse":
        params: tuple[float, ...] = (float(rng.uniform(0.45, 1.0)),)
    elif kind == "polygon":
        params = (float(rng.integers(3, 7)),)
    elif kind == "star":
        params = (float(rng.integers(4, 8)), float(rng.uniform(0.3, 0.55)))
    else:  # the amplitudes sum below 0.45, so the radius never gets near 0 (the shape stays one piece)
        ks = rng.choice(np.arange(2, 6), size=3, replace=False)
        params = tuple(float(v) for k in ks for v in (k, rng.uniform(0.03, 0.15), rng.uniform(0, 2 * np.pi)))
    phi = np.linspace(0, 2 * np.pi, 4096, endpoint=False)
    return Shape(kind, params, float(_raw_radius(kind, params, phi).max()))


def shape_radius(shape: Shape, phi: np.ndarray) -> np.ndarray:
    return _raw_radius(shape.kind, shape.params, phi) / shape.norm


def make_wobble(rng: np.random.Generator, terms: int = 2) -> Wobble:
    orders = tuple(int(k) for k in rng.choice(np.arange(2, 6), size=terms, replace=False))
    return Wobble(orders, tuple(float(p) for p in rng.uniform(0, 2 * np.pi, terms)))


def wobble_factor(wobble: Wobble, amps: np.ndarray, phi: np.ndarray) -> np.ndarray:
    out = np.ones_like(phi)
    for k, phase, amp in zip(wobble.orders, wobble.phases, amps):
        out = out + amp * np.cos(k * phi + phase)
    return out


def sprite_extent(sx: np.ndarray, sy: np.ndarray, amps: np.ndarray) -> np.ndarray:
    """Upper bound (px) of a sprite's distance from its centre to any pixel centre it owns; +1 px of slack."""
    return np.maximum(sx, sy) * (1 + np.abs(amps).sum(axis=-1)) + 1.0


# ---------------------------------------------------------------------------------------------- drawing

@dataclass(frozen=True, eq=False)
class Sprite:
    """What is needed to draw one object or occluder blob: its silhouette, deformation and surface."""

    shape: Shape
    wobble: Wobble
    texture: np.ndarray  # (TEXTURE_SIZE, TEXTURE_SIZE, 3) uint8, periodic
    texels_per_unit: float  # texture density in the object's frame: the texture moves, turns and scales with it


def draw_sprite(img: np.ndarray, owner: np.ndarray, code: int, sprite: Sprite, cx: float, cy: float,
                angle: float, sx: float, sy: float, amps: np.ndarray) -> int:
    """Paint `sprite` over img (H, W, 3) and owner (H, W); returns its silhouette's area in the frame.

    (cx, cy) is the centre in screen pixels, `angle` its rotation (rad), sx / sy its radii (px) along its own
    axes, `amps` the per-frame wobble amplitudes.
    """
    height, width = owner.shape
    ext = float(sprite_extent(np.float64(sx), np.float64(sy), np.asarray(amps)))
    x0, x1 = max(int(np.floor(cx - ext)), 0), min(int(np.ceil(cx + ext)) + 1, width)
    y0, y1 = max(int(np.floor(cy - ext)), 0), min(int(np.ceil(cy + ext)) + 1, height)
    if x0 >= x1 or y0 >= y1:
        return 0
    dx = (np.arange(x0, x1) + 0.5 - cx)[None, :]  # pixel centres
    dy = (np.arange(y0, y1) + 0.5 - cy)[:, None]
    cos, sin = np.cos(angle), np.sin(angle)
    u = (cos * dx + sin * dy) / sx  # the object's own frame, unit radius
    v = (cos * dy - sin * dx) / sy
    phi = np.arctan2(v, u)
    inside = np.hypot(u, v) < shape_radius(sprite.shape, phi) * wobble_factor(sprite.wobble, amps, phi)
    k = sprite.texels_per_unit
    rows = np.floor(v[inside] * k).astype(np.int64) & _WRAP
    cols = np.floor(u[inside] * k).astype(np.int64) & _WRAP
    img[y0:y1, x0:x1][inside] = sprite.texture[rows, cols]
    owner[y0:y1, x0:x1][inside] = code
    return int(np.count_nonzero(inside))


@dataclass(frozen=True, eq=False)
class Strip:
    """A straight foreground bar across the whole frame (a pole, a beam), fixed in world coordinates."""

    normal_angle: float  # direction (rad) of the bar's normal; the bar runs perpendicular to it
    offset: float  # signed distance (px) of the bar's centre line from the world origin along the normal
    width: float  # px

    def distance(self, wx: np.ndarray, wy: np.ndarray) -> np.ndarray:
        """Signed distance of world points from the centre line (the bar is |distance| < width / 2)."""
        return np.cos(self.normal_angle) * wx + np.sin(self.normal_angle) * wy - self.offset


def draw_strip(img: np.ndarray, owner: np.ndarray, code: int, strip: Strip, texture: np.ndarray,
               texel_px: float, cam_x: float, cam_y: float) -> None:
    """Paint the bar; the camera offset (cam_x, cam_y) maps screen pixel centres to world coordinates."""
    height, width = owner.shape
    wx = (np.arange(width) + 0.5 + cam_x)[None, :]
    wy = (np.arange(height) + 0.5 + cam_y)[:, None]
    inside = np.abs(strip.distance(wx, wy)) < strip.width / 2
    rows, cols = np.nonzero(inside)
    if rows.size == 0:
        return
    px, py = cols + 0.5 + cam_x, rows + 0.5 + cam_y  # world coordinates of the bar's pixels only
    across = strip.distance(px, py)
    along = -np.sin(strip.normal_angle) * px + np.cos(strip.normal_angle) * py
    texel_rows = np.floor(across / texel_px).astype(np.int64) & _WRAP
    texel_cols = np.floor(along / texel_px).astype(np.int64) & _WRAP
    img[rows, cols] = texture[texel_rows, texel_cols]
    owner[rows, cols] = code


# ---------------------------------------------------------------------------------------------- textures

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


def make_texture(rng: np.random.Generator, kind: str | None = None) -> np.ndarray:
    """A (TEXTURE_SIZE, TEXTURE_SIZE, 3) uint8 periodic tile: two colours in a pattern, plus texel grain."""
    kind = kind or TEXTURE_KINDS[rng.integers(len(TEXTURE_KINDS))]
    n = TEXTURE_SIZE
    rr, cc = np.mgrid[0:n, 0:n]
    period = int(rng.choice([8, 16, 32]))  # divides n: the pattern stays periodic
    if kind == "flat":
        mix = np.zeros((n, n))
    elif kind == "stripes":
        q = (rr, cc, rr + cc, rr - cc)[rng.integers(4)]
        mix = (np.mod(q, period) < period // 2).astype(np.float64)
    elif kind == "checker":
        mix = ((rr // (period // 2) + cc // (period // 2)) % 2).astype(np.float64)
    elif kind == "dots":
        d = np.hypot(np.mod(rr, period) - period / 2, np.mod(cc, period) - period / 2)
        mix = (d < period * rng.uniform(0.2, 0.4)).astype(np.float64)
    elif kind == "noise":
        mix = value_noise(rng, (n, n), (4, 4))[..., 0]
    else:
        raise ValueError(f"unknown texture kind {kind!r}; known: {', '.join(TEXTURE_KINDS)}")
    a, b = random_color(rng), random_color(rng)
    tile = a * (1 - mix[..., None]) + b * mix[..., None] + rng.normal(0, 6, (n, n, 3))
    return np.clip(tile, 0, 255).astype(np.uint8)


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
