"""How synthetic objects move (model.synthetic), by family: the keyframes of an object's free path.

A motion family gives keyframes (frame -> world position); model.synthetic.scene interpolates them, clears
them around each scripted disappearance and puts that event's own keyframes there. Dense families (a key on
every frame: orbit, bounce) work the same way, so every family keeps the scripted events exact.

    wander  eased keyframes every 6-16 frames, 0.6-3 px per frame (at 256 px): the original motion
    drift   slow and nearly straight, 0.1-0.5 px per frame
    fast    a new direction every 2-6 frames at up to ~8% of the frame's shorter side per frame, bouncing
            off the frame's margins
    orbit   (held out) a circle or ellipse through the start, a full turn every 40-150 frames
    bounce  (held out) straight lines at constant speed with abrupt reversals: off the margins, and every
            5-15 frames on its own
"""

from __future__ import annotations

import numpy as np

MOTION_FAMILIES = ("wander", "drift", "fast", "orbit", "bounce")
_LO, _HI = 0.12, 0.88  # keyframes stay within these shares of the frame (the object's centre)


def _reflect(p: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """p folded into [lo, hi] as a ball bouncing off the walls would be."""
    span = hi - lo
    q = np.mod(p - lo, 2 * span)
    return lo + np.where(q > span, 2 * span - q, q)


def _unit(rng: np.random.Generator) -> np.ndarray:
    angle = rng.uniform(0, 2 * np.pi)
    return np.array([np.cos(angle), np.sin(angle)])


def _wander(rng: np.random.Generator, num_frames: int, size: np.ndarray, start: np.ndarray) -> dict:
    speed = rng.uniform(0.6, 3.0) * min(size) / 256  # px per frame
    pos, keys, t = start, {0: start}, 0
    while t < num_frames - 1:
        dt = int(min(rng.integers(6, 17), num_frames - 1 - t))
        direction = rng.normal(size=2)
        pos = np.clip(pos + direction / (np.linalg.norm(direction) + 1e-9) * speed * dt, _LO * size, _HI * size)
        t += dt
        keys[t] = pos
    return keys


def _segments(rng: np.random.Generator, num_frames: int, size: np.ndarray, start: np.ndarray, speed: float,
              gap: tuple[int, int], turn: float) -> dict:
    """Keyframes every `gap` frames, the heading turned by up to `turn` rad each time, folded into the margins."""
    heading = _unit(rng)
    raw, keys, t = start.copy(), {0: start}, 0
    while t < num_frames - 1:
        dt = int(min(rng.integers(gap[0], gap[1] + 1), num_frames - 1 - t))
        a = rng.uniform(-turn, turn)
        heading = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]) @ heading
        raw = raw + heading * speed * dt
        t += dt
        keys[t] = _reflect(raw, _LO * size, _HI * size)
    return keys


def _drift(rng: np.random.Generator, num_frames: int, size: np.ndarray, start: np.ndarray) -> dict:
    return _segments(rng, num_frames, size, start, rng.uniform(0.1, 0.5) * min(size) / 256, (12, 20), 0.3)


def _fast(rng: np.random.Generator, num_frames: int, size: np.ndarray, start: np.ndarray) -> dict:
    # Eased keyframes peak at 1.25x their mean speed: 2.5-6.5% per frame on average, up to ~8% at the peak.
    return _segments(rng, num_frames, size, start, rng.uniform(0.025, 0.065) * min(size), (2, 6), np.pi)


def _orbit(rng: np.random.Generator, num_frames: int, size: np.ndarray, start: np.ndarray) -> dict:
    """A closed path through `start` around a centre towards the middle of the frame."""
    radius = rng.uniform(0.1, 0.3) * min(size)
    squash = rng.uniform(0.5, 1.0)
    tilt = rng.uniform(0, np.pi)
    axes = np.array([[np.cos(tilt), -np.sin(tilt)], [np.sin(tilt), np.cos(tilt)]]) * [radius, radius * squash]
    omega = rng.uniform(2 * np.pi / 150, 2 * np.pi / 40) * rng.choice([-1, 1])
    local = np.linalg.solve(axes, start - size / 2)  # the phase at which the path points at the start
    phase = np.arctan2(local[1], local[0])
    centre = start - axes @ np.array([np.cos(phase), np.sin(phase)])
    t = np.arange(num_frames)
    path = centre + (axes @ np.stack([np.cos(phase + omega * t), np.sin(phase + omega * t)])).T
    return dict(enumerate(path))


def _bounce(rng: np.random.Generator, num_frames: int, size: np.ndarray, start: np.ndarray) -> dict:
    """A billiard path: constant speed, reflected at the margins, reversed (plus a kink) every 5-15 frames."""
    speed = rng.uniform(1.5, 5.0) * min(size) / 256
    velocity = _unit(rng) * speed
    steps, flip = np.empty((num_frames, 2)), int(rng.integers(5, 16))
    for t in range(num_frames):
        if t == flip:
            a = rng.uniform(-0.6, 0.6)
            velocity = -np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]) @ velocity
            flip += int(rng.integers(5, 16))
        steps[t] = velocity if t else 0.0
    path = _reflect(start + np.cumsum(steps, axis=0), _LO * size, _HI * size)
    return dict(enumerate(path))


_MOTIONS = {"wander": _wander, "drift": _drift, "fast": _fast, "orbit": _orbit, "bounce": _bounce}


def motion_keys(rng: np.random.Generator, kind: str, num_frames: int, size: np.ndarray, camera: np.ndarray,
                start: np.ndarray) -> dict[int, np.ndarray]:
    """World keyframes of a free path of family `kind` from `start` (screen px on frame 0) in a frame of
    `size` (width, height) seen by a camera at `camera` (T, 2)."""
    if kind not in _MOTIONS:
        raise ValueError(f"unknown motion family {kind!r}; known: {', '.join(MOTION_FAMILIES)}")
    screen = _MOTIONS[kind](rng, num_frames, np.asarray(size, np.float64), np.asarray(start, np.float64))
    return {int(t): np.asarray(p, np.float64) + camera[t] for t, p in screen.items()}
