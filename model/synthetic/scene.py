"""Geometry of a synthetic video (model.synthetic): camera, object motion and the scripted disappearances.

Everything lives in world pixels; the screen is the world shifted by the camera (`screen = world - camera[t]`).
Objects follow keyframes, interpolated linearly with softened corners: a point between two keyframes is a
convex combination of them. That is what makes the scripted events exact rather than likely:

- "exit": two keyframes outside the same border of the screen (a half-plane, convex) by more than the object's
  largest extent plus twice the camera drift bound (the camera moves between keyframes, the object in the
  world does not follow it), so every frame between them shows none of the object.
- "occluder": a foreground bar (a strip, fixed in the world, always drawn over objects) is created as wide as
  the object plus margins; two keyframes inside the bar's "hidden zone" (the points at least the object's
  extent inside the bar, also convex) hide it fully for every frame between them.
- "cross": an object's path is steered through the centre of an object behind it at one frame, so they
  overlap there (a partial or full occlusion by another tracked object).

Each object may have several non-overlapping hidden windows of `hidden_frames` frames, entered and left through
"lead" keyframes a few frames before and after, so the object is seen leaving and coming back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import SamstreamError

from .shapes import Shape, Strip, Wobble, make_shape, make_wobble, sprite_extent

MAX_OBJECTS = 4  # owner codes 1..4 in the label map; the issue asks for 1-4 objects
_MARGIN = 2.0  # px kept between a hidden object's extent and the edge of what hides it
_AFTER = 6  # frames kept after a window's return keyframe: the object is seen, and evaluated, after it
_EASE = 0.5  # 0: constant speed between keyframes (sharp turns); 1: stop at every keyframe


class SyntheticError(SamstreamError, ValueError):
    """A bad synthetic-data argument or an impossible request; `value` holds the offending value."""

    def __init__(self, message: str, value=None):
        self.value = value
        super().__init__(message)


@dataclass(frozen=True)
class SyntheticConfig:
    """What a synthetic video looks like. The defaults make 64-frame 256x256 videos."""

    height: int = 256  # frame size (px); write_corpus needs both even (H.264 yuv420p)
    width: int = 256
    num_frames: int = 64
    min_objects: int = 1  # tracked objects per video, uniform in [min_objects, max_objects]
    max_objects: int = 4  # at most MAX_OBJECTS
    object_radius: tuple[float, float] = (0.07, 0.17)  # base radius range, as a fraction of min(height, width)
    hidden_frames: tuple[int, int] = (5, 20)  # length range of a scripted full disappearance (frames)
    event_prob: float = 0.75  # chance an object gets a (first, then each further) scripted disappearance
    occluder_share: float = 0.5  # share of disappearances behind a foreground bar; the rest leave the frame
    cross_prob: float = 0.5  # chance an object's path is steered through an object behind it
    max_occluders: int = 2  # foreground occluders (bars and blobs) per video; never tracked objects
    distractor_prob: float = 0.35  # chance an object wears the same texture as an earlier one (a look-alike)
    camera_drift: float = 10.0  # px: bound of the camera offset from its start, on each axis
    noise_std: float = 3.0  # sensor noise (std, 8-bit levels)
    fps: int = 24  # frame rate written to the mp4 and time_s
    min_prompt_area: int = 64  # px: an object is prompted on the first frame its visible area reaches this
    flat_colors: bool = False  # debug: each owner in its own flat colour (FLAT_COLORS), no noise or flicker

    def __post_init__(self) -> None:
        for name in ("height", "width"):
            _check(getattr(self, name) >= 32, f"{name} must be >= 32", getattr(self, name))
        _check(self.num_frames >= 1, "num_frames must be >= 1", self.num_frames)
        _check(1 <= self.min_objects <= self.max_objects <= MAX_OBJECTS,
               f"need 1 <= min_objects <= max_objects <= {MAX_OBJECTS}", (self.min_objects, self.max_objects))
        lo, hi = self.object_radius
        _check(0 < lo <= hi <= 0.4, "object_radius must be (lo, hi) with 0 < lo <= hi <= 0.4", self.object_radius)
        lo, hi = self.hidden_frames
        _check(1 <= lo <= hi, "hidden_frames must be (lo, hi) with 1 <= lo <= hi", self.hidden_frames)
        for name in ("event_prob", "occluder_share", "cross_prob", "distractor_prob"):
            _check(0 <= getattr(self, name) <= 1, f"{name} must be in [0, 1]", getattr(self, name))
        for name in ("max_occluders", "camera_drift", "noise_std"):
            _check(getattr(self, name) >= 0, f"{name} must be >= 0", getattr(self, name))
        _check(isinstance(self.fps, int) and self.fps > 0, "fps must be an int > 0", self.fps)
        _check(self.min_prompt_area >= 1, "min_prompt_area must be >= 1", self.min_prompt_area)


def _check(ok: bool, message: str, value) -> None:
    if not ok:
        raise SyntheticError(f"{message}, got {value!r}", value)


@dataclass(frozen=True)
class Event:
    """A scripted occlusion. exit / occluder: the object is fully hidden on frames start..end (inclusive).
    cross: object `object_id` passes behind object `other`, their centres meeting on frame start (= end)."""

    kind: str  # "exit" | "occluder" | "cross"
    object_id: int
    start: int
    end: int
    other: int = 0


@dataclass(frozen=True, eq=False)
class Track:
    """A moving sprite: its silhouette and, per frame, its world centre, rotation, radii and deformation."""

    object_id: int  # 1..4 for tracked objects, 0 for an occluder blob
    shape: Shape
    wobble: Wobble
    radius: float  # base radius (px), sets the texture density
    center: np.ndarray  # (T, 2) world x, y
    angle: np.ndarray  # (T,) rad
    sx: np.ndarray  # (T,) px, radius along the sprite's own x axis (scale and squash included)
    sy: np.ndarray  # (T,) px
    amps: np.ndarray  # (T, wobble terms)


@dataclass(frozen=True, eq=False)
class Scene:
    camera: np.ndarray  # (T, 2) world position of the screen's top-left corner
    objects: tuple[Track, ...]  # back to front
    strips: tuple[Strip, ...]  # foreground bars
    blobs: tuple[Track, ...]  # foreground occluder blobs
    events: tuple[Event, ...]


# ---------------------------------------------------------------------------------------------- motion

def camera_path(rng: np.random.Generator, num_frames: int, drift: float) -> np.ndarray:
    """(T, 2) smooth offsets, 0 at frame 0, each axis within [-drift, drift]: a slow pan plus a sway."""
    t = np.arange(num_frames)[:, None]
    omega, phase = rng.uniform(0.02, 0.12, 2), rng.uniform(0, 2 * np.pi, 2)
    pan = rng.uniform(-1, 1, 2)
    path = 0.5 * (np.sin(omega * t + phase) - np.sin(phase)) + 0.5 * pan * t / max(num_frames - 1, 1)
    return drift * path / 1.5  # |sway| <= 1 and |pan| <= 0.5


def interpolate(keys: dict[int, np.ndarray], num_frames: int) -> np.ndarray:
    """(T, 2) positions through the keyframes; held before the first and after the last."""
    times = np.array(sorted(keys))
    points = np.array([keys[k] for k in times], np.float64)
    if len(times) == 1:
        return np.repeat(points, num_frames, axis=0)
    t = np.arange(num_frames)
    i = np.clip(np.searchsorted(times, t, side="right") - 1, 0, len(times) - 2)
    s = np.clip((t - times[i]) / (times[i + 1] - times[i]), 0.0, 1.0)
    s = (1 - _EASE) * s + _EASE * s * s * (3 - 2 * s)  # still within [0, 1]: a convex combination
    return points[i] * (1 - s)[:, None] + points[i + 1] * s[:, None]


def _pose(rng: np.random.Generator, num_frames: int, radius: float) -> dict[str, np.ndarray]:
    """Rotation, zoom, squash and wobble over time, as smooth periodic and linear terms."""
    t = np.arange(num_frames)
    zoom = np.exp(rng.uniform(0, 0.15) * np.sin(rng.uniform(0.03, 0.15) * t + rng.uniform(0, 6.3))
                  + rng.uniform(-0.3, 0.3) * (t / max(num_frames - 1, 1) - 0.5))
    squash = np.exp(rng.uniform(0, 0.12) * np.sin(rng.uniform(0.05, 0.25) * t + rng.uniform(0, 6.3)))
    angle = (rng.uniform(0, 2 * np.pi) + rng.uniform(-0.06, 0.06) * t
             + 0.3 * np.sin(rng.uniform(0.02, 0.1) * t + rng.uniform(0, 6.3)))
    amps = rng.uniform(0.02, 0.07, 2) * np.sin(rng.uniform(0.05, 0.3, 2) * t[:, None] + rng.uniform(0, 6.3, 2))
    return {"angle": angle, "sx": radius * zoom * squash, "sy": radius * zoom / squash, "amps": amps}


def _base_keys(rng: np.random.Generator, cfg: SyntheticConfig, camera: np.ndarray,
               start: np.ndarray) -> dict[int, np.ndarray]:
    """A wander inside the frame from `start` (screen px): keyframes every 6-16 frames, bounded speed."""
    size = np.array([cfg.width, cfg.height], np.float64)
    speed = rng.uniform(0.6, 3.0) * min(size) / 256  # px per frame
    pos = start
    keys, t = {0: pos + camera[0]}, 0
    while t < cfg.num_frames - 1:
        dt = int(min(rng.integers(6, 17), cfg.num_frames - 1 - t))
        direction = rng.normal(size=2)
        pos = np.clip(pos + direction / (np.linalg.norm(direction) + 1e-9) * speed * dt, 0.12 * size, 0.88 * size)
        t += dt
        keys[t] = pos + camera[t]
    return keys


# ---------------------------------------------------------------------------------------------- events

def _windows(rng: np.random.Generator, cfg: SyntheticConfig) -> list[tuple[int, int, int]]:
    """Non-overlapping (first hidden, last hidden, lead) windows, each leaving room to be seen before and after."""
    lo, hi = cfg.hidden_frames
    last_return = cfg.num_frames - 1 - _AFTER
    windows, cursor = [], 2  # the first frames show every object: it must be prompted somewhere
    while rng.random() < cfg.event_prob:
        lead = int(rng.integers(5, 9))
        room = last_return - lead - (cursor + lead) + 1  # the most hidden frames that still fit
        if room < lo:
            break
        hidden = int(rng.integers(lo, min(hi, room) + 1))
        t0 = int(rng.integers(cursor + lead, last_return - lead - hidden + 2))
        windows.append((t0, t0 + hidden - 1, lead))
        cursor = t0 + hidden - 1 + lead + 4
    return windows


def _exit_keys(rng: np.random.Generator, cfg: SyntheticConfig, camera: np.ndarray, window: tuple,
               extent: float) -> dict[int, np.ndarray]:
    t0, t1, lead = window
    size = np.array([cfg.width, cfg.height], np.float64)
    side = int(rng.integers(4))  # left, right, top, bottom; both outside keys on one side: a convex region
    across, along = (size[0], size[1]) if side < 2 else (size[1], size[0])
    out = extent + 2 * cfg.camera_drift + _MARGIN

    def screen(a: float, b: float) -> np.ndarray:  # a: px inward from the border, b: px along it
        x, y = (a, b) if side < 2 else (b, a)
        if side == 1:
            x = size[0] - a
        if side == 3:
            y = size[1] - a
        return np.array([x, y])

    def inside() -> np.ndarray:  # where the object is seen leaving from / coming back to
        return screen(rng.uniform(0.12, 0.35) * across, rng.uniform(0.15, 0.85) * along)

    def outside() -> np.ndarray:
        return screen(-out - rng.uniform(0, 10), rng.uniform(0, 1) * along)

    keys = {t0 - lead: inside(), t0: outside(), t1: outside(), t1 + lead: inside()}
    return {t: p + camera[t] for t, p in keys.items()}


def _occluder_keys(rng: np.random.Generator, cfg: SyntheticConfig, camera: np.ndarray, window: tuple,
                   extent: np.ndarray) -> tuple[Strip, dict[int, np.ndarray]]:
    """A bar wide enough to hide the object, and keyframes that cross into it, stay hidden, and come out."""
    t0, t1, lead = window
    size = np.array([cfg.width, cfg.height], np.float64)
    hid = float(extent[t0:t1 + 1].max())
    width = 2 * (hid + _MARGIN) + rng.uniform(0, 0.6) * hid
    alpha = rng.uniform(-0.35, 0.35) + (np.pi / 2 if rng.random() < 0.5 else 0.0)  # near-vertical or horizontal
    normal, tangent = np.array([np.cos(alpha), np.sin(alpha)]), np.array([-np.sin(alpha), np.cos(alpha)])
    centre = rng.uniform(0.3, 0.7, 2) * size + camera[t0]
    strip = Strip(float(alpha), float(normal @ centre), float(width))
    free = width / 2 - hid - _MARGIN  # the hidden zone: |distance from the centre line| <= free

    def hidden() -> np.ndarray:  # anywhere in the hidden zone, slid along the bar
        return centre + normal * rng.uniform(-free, free) + tangent * rng.uniform(-0.2, 0.2) * min(size)

    def beside(t: int) -> np.ndarray:  # mostly out of the bar, on either side
        across = (width / 2 + extent[t] * rng.uniform(0.8, 1.5)) * rng.choice([-1, 1])
        return centre + normal * across + tangent * rng.uniform(-0.25, 0.25) * min(size)

    keys = {t0 - lead: beside(t0 - lead), t0: hidden(), t1: hidden(), t1 + lead: beside(t1 + lead)}
    return strip, keys


def _clear(keys: dict[int, np.ndarray], first: int, last: int) -> None:
    for t in [t for t in keys if first <= t <= last]:
        del keys[t]


def _steer_through(cfg: SyntheticConfig, keys: dict, busy: list[tuple[int, int]], behind: Track,
                   camera: np.ndarray) -> int | None:
    """Put a keyframe on `behind`'s centre where the two paths already come closest (so the detour is
    short), at a frame outside every busy span with `behind` on screen; returns that frame."""
    edge = max(3, cfg.num_frames // 8)  # crossings in the middle of the video, not on its first frames
    t = np.arange(edge, cfg.num_frames - edge)
    screen = behind.center[t] - camera[t]
    ok = np.all((screen > 0) & (screen < [cfg.width, cfg.height]), axis=1)
    for a, b in busy:  # the keys cleared around tc must not include an event's keys
        ok &= (t < a - 4) | (t > b + 4)
    if not ok.any():
        return None
    gap = np.linalg.norm(interpolate(keys, cfg.num_frames)[t] - behind.center[t], axis=1)
    tc = int(t[ok][np.argmin(gap[ok])])
    _clear(keys, max(tc - 4, 1), tc + 4)
    keys[tc] = behind.center[tc].copy()
    return tc


# ---------------------------------------------------------------------------------------------- scene

def _track(object_id: int, shape: Shape, wobble: Wobble, radius: float, keys: dict, pose: dict,
           num_frames: int) -> Track:
    return Track(object_id, shape, wobble, radius, interpolate(keys, num_frames), pose["angle"], pose["sx"],
                 pose["sy"], pose["amps"])


@dataclass(eq=False)
class _Plan:
    """One object between planning steps: its scripted windows are fixed before its free wander is drawn."""

    object_id: int
    shape: Shape
    wobble: Wobble
    radius: float
    pose: dict[str, np.ndarray]
    extent: np.ndarray  # (T,) px, sprite_extent per frame
    event_keys: dict[int, np.ndarray]
    busy: list[tuple[int, int]]  # frame spans owned by the events (the wander's keys are cleared there)


def _plan_events(rng: np.random.Generator, cfg: SyntheticConfig, camera: np.ndarray, object_id: int,
                 strips: list[Strip], events: list[Event]) -> _Plan:
    """Size, pose and scripted disappearances of one object (its bars are appended to `strips`)."""
    windows = _windows(rng, cfg)
    kinds = []
    for _ in windows:  # a bar per occluder event, as long as the occluder budget lasts
        hide = rng.random() < cfg.occluder_share and len(strips) + kinds.count("occluder") < cfg.max_occluders
        kinds.append("occluder" if hide else "exit")
    lo, hi = cfg.object_radius
    if "occluder" in kinds:  # a bar must be wider than the object: keep those objects small
        hi = lo + 0.4 * (hi - lo)
    radius = float(rng.uniform(lo, hi) * min(cfg.height, cfg.width))
    pose = _pose(rng, cfg.num_frames, radius)
    extent = sprite_extent(pose["sx"], pose["sy"], pose["amps"])
    plan = _Plan(object_id, make_shape(rng), make_wobble(rng), radius, pose, extent, {}, [])
    for window, kind in zip(windows, kinds):
        t0, t1, lead = window
        if kind == "exit":
            plan.event_keys.update(_exit_keys(rng, cfg, camera, window, float(extent[t0:t1 + 1].max())))
        else:
            strip, keys = _occluder_keys(rng, cfg, camera, window, extent)
            strips.append(strip)
            plan.event_keys.update(keys)
        events.append(Event(kind, object_id, t0, t1))
        plan.busy.append((max(t0 - lead - 2, 1), t1 + lead + 2))  # frame 0 keeps its key: seen at the start
    return plan


def _free_start(rng: np.random.Generator, cfg: SyntheticConfig, camera: np.ndarray, extent: float,
                strips: list[Strip], placed: list[tuple[np.ndarray, float]]) -> np.ndarray:
    """A frame-0 screen position clear of every bar and of what is already placed, so each object can be
    prompted on the first frame (after 40 misses, the last try: the object then joins later)."""
    size = np.array([cfg.width, cfg.height], np.float64)
    for _ in range(40):
        pos = rng.uniform(0.15, 0.85, 2) * size
        world = pos + camera[0]
        if (all(abs(s.distance(world[0], world[1])) >= s.width / 2 + extent for s in strips)
                and all(np.linalg.norm(pos - q) >= extent + e for q, e in placed)):
            break
    return pos


def plan_scene(rng: np.random.Generator, cfg: SyntheticConfig) -> Scene:
    """Draw a whole video's geometry from `rng` (appearance is drawn separately, see model.synthetic).

    Order matters: the scripted windows (and their bars) and the extra occluders come first, so that each
    object's free wander can start clear of all of them; crossings are steered last, through objects behind.
    """
    T = cfg.num_frames
    camera = camera_path(rng, T, cfg.camera_drift)
    strips: list[Strip] = []
    events: list[Event] = []
    count = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    plans = [_plan_events(rng, cfg, camera, object_id, strips, events) for object_id in range(1, count + 1)]
    extra_strips, blobs = _extra_occluders(rng, cfg, camera, cfg.max_occluders - len(strips))
    strips += extra_strips
    placed = [(b.center[0] - camera[0], float(sprite_extent(b.sx[0], b.sy[0], b.amps[0]))) for b in blobs]
    objects: list[Track] = []
    for plan in plans:
        keys = _base_keys(rng, cfg, camera, _free_start(rng, cfg, camera, float(plan.extent[0]), strips, placed))
        for first, last in plan.busy:
            _clear(keys, first, last)
        keys.update(plan.event_keys)
        if objects and T >= 8 and rng.random() < cfg.cross_prob:
            behind = plans[int(rng.integers(len(objects)))]
            tc = _steer_through(cfg, keys, plan.busy + behind.busy, objects[behind.object_id - 1], camera)
            if tc is not None:
                events.append(Event("cross", behind.object_id, tc, tc, other=plan.object_id))
        objects.append(_track(plan.object_id, plan.shape, plan.wobble, plan.radius, keys, plan.pose, T))
        placed.append((objects[-1].center[0] - camera[0], float(plan.extent[0])))
    events.sort(key=lambda e: (e.object_id, e.start))
    return Scene(camera, tuple(objects), tuple(strips), tuple(blobs), tuple(events))


def _extra_occluders(rng: np.random.Generator, cfg: SyntheticConfig, camera: np.ndarray,
                     room: int) -> tuple[list[Strip], list[Track]]:
    """Occluders that no event needs: thin bars and drifting blobs in the foreground (partial occlusions)."""
    size = np.array([cfg.width, cfg.height], np.float64)
    short = float(min(size))
    strips, blobs = [], []
    for _ in range(int(rng.integers(0, max(room, 0) + 1))):
        if rng.random() < 0.4:
            alpha = rng.uniform(0, np.pi)
            centre = rng.uniform(0.1, 0.9, 2) * size
            normal = np.array([np.cos(alpha), np.sin(alpha)])
            strips.append(Strip(float(alpha), float(normal @ centre), float(rng.uniform(0.02, 0.06) * short)))
            continue
        radius = float(rng.uniform(0.05, 0.12) * short)
        keys = {0: rng.uniform(0.1, 0.9, 2) * size, cfg.num_frames - 1: rng.uniform(0.1, 0.9, 2) * size}
        blobs.append(_track(0, make_shape(rng), make_wobble(rng), radius, keys, _pose(rng, cfg.num_frames, radius),
                            cfg.num_frames))
    return strips, blobs
