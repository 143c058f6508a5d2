"""Silhouettes that are not star-shaped around their centre (model.synthetic.shapes draws them): thin sticks and
bars, concave shapes (crescents, L and U shapes, slotted discs), rings, and glyphs (letters and digits).

Each is a membership test in the object's own unit frame: `outline_inside(kind, params, u, v)` says which
points (u, v) belong to it. Every outline lies inside the unit disc (|(u, v)| < 1), so the extent bound of
model.synthetic.shapes (`sprite_extent`) holds for them as for the star-shaped ones, and the scene planner can
hide them exactly. A glyph is a bitmap: Pillow's built-in font (FreeType, `ImageFont.load_default(size=...)`,
Pillow >= 10.1) rendered once per character, sampled bilinearly; the mask is the sampled coverage > 0.5.
"""

from __future__ import annotations

import functools

import numpy as np

OUTLINE_FAMILIES = ("thin", "concave", "ring", "glyph")
THIN_VARIANTS = ("capsule", "bar")
CONCAVE_VARIANTS = ("crescent", "ell", "u", "slot")
RING_VARIANTS = ("round", "square")
GLYPHS = "ABCDEFGHJKLMNPQRSTUVWXYZ234579&?#@%"  # no I, O, 0, 1, 6, 8: too close to bars, rings and blobs
_GLYPH_CANVAS = 96  # px: the bitmap a glyph is rendered into (font size 3/4 of it)


def outline_params(rng: np.random.Generator, kind: str) -> tuple[float, ...]:
    """Random parameters of an outline of family `kind` (its first parameter is the variant, if any)."""
    if kind == "thin":  # aspect (length / width) log-uniform in [4, 12]
        return float(rng.integers(len(THIN_VARIANTS))), float(np.exp(rng.uniform(np.log(4), np.log(12))))
    if kind == "concave":
        variant = int(rng.integers(len(CONCAVE_VARIANTS)))
        if variant == 0:  # crescent: unit disc minus the disc of radius rb at (d, 0)
            return 0.0, float(rng.uniform(0.55, 0.9)), float(rng.uniform(0.25, 0.65))
        if variant == 1:  # ell: a rectangle (aspect q) missing a corner from (c a, c b) outwards
            return 1.0, float(rng.uniform(0.6, 1.0)), float(rng.uniform(-0.5, 0.2))
        if variant == 2:  # u: a rectangle with a slot of half-width w a cut `depth` of its height deep
            return 2.0, float(rng.uniform(0.6, 1.0)), float(rng.uniform(0.3, 0.6)), float(rng.uniform(0.45, 0.8))
        return 3.0, float(rng.uniform(0.0, 0.4)), float(rng.uniform(0.12, 0.3))  # slot: past the centre
    if kind == "ring":  # inner radius as a share of the outer one
        return float(rng.integers(len(RING_VARIANTS))), float(rng.uniform(0.45, 0.75))
    if kind == "glyph":
        return (float(ord(GLYPHS[rng.integers(len(GLYPHS))])),)
    raise ValueError(f"unknown outline family {kind!r}; known: {', '.join(OUTLINE_FAMILIES)}")


def _rect(q: float) -> tuple[float, float]:
    """Half sizes (a, b) of a rectangle of aspect b / a = q with its corners on the unit circle."""
    a = 1 / np.sqrt(1 + q * q)
    return a, q * a


def _thin(params: tuple[float, ...], u: np.ndarray, v: np.ndarray) -> np.ndarray:
    variant, aspect = params
    if variant == 0:  # capsule: within w of the segment [-(1 - w), 1 - w] on the u axis
        w = 1 / aspect
        return (u - np.clip(u, w - 1, 1 - w)) ** 2 + v * v < w * w
    a, b = _rect(1 / aspect)
    return (np.abs(u) < a) & (np.abs(v) < b)


