"""What happens to a synthetic video's pixels after they are painted (model.synthetic.render): lighting changes,
blur and sensor noise. None of it moves a pixel's owner, so the masks stay exact; flat_colors skips it all.

- lighting: a global gain drifting slowly over the video (within about 1 +- gain_drift) with a faint flicker,
  and, with light_prob, a soft light or shadow (a wide Gaussian spot) moving across the frame;
- blur: with blur_prob, a stretch of 2-12 frames blurred by defocus (a box blur applied twice, ~Gaussian) or
  motion (shifted copies averaged along a direction), its strength rising and falling over the stretch;
- sensor noise: Gaussian, `noise_std` levels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import SyntheticConfig


@dataclass(frozen=True, eq=False)
class Optics:
    gain: np.ndarray  # (T,) global brightness
    light: tuple[float, float, np.ndarray, np.ndarray] | None  # (amplitude, sigma px, start xy, end xy)
    blur: dict[int, tuple[str, float, float]]  # frame -> (kind "defocus" | "motion", strength px, angle rad)


def _slow(rng: np.random.Generator, num_frames: int) -> np.ndarray:
    """(T,) smooth random curve in [-1, 1]: values at a few knots, smoothstep between them."""
    knots = rng.uniform(-1, 1, int(rng.integers(2, 5)) + 1)
    pos = np.arange(num_frames) / max(num_frames - 1, 1) * (len(knots) - 1)
    i = np.minimum(np.floor(pos).astype(np.int64), len(knots) - 2)
    f = pos - i
    f = f * f * (3 - 2 * f)
    return knots[i] * (1 - f) + knots[i + 1] * f


def plan_optics(rng: np.random.Generator, cfg: SyntheticConfig) -> Optics:
    T = cfg.num_frames
    t = np.arange(T)
    flicker = 1 + rng.uniform(0, 0.05) * np.sin(rng.uniform(0.05, 0.4) * t + rng.uniform(0, 6.3))
    gain = np.exp(cfg.gain_drift * _slow(rng, T)) * flicker
    light = None
    if rng.random() < cfg.light_prob:  # negative amplitude: a shadow
        size = np.array([cfg.width, cfg.height], np.float64)
        light = (float(rng.uniform(-0.5, 0.4)), float(rng.uniform(0.15, 0.45) * min(size)),
                 rng.uniform(-0.1, 1.1, 2) * size, rng.uniform(-0.1, 1.1, 2) * size)
    blur: dict[int, tuple[str, float, float]] = {}
    if rng.random() < cfg.blur_prob:
        kind = "defocus" if rng.random() < 0.5 else "motion"
        peak = float(rng.uniform(1, 3.5) if kind == "defocus" else rng.uniform(3, 12))
        angle, first, length = float(rng.uniform(0, np.pi)), int(rng.integers(0, T)), int(rng.integers(2, 13))
        for k in range(length):
            if first + k < T:  # a triangle: the blur sets in and wears off
                blur[first + k] = (kind, peak * (1 - abs(2 * (k + 0.5) / length - 1)) + 0.5, angle)
    return Optics(gain, light, blur)


def _light_field(light, t: int, num_frames: int, height: int, width: int) -> np.ndarray:
    amp, sigma, p0, p1 = light
    cx, cy = p0 + (p1 - p0) * (t / max(num_frames - 1, 1))
    gx = np.exp(-((np.arange(width) + 0.5 - cx) ** 2) / (2 * sigma * sigma))
    gy = np.exp(-((np.arange(height) + 0.5 - cy) ** 2) / (2 * sigma * sigma))
    return (1 + amp * gy[:, None] * gx[None, :]).astype(np.float32)[..., None]


def _box(f: np.ndarray, r: int, axis: int) -> np.ndarray:
    """Mean over a window of 2r + 1 along `axis`, the edges extended."""
    pad = [(0, 0)] * f.ndim
    pad[axis] = (r + 1, r)
    c = np.cumsum(np.pad(f, pad, mode="edge"), axis=axis, dtype=np.float32)
    n = f.shape[axis]
    return (np.take(c, np.arange(2 * r + 1, 2 * r + 1 + n), axis) - np.take(c, np.arange(n), axis)) / (2 * r + 1)


def _motion(f: np.ndarray, length: float, angle: float) -> np.ndarray:
    """Mean of copies shifted along `angle` over `length` px (whole-pixel shifts, edges extended)."""
    n = max(int(round(length)), 2)
    offsets = np.linspace(-length / 2, length / 2, n)
    dx, dy = np.rint(offsets * np.cos(angle)).astype(int), np.rint(offsets * np.sin(angle)).astype(int)
    m = int(max(np.abs(dx).max(), np.abs(dy).max()))
    if m == 0:
        return f
    padded = np.pad(f, ((m, m), (m, m), (0, 0)), mode="edge")
    height, width = f.shape[:2]
    out = np.zeros_like(f)
    for x, y in zip(dx, dy):
        out += padded[m + y:m + y + height, m + x:m + x + width]
    return out / np.float32(n)


def _blur(f: np.ndarray, kind: str, strength: float, angle: float) -> np.ndarray:
    if kind == "motion":
        return _motion(f, strength, angle)
    r = int(round(strength))
    for _ in range(2 if r else 0):  # two box passes per axis: close to a Gaussian
        f = _box(_box(f, r, 0), r, 1)
    return f


def apply_optics(frames: np.ndarray, optics: Optics, noise_std: float, rng: np.random.Generator) -> None:
    """Blur, lighting and sensor noise, in place. The noise of a frame is a random crop of one of a few
    pre-drawn fields: drawing fresh Gaussian noise per frame would cost more than all the rest of rendering."""
    T, height, width, _ = frames.shape
    slack = 16
    bank = rng.standard_normal((4, height + slack, width + slack, 3), np.float32) * np.float32(noise_std)
    picks = rng.integers(0, [len(bank), slack + 1, slack + 1], size=(T, 3))
    for t, (k, oy, ox) in enumerate(picks):
        f = frames[t].astype(np.float32)
        if t in optics.blur:
            f = _blur(f, *optics.blur[t])
        f *= np.float32(optics.gain[t])
        if optics.light is not None:
            f *= _light_field(optics.light, t, T, height, width)
        f += bank[k, oy:oy + height, ox:ox + width]
        np.clip(f, 0, 255, out=f)
        frames[t] = np.rint(f)
