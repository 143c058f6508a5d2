"""Silhouettes of the synthetic videos (model.synthetic) and their drawing: sprites (objects, occluder blobs)
and strips (foreground bars). Textures and backgrounds live in model.synthetic.textures / .backgrounds (and are
re-exported here for older callers).

Pure numpy, no randomness of its own: every generator takes the caller's `np.random.Generator`.

A silhouette lives in the object's own rotated and squashed unit frame (u, v), inside the unit disc. The
star-shaped families (SHAPE_KINDS: ellipses, polygons, stars, blobs) are a polar radius function: a point
belongs when its radius is below `shape_radius(phi)`. The others (model.synthetic.outlines: thin sticks,
concave shapes, rings, glyphs) are a membership test of (u, v). A deformation (`Wobble`) scales the radius
by `wobble(phi, t)`; for an outline the point is pulled back by that factor before the test. Either way the
object never reaches beyond `max(sx, sy) * (1 + sum|wobble|)` (`sprite_extent`), the bound the scene planner
needs to hide an object exactly behind an occluder or outside the frame. Pixels are hard-edged (no
antialiasing) and tested at their centres, so an owner map (which object, occluder or background owns each
pixel) is exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .backgrounds import background_image
from .outlines import OUTLINE_FAMILIES, outline_inside, outline_params
from .textures import TEXTURE_KINDS, TEXTURE_SIZE, make_texture, random_color, value_noise

SHAPE_KINDS = ("ellipse", "polygon", "star", "blob")  # star-shaped: a polar radius function
SHAPE_FAMILIES = SHAPE_KINDS + OUTLINE_FAMILIES

# The texture and background helpers are re-exported for callers of the old module (benchmarks.host_side).
__all__ = [
    "PRIMITIVES", "SHAPE_FAMILIES", "SHAPE_KINDS", "TEXTURE_KINDS", "TEXTURE_SIZE", "Shape", "Sprite", "Strip",
    "Wobble", "background_image", "draw_flat", "draw_sprite", "draw_strip", "make_shape", "make_texture", "make_wobble", "random_color",
    "shape_radius", "silhouette", "sprite_extent", "unit_measures", "value_noise", "wobble_factor",
]


@dataclass(frozen=True)
class Shape:
    """A silhouette inside the unit disc: star-shaped ones (SHAPE_KINDS) reach it exactly (after `norm`)."""

    kind: str  # its family, one of SHAPE_FAMILIES
    # ellipse: (aspect,); polygon: (sides,); star: (points, depth); blob: (k, a, phase)*; outlines: see
    # model.synthetic.outlines.outline_params
    params: tuple[float, ...]
    norm: float = 1.0  # star-shaped: divides the raw radius so that its maximum over phi is 1


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
    """A random silhouette of family `kind` (default: one of the star-shaped SHAPE_KINDS)."""
    kind = kind or SHAPE_KINDS[rng.integers(len(SHAPE_KINDS))]
    if kind in OUTLINE_FAMILIES:
        return Shape(kind, outline_params(rng, kind))
    if kind == "ellipse":
        params: tuple[float, ...] = (float(rng.uniform(0.45, 1.0)),)
    elif kind == "polygon":
        params = (float(rng.integers(3, 7)),)
    elif kind == "star":
        params = (float(rng.integers(4, 8)), float(rng.uniform(0.3, 0.55)))
    elif kind == "blob":  # the amplitudes sum below 0.45, so the radius never gets near 0 (one piece)
        ks = rng.choice(np.arange(2, 6), size=3, replace=False)
        params = tuple(float(v) for k in ks for v in (k, rng.uniform(0.03, 0.15), rng.uniform(0, 2 * np.pi)))
    else:
        raise ValueError(f"unknown shape family {kind!r}; known: {', '.join(SHAPE_FAMILIES)}")
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


def silhouette(shape: Shape, wobble: Wobble, amps: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Which points (u, v) of the object's unit frame (deformed by `wobble` at amplitudes `amps`) it covers."""
    phi = np.arctan2(v, u)
    w = wobble_factor(wobble, amps, phi)
    if shape.kind in SHAPE_KINDS:
        return np.hypot(u, v) < shape_radius(shape, phi) * w
    # The point pulled back by w: in iff the outline holds it, and the outline lies within radius 1, so r < w.
    return outline_inside(shape.kind, shape.params, u / w, v / w)


