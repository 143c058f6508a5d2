"""Small generated videos for tests: three flat-coloured shapes (a disc, a square, an ellipse) on fixed straight
paths over a textured background, painted with model.synthetic's background and sprite code (one scene
generator), so `shape_masks` is exactly what `moving_shapes` paints."""

import functools

import numpy as np

from model.synthetic.backgrounds import make_background
from model.synthetic.shapes import PRIMITIVES, draw_flat

COLORS = {"disc": (230, 60, 50), "square": (40, 200, 90), "ellipse": (60, 80, 230)}


def _poses(height: int, width: int, t: int) -> dict[str, tuple[float, float, float, float]]:
    """name -> (cx, cy, sx, sy) at frame t, in model.synthetic's pixel-centre coordinates: +0.5 puts the centre
    where the integer pixel grid of the original hand-written masks had it."""
    root2 = np.sqrt(2.0)
    return {
        "disc": (0.3 * width + 1.5 * t + 0.5, 0.35 * height + 0.8 * t + 0.5, 0.12 * width, 0.12 * width),
        "square": (0.65 * width - 1.2 * t + 0.5, 0.6 * height + 0.5, 0.1 * width * root2, 0.1 * height * root2),
        "ellipse": (0.5 * width + 0.5, 0.8 * height - 0.7 * t + 0.5, 0.16 * width, 0.07 * height),
    }


def _paint(img: np.ndarray, owner: np.ndarray, name: str, pose: tuple[float, float, float, float]) -> None:
    draw_flat(img, owner, 1, PRIMITIVES["square" if name == "square" else "disc"], COLORS[name], *pose)


@functools.lru_cache(maxsize=8)
def _background(height: int, width: int) -> np.ndarray:
    image, _ = make_background(np.random.default_rng(0), "scenery", height, width)
    image.flags.writeable = False  # shared by every call
    return image


def moving_shapes(num_frames: int, height: int = 256, width: int = 256, seed: int = 0) -> np.ndarray:
    """(T, H, W, 3) uint8: three shapes (disc, square, ellipse) drifting over a smooth textured background
    (the synthetic generator's scenery) with sensor noise drawn from `seed`; the shapes are painted in that
    order, flat and noise-free."""
    rng = np.random.default_rng(seed)
    base = _background(height, width).astype(np.float32)
    owner = np.zeros((height, width), np.uint8)
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    for t in range(num_frames):
        frames[t] = np.clip(base + rng.normal(0, 4, base.shape), 0, 255).astype(np.uint8)
        for name, pose in _poses(height, width, t).items():
            _paint(frames[t], owner, name, pose)
    return frames


def shape_masks(height: int = 256, width: int = 256, t: int = 0) -> dict[str, np.ndarray]:
    """The true masks of the three shapes at frame t (same motion as `moving_shapes`), each whole (not occluded)."""
    out = {}
    for name, pose in _poses(height, width, t).items():
        img, owner = np.zeros((height, width, 3), np.uint8), np.zeros((height, width), np.uint8)
        _paint(img, owner, name, pose)
        out[name] = owner == 1
    return out
