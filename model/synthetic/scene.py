"""Geometry of a synthetic video (model.synthetic): camera, object motion and the scripted disappearances.

Everything lives in world pixels; the screen is the world shifted by the camera (`screen = world - camera[t]`).
Objects follow keyframes (their motion family's free path, model.synthetic.motion, sparse or one per frame),
interpolated linearly with softened corners: a point between two keyframes is a convex combination of them.
Around each scripted event the free path's keyframes are cleared and the event's own put in their place. That
is what makes the scripted events exact rather than likely, whatever the motion family:

- "exit": two keyframes outside the same border of the screen (a half-plane, convex) by more than the object's
  largest extent plus twice the camera drift bound (the camera moves between keyframes, the object in the
  world does not follow it), so every frame between them shows none of the object.
- "occluder": a foreground bar (a strip, fixed in the world, always drawn over objects) is created as wide as
  the object plus margins; two keyframes inside the bar's "hidden zone" (the points at least the object's
  extent inside the bar, also convex) hide it fully for every frame between them.
- "cross": an object's path is steered through the centre of an object behind it at one frame, so they
  overlap there (a partial or full occlusion by another tracked object).

Each object may have several non-overlapping hidden windows of `hidden_frames` frames, entered and left through
"lead" keyframes a few frames before and after, so the object is seen leaving and coming back (`event_gap`
packs the windows, so that several long ones fit in one video).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import MAX_OBJECTS, SyntheticConfig, SyntheticError
from .families import FamilySet
from .motion import motion_keys
from .shapes import Shape, Strip, Wobble, make_shape, make_wobble, sprite_extent, unit_measures

__all__ = ["MAX_OBJECTS", "Event", "Scene", "SyntheticConfig", "SyntheticError", "Track", "plan_scene"]

_MARGIN = 2.0  # px kept between a hidden object's extent and the edge of what hides it
_AFTER = 6  # frames kept after a window's return keyframe: the object is seen, and evaluated, after it
_EASE = 0.5  # 0: constant speed between keyframes (sharp turns); 1: stop at every keyframe
_PROMPT_SLACK = 2.0  # an object's silhouette is at least this many times min_prompt_area (when it may be)
_MIN_THICKNESS = 2.5  # px: the radius of the widest disc inside an object, at its base size (when it may be)


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
    motion: str = "wander"  # its motion family (model.synthetic.motion)
    twin: int = 0  # a look-alike: the id of the tracked object whose texture it wears (0: its own)


@dataclass(frozen=True, eq=False)
class Scene:
    camera: np.ndarray  # (T, 2) world position of the screen's top-left corner
    objects: tuple[Track, ...]  # back to front
    strips: tuple[Strip, ...]  # foreground bars
    blobs: tuple[Track, ...]  # foreground occluder blobs
    events: tuple[Event, ...]
    clutter: tuple[Track, ...] = ()  # untracked look-alikes behind every tracked object (owner: background)


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
        top = min(hi, room)  # log-uniform: long disappearances happen, short ones stay common
        hidden = int(np.clip(np.floor(np.exp(rng.uniform(np.log(lo), np.log(top + 1)))), lo, top))
        latest = last_return - lead - hidden + 1
        if cfg.event_gap is not None:  # packed: several long windows fit in one video
            latest = min(latest, cursor + lead + cfg.event_gap)
        t0 = int(rng.integers(cursor + lead, latest + 1))
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
           num_frames: int, motion: str, twin: int = 0) -> Track:
    return Track(object_id, shape, wobble, radius, interpolate(keys, num_frames), pose["angle"], pose["sx"],
                 pose["sy"], pose["amps"], motion, twin)


def _pick(rng: np.random.Generator, names: tuple[str, ...]) -> str:
    return names[int(rng.integers(len(names)))]


def _radius(rng: np.random.Generator, cfg: SyntheticConfig, shape: Shape, hi: float) -> float:
    """Base radius (px): log-uniform in [object_radius[0], hi] of the shorter side, raised (up to
    object_radius[1]) until the silhouette covers _PROMPT_SLACK x min_prompt_area and is _MIN_THICKNESS thick
    somewhere: a tiny or thin object must still be promptable (a click inside it, not on its edge), or its
    layout would be redrawn over and over."""
    short = min(cfg.height, cfg.width)
    lo = cfg.object_radius[0]
    radius = float(np.exp(rng.uniform(np.log(lo), np.log(max(hi, lo))))) * short
    area, inradius = unit_measures(shape)
    floor = max(np.sqrt(_PROMPT_SLACK * cfg.min_prompt_area / max(area, 1e-3)), _MIN_THICKNESS / max(inradius, 1e-3))
    return float(max(radius, min(floor, cfg.object_radius[1] * short)))


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
    motion: str  # motion family of its free path
    twin: int  # id of the earlier object it is a look-alike of (0: none)


def _look(rng: np.random.Generator, cfg: SyntheticConfig, fams: FamilySet, plans: list[_Plan]) -> tuple[int, str]:
    """(twin, shape family) of the next object: a look-alike (distractor_prob) wears an earlier object's
    texture and, with twin_shape_prob, a silhouette of its family too."""
    twin = 0
    if plans and rng.random() < cfg.distractor_prob:
        twin = plans[int(rng.integers(len(plans)))].object_id
        if rng.random() < cfg.twin_shape_prob:
            return twin, plans[twin - 1].shape.kind
    return twin, _pick(rng, fams.shape)


def _plan_events(rng: np.random.Generator, cfg: SyntheticConfig, fams: FamilySet, camera: np.ndarray,
                 object_id: int, strips: list[Strip], events: list[Event], plans: list[_Plan]) -> _Plan:
    """Look, size, pose and scripted disappearances of one object (its bars are appended to `strips`)."""
    windows = _windows(rng, cfg)
    kinds = []
    for _ in windows:  # a bar per occluder event, as long as the occluder budget lasts
        hide = rng.random() < cfg.occluder_share and len(strips) + kinds.count("occluder") < cfg.max_occluders
        kinds.append("occluder" if hide else "exit")
    lo, hi = cfg.object_radius
    if "occluder" in kinds:  # a bar must be wider than the object: keep those objects small
        hi = lo + 0.4 * (hi - lo)
    twin, family = _look(rng, cfg, fams, plans)
    shape = make_shape(rng, family)
    radius = _radius(rng, cfg, shape, hi)
    if radius > hi * min(cfg.height, cfg.width):  # raised to be promptable: it leaves the frame instead
        kinds = ["exit"] * len(kinds)
    pose = _pose(rng, cfg.num_frames, radius)
    extent = sprite_extent(pose["sx"], pose["sy"], pose["amps"])
    plan = _Plan(object_id, shape, make_wobble(rng), radius, pose, extent, {}, [], _pick(rng, fams.motion), twin)
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


def _size(cfg: SyntheticConfig) -> np.ndarray:
    return np.array([cfg.width, cfg.height], np.float64)


def plan_scene(rng: np.random.Generator, cfg: SyntheticConfig, fams: FamilySet) -> Scene:
    """Draw a whole video's geometry from `rng`, with shapes and motions of `fams` only (appearance is drawn
    separately, see model.synthetic.render).

    Order matters: the scripted windows (and their bars) and the extra occluders come first, so that each
    object's free path can start clear of all of them; crossings are steered last, through objects behind.
    """
    T = cfg.num_frames
    camera = camera_path(rng, T, cfg.camera_drift)
    strips: list[Strip] = []
    events: list[Event] = []
    plans: list[_Plan] = []
    for object_id in range(1, int(rng.integers(cfg.min_objects, cfg.max_objects + 1)) + 1):
        plans.append(_plan_events(rng, cfg, fams, camera, object_id, strips, events, plans))
    extra_strips, blobs = _extra_occluders(rng, cfg, fams, camera, cfg.max_occluders - len(strips))
    strips += extra_strips
    placed = [(b.center[0] - camera[0], float(sprite_extent(b.sx[0], b.sy[0], b.amps[0]))) for b in blobs]
    objects: list[Track] = []
    for plan in plans:
        start = _free_start(rng, cfg, camera, float(plan.extent[0]), strips, placed)
        keys = motion_keys(rng, plan.motion, T, _size(cfg), camera, start)
        for first, last in plan.busy:
            _clear(keys, first, last)
        keys.update(plan.event_keys)
        if objects and T >= 8 and rng.random() < cfg.cross_prob:
            behind = plans[int(rng.integers(len(objects)))]
            tc = _steer_through(cfg, keys, plan.busy + behind.busy, objects[behind.object_id - 1], camera)
            if tc is not None:
                events.append(Event("cross", behind.object_id, tc, tc, other=plan.object_id))
        objects.append(_track(plan.object_id, plan.shape, plan.wobble, plan.radius, keys, plan.pose, T,
                              plan.motion, plan.twin))
        placed.append((objects[-1].center[0] - camera[0], float(plan.extent[0])))
    events.sort(key=lambda e: (e.object_id, e.start))
    clutter = _clutter(rng, cfg, fams, camera, objects)
    return Scene(camera, tuple(objects), tuple(strips), tuple(blobs), tuple(events), clutter)


def _extra_occluders(rng: np.random.Generator, cfg: SyntheticConfig, fams: FamilySet, camera: np.ndarray,
                     room: int) -> tuple[list[Strip], list[Track]]:
    """Occluders that no event needs: thin bars and moving blobs in the foreground (partial occlusions)."""
    size = _size(cfg)
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
        shape, motion = make_shape(rng, _pick(rng, fams.shape)), _pick(rng, fams.motion)
        keys = motion_keys(rng, motion, cfg.num_frames, size, camera, rng.uniform(0.1, 0.9, 2) * size)
        blobs.append(_track(0, shape, make_wobble(rng), radius, keys, _pose(rng, cfg.num_frames, radius),
                            cfg.num_frames, motion))
    return strips, blobs


def _clutter(rng: np.random.Generator, cfg: SyntheticConfig, fams: FamilySet, camera: np.ndarray,
             objects: list[Track]) -> tuple[Track, ...]:
    """Untracked look-alikes: each a tracked object's shape family and (in render) texture, at a similar size,
    moving on its own. They are drawn behind every tracked object, so they never change the truth."""
    out = [_double(rng, cfg, fams, camera, objects[int(rng.integers(len(objects)))])
           for _ in range(int(rng.integers(0, cfg.max_clutter + 1)))]
    # After the random ones, so that clutter_per_object=0 draws exactly what it always drew.
    out += [_double(rng, cfg, fams, camera, model) for model in objects for _ in range(cfg.clutter_per_object)]
    return tuple(out)


def _double(rng: np.random.Generator, cfg: SyntheticConfig, fams: FamilySet, camera: np.ndarray,
            model: Track) -> Track:
    """One untracked look-alike of `model`; its free path keeps its centre on screen (motion's margins)."""
    shape, motion = make_shape(rng, model.shape.kind), _pick(rng, fams.motion)
    radius = float(model.radius * np.exp(rng.uniform(-0.4, 0.4)))
    size = _size(cfg)
    keys = motion_keys(rng, motion, cfg.num_frames, size, camera, rng.uniform(0.1, 0.9, 2) * size)
    return _track(0, shape, make_wobble(rng), radius, keys, _pose(rng, cfg.num_frames, radius), cfg.num_frames,
                  motion, model.object_id)
