"""Small generated videos for tests: textured background, coloured shapes that move."""

import numpy as np


def moving_shapes(num_frames: int, height: int = 256, width: int = 256, seed: int = 0) -> np.ndarray:
    """(T, H, W, 3) uint8: three shapes (disc, square, ellipse) drifting over a smooth textured background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([60 + 40 * np.sin(xx / 23.0), 70 + 30 * np.cos(yy / 17.0), 80 + 20 * np.sin((xx + yy) / 31.0)], -1)
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    for t in range(num_frames):
        img = base + rng.normal(0, 4, base.shape)
        cx, cy = 0.3 * width + 1.5 * t, 0.35 * height + 0.8 * t
        img[(xx - cx) ** 2 + (yy - cy) ** 2 < (0.12 * width) ** 2] = (230, 60, 50)
        sx, sy = 0.65 * width - 1.2 * t, 0.6 * height
        img[(abs(xx - sx) < 0.1 * width) & (abs(yy - sy) < 0.1 * height)] = (40, 200, 90)
        ex, ey = 0.5 * width, 0.8 * height - 0.7 * t
        img[((xx - ex) / (0.16 * width)) ** 2 + ((yy - ey) / (0.07 * height)) ** 2 < 1] = (60, 80, 230)
        frames[t] = np.clip(img, 0, 255).astype(np.uint8)
    return frames


def shape_masks(height: int = 256, width: int = 256, t: int = 0) -> dict[str, np.ndarray]:
    """The true masks of the three shapes at frame t (same motion as `moving_shapes`)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    cx, cy = 0.3 * width + 1.5 * t, 0.35 * height + 0.8 * t
    sx, sy = 0.65 * width - 1.2 * t, 0.6 * height
    ex, ey = 0.5 * width, 0.8 * height - 0.7 * t
    return {
        "disc": (xx - cx) ** 2 + (yy - cy) ** 2 < (0.12 * width) ** 2,
        "square": (abs(xx - sx) < 0.1 * width) & (abs(yy - sy) < 0.1 * height),
        "ellipse": ((xx - ex) / (0.16 * width)) ** 2 + ((yy - ey) / (0.07 * height)) ** 2 < 1,
    }