def _concave(params: tuple[float, ...], u: np.ndarray, v: np.ndarray) -> np.ndarray:
    variant = int(params[0])
    if variant == 0:
        rb, d = params[1:]
        return (u * u + v * v < 1) & ((u - d) ** 2 + v * v >= rb * rb)
    a, b = _rect(params[1])
    box = (np.abs(u) < a) & (np.abs(v) < b)
    if variant == 1:
        c = params[2]
        return box & ~((u > c * a) & (v > c * b))
    if variant == 2:
        w, depth = params[2:]
        return box & ~((np.abs(u) < w * a) & (v > b - 2 * b * depth))
    s, h = params[1:]
    return (u * u + v * v < 1) & ~((u > -s) & (np.abs(v) < h))


def _ring(params: tuple[float, ...], u: np.ndarray, v: np.ndarray) -> np.ndarray:
    variant, inner = params
    if variant == 0:
        r2 = u * u + v * v
        return (r2 < 1) & (r2 > inner * inner)
    side = 1 / np.sqrt(2)  # a square frame: Chebyshev distance between inner * side and side
    cheb = np.maximum(np.abs(u), np.abs(v))
    return (cheb < side) & (cheb > inner * side)


@functools.lru_cache(maxsize=None)
def glyph_bitmap(char: str) -> tuple[np.ndarray, float, float, float]:
    """(coverage (n, n) float32 in [0, 1], centre x, centre y, radius): `char` in Pillow's built-in font; every
    point where the bilinear coverage is > 0 lies within `radius` texels of the centre."""
    from PIL import Image, ImageDraw, ImageFont  # lazily: importing model must not load Pillow

    font = ImageFont.load_default(size=_GLYPH_CANVAS * 3 // 4)
    if not isinstance(font, ImageFont.FreeTypeFont):
        raise RuntimeError("glyph shapes need Pillow >= 10.1 with FreeType (ImageFont.load_default(size=...))")
    img = Image.new("L", (_GLYPH_CANVAS, _GLYPH_CANVAS))
    # A stroke thickens the font's lines (bold): a glyph must be thick enough to click inside when small.
    ImageDraw.Draw(img).text((_GLYPH_CANVAS / 2, _GLYPH_CANVAS / 2), char, fill=255, font=font, anchor="mm",
                             stroke_width=_GLYPH_CANVAS // 32, stroke_fill=255)
    alpha = np.asarray(img, np.float32) / 255
    ys, xs = np.nonzero(alpha)
    cx, cy = (xs.min() + xs.max()) / 2, (ys.min() + ys.max()) / 2
    # Bilinear coverage is > 0 only within one texel of a covered texel on each axis (<= sqrt 2 away).
    radius = float(np.hypot(xs - cx, ys - cy).max()) + 1.5
    return alpha, float(cx), float(cy), radius


def _glyph(params: tuple[float, ...], u: np.ndarray, v: np.ndarray) -> np.ndarray:
    alpha, cx, cy, radius = glyph_bitmap(chr(int(params[0])))
    return bilinear(alpha, cx + u * radius, cy + v * radius) > 0.5


def bilinear(img: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """`img` (h, w) sampled at (x, y) (texel centres at integers), 0 outside."""
    padded = np.pad(img, 1)  # a zero border: samples up to one texel off the bitmap blend towards 0
    h, w = img.shape
    off = (x < -1) | (x > w) | (y < -1) | (y > h)
    x, y = np.clip(x, -1, w) + 1, np.clip(y, -1, h) + 1  # padded coordinates in [0, w + 1]
    x0 = np.minimum(np.floor(x).astype(np.int64), w)
    y0 = np.minimum(np.floor(y).astype(np.int64), h)
    fx, fy = x - x0, y - y0
    top = padded[y0, x0] * (1 - fx) + padded[y0, x0 + 1] * fx
    bottom = padded[y0 + 1, x0] * (1 - fx) + padded[y0 + 1, x0 + 1] * fx
    return np.where(off, 0.0, top * (1 - fy) + bottom * fy)


_INSIDE = {"thin": _thin, "concave": _concave, "ring": _ring, "glyph": _glyph}


def outline_inside(kind: str, params: tuple[float, ...], u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Which points (u, v) of the object's unit frame belong to the outline (all of them within the unit disc)."""
    if kind not in _INSIDE:
        raise ValueError(f"unknown outline family {kind!r}; known: {', '.join(OUTLINE_FAMILIES)}")
    return _INSIDE[kind](params, u, v)