def unit_measures(shape: Shape, samples: int = 64) -> tuple[float, float]:
    """(area, inradius) of the undeformed silhouette in unit-frame units (the unit disc: pi, 1), sampled on a
    grid; the inradius (its thickest point's distance from the edge) counts 8-neighbour erosion steps, which
    never overestimate it (a 3x3 square fits in a disc of radius sqrt 2 < 2 steps)."""
    c = (np.arange(samples) + 0.5) / samples * 2 - 1
    inside = np.pad(silhouette(shape, Wobble((), ()), np.zeros(0), c[None, :], c[:, None]), 1)
    area, steps = float(inside.mean() * 4), 0
    while True:
        rows = inside[:-2] & inside[1:-1] & inside[2:]  # separable: a 3x3 minimum is a 3-row then a 3-column one
        inner = rows[:, :-2] & rows[:, 1:-1] & rows[:, 2:]
        if not inner.any():
            return area, steps * 2 / samples
        inside = np.pad(inner, 1)
        steps += 1


def sprite_extent(sx: np.ndarray, sy: np.ndarray, amps: np.ndarray) -> np.ndarray:
    """Upper bound (px) of a sprite's distance from its centre to any pixel centre it owns; +1 px of slack."""
    return np.maximum(sx, sy) * (1 + np.abs(amps).sum(axis=-1)) + 1.0


# ---------------------------------------------------------------------------------------------- drawing

@dataclass(frozen=True, eq=False)
class Sprite:
    """What is needed to draw one object or occluder blob: its silhouette, deformation and surface."""

    shape: Shape
    wobble: Wobble
    texture: np.ndarray  # (n, n, 3) uint8 with n a power of two, periodic (model.synthetic.textures)
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
    inside = silhouette(sprite.shape, sprite.wobble, amps, u, v)
    k, wrap = sprite.texels_per_unit, sprite.texture.shape[0] - 1
    rows = np.floor(v[inside] * k).astype(np.int64) & wrap
    cols = np.floor(u[inside] * k).astype(np.int64) & wrap
    img[y0:y1, x0:x1][inside] = sprite.texture[rows, cols]
    owner[y0:y1, x0:x1][inside] = code
    return int(np.count_nonzero(inside))


# Fixed silhouettes for hand-scripted scenes (tests/videos.py, jobs/benchmark/scene.py): with no rotation, a
# "disc" of radii (sx, sy) is an axis-aligned ellipse, a "square" of radii (sx, sy) a rectangle of half sides
# (sx, sy) / sqrt 2 (a bar of aspect 1, its corners on the unit circle).
PRIMITIVES = {"disc": Shape("ellipse", (1.0,)), "square": Shape("thin", (1.0, 1.0))}


def draw_flat(img: np.ndarray, owner: np.ndarray, code: int, shape: Shape, color, cx: float, cy: float,
              sx: float, sy: float, angle: float = 0.0) -> int:
    """Paint an undeformed `shape` in one flat `color` (draw_sprite's other arguments); returns its area."""
    texture = np.broadcast_to(np.asarray(color, np.uint8), (TEXTURE_SIZE, TEXTURE_SIZE, 3))
    return draw_sprite(img, owner, code, Sprite(shape, Wobble((), ()), texture, 1.0), cx, cy, angle, sx, sy,
                       np.zeros(0))


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
    wrap = texture.shape[0] - 1
    texel_rows = np.floor(across / texel_px).astype(np.int64) & wrap
    texel_cols = np.floor(along / texel_px).astype(np.int64) & wrap
    img[rows, cols] = texture[texel_rows, texel_cols]
    owner[rows, cols] = code
