"""Rendering a planned synthetic scene to frames plus its exact ground truth (see model.synthetic).

Geometry and appearance come from two independent random streams of the same seed, so `flat_colors=True`
(every owner in one flat colour, no noise) gives exactly the same masks as the textured video: a debug view
in which a pixel's colour says who owns it.

Per frame, back to front: the background (cropped at the camera offset), the tracked objects in depth order,
then the foreground occluders (blobs, then bars). Every paint also writes the pixel's owner into a label map;
the ground truth mask of object k is `labels == k`, i.e. only what is visible after every occlusion.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .scene import Event, Scene, SyntheticConfig, SyntheticError, Track, plan_scene
from .shapes import TEXTURE_SIZE, Sprite, background_image, draw_sprite, draw_strip, make_texture

OCCLUDER = 255  # label of foreground occluder pixels; 0 is the background, 1..4 the tracked objects
FLAT_COLORS = {0: (0, 0, 0), 1: (255, 0, 0), 2: (0, 255, 0), 3: (0, 0, 255), 4: (255, 255, 0),
               OCCLUDER: (255, 255, 255)}  # flat_colors mode: owner -> RGB
MAX_ATTEMPTS = 8  # layouts tried per seed before giving up on one where every object can be prompted


@dataclass(frozen=True, eq=False)
class SyntheticVideo:
    """A rendered video and its ground truth. Objects are listed back to front; ids are 1..O."""

    seed: int
    config: SyntheticConfig
    frames: np.ndarray  # (T, H, W, 3) uint8 RGB
    labels: np.ndarray  # (T, H, W) uint8: owner of each pixel: 0 background, an object id, or OCCLUDER
    masks: np.ndarray  # (T, O, H, W) bool: the VISIBLE part of each object (labels == object id)
    object_ids: np.ndarray  # (O,) int32
    full_areas: np.ndarray  # (T, O) int64: each object's whole silhouette inside the frame, before occlusion
    events: tuple[Event, ...]  # the scripted occlusions (exact: see model.synthetic.scene)

    @property
    def areas(self) -> np.ndarray:
        """(T, O) int64 visible pixels per object and frame."""
        return self.masks.sum(axis=(2, 3), dtype=np.int64)

    @property
    def visible(self) -> np.ndarray:
        """(T, O) bool: any pixel visible (the masklet table's `visible`, area > 0)."""
        return self.masks.any(axis=(2, 3))

    def reappearances(self, min_hidden: int = 5) -> list[tuple[int, int]]:
        """(object_id, frame) of every return after at least `min_hidden` frames without a visible pixel."""
        vis = self.visible
        return [(int(oid), t) for j, oid in enumerate(self.object_ids) for t in reappearances(vis[:, j], min_hidden)]


def reappearances(visible, min_hidden: int = 5) -> list[int]:
    """Frames where an object is visible again after >= `min_hidden` hidden frames, having been seen before.

    `visible` is a (T,) bool per frame. A hidden stretch at the start (the object has not appeared yet) or at
    the end (it never comes back) is not a reappearance.
    """
    vis = np.asarray(visible, dtype=bool)
    if vis.ndim != 1:
        raise SyntheticError(f"visible must be a (T,) bool array, got shape {vis.shape}", vis.shape)
    if isinstance(min_hidden, bool) or not isinstance(min_hidden, (int, np.integer)) or min_hidden < 1:
        raise SyntheticError(f"min_hidden must be an int >= 1, got {min_hidden!r}", min_hidden)
    edges = np.diff(vis.astype(np.int8))
    hides = np.flatnonzero(edges == -1) + 1  # first hidden frame of each hidden stretch after a visible one
    returns = np.flatnonzero(edges == 1) + 1  # first visible frame after a hidden stretch
    out = []
    for start in hides:
        later = returns[returns > start]
        if later.size and later[0] - start >= min_hidden:
            out.append(int(later[0]))
    return out


# ---------------------------------------------------------------------------------------------- looks

@dataclass(frozen=True, eq=False)
class _Looks:
    background: np.ndarray  # (H + 2 pad, W + 2 pad, 3) uint8, cropped at the camera offset
    pad: int
    objects: tuple[Sprite, ...]
    blobs: tuple[Sprite, ...]
    strips: tuple[tuple[np.ndarray, float], ...]  # (texture, px per texel)
    gain: np.ndarray  # (T,) global brightness (lighting flicker)


def _flat(code: int) -> np.ndarray:
    return np.broadcast_to(np.array(FLAT_COLORS[code], np.uint8), (TEXTURE_SIZE, TEXTURE_SIZE, 3))


def _object_textures(rng: np.random.Generator, cfg: SyntheticConfig, count: int) -> list[np.ndarray]:
    textures: list[np.ndarray] = []
    for i in range(count):
        if i and rng.random() < cfg.distractor_prob:  # a look-alike: identical surface, own shape and motion
            textures.append(textures[int(rng.integers(i))])
        else:
            textures.append(make_texture(rng))
    return textures


def _plan_looks(rng: np.random.Generator, cfg: SyntheticConfig, scene: Scene) -> _Looks:
    pad = int(np.ceil(cfg.camera_drift)) + 1
    background = background_image(rng, cfg.height + 2 * pad, cfg.width + 2 * pad)
    textures = _object_textures(rng, cfg, len(scene.objects))
    blob_textures = [make_texture(rng) for _ in scene.blobs]
    strips = tuple((make_texture(rng), float(rng.uniform(1.5, 3.0))) for _ in scene.strips)
    t = np.arange(cfg.num_frames)
    gain = 1 + rng.uniform(0, 0.05) * np.sin(rng.uniform(0.05, 0.4) * t + rng.uniform(0, 6.3))
    if cfg.flat_colors:
        background = np.broadcast_to(np.array(FLAT_COLORS[0], np.uint8), background.shape)
        textures = [_flat(track.object_id) for track in scene.objects]
        blob_textures = [_flat(OCCLUDER) for _ in scene.blobs]
        strips = tuple((_flat(OCCLUDER), px) for _, px in strips)
        gain = np.ones_like(gain)
    density = rng.uniform(1.0, 2.5, len(scene.objects) + len(scene.blobs))  # px per texel

    def sprite(track: Track, texture: np.ndarray, px: float) -> Sprite:
        return Sprite(track.shape, track.wobble, texture, track.radius / px)

    objects = tuple(sprite(tr, tx, px) for tr, tx, px in zip(scene.objects, textures, density))
    blobs = tuple(sprite(tr, tx, px) for tr, tx, px in zip(scene.blobs, blob_textures, density[len(objects):]))
    return _Looks(background, pad, objects, blobs, strips, gain)


# ---------------------------------------------------------------------------------------------- render

def _paint(img: np.ndarray, owner: np.ndarray, code: int, track: Track, sprite: Sprite, t: int,
           camera: np.ndarray) -> int:
    cx, cy = track.center[t] - camera
    return draw_sprite(img, owner, code, sprite, cx, cy, track.angle[t], track.sx[t], track.sy[t], track.amps[t])


def _render_frame(img: np.ndarray, owner: np.ndarray, scene: Scene, looks: _Looks, t: int) -> np.ndarray:
    """Paint frame t into img / owner; returns each object's silhouette area before occlusion."""
    height, width = owner.shape
    camera = scene.camera[t]
    ox, oy = np.rint(camera).astype(np.int64) + looks.pad  # whole-pixel background shift, sub-pixel sprites
    img[:] = looks.background[oy:oy + height, ox:ox + width]
    full = [_paint(img, owner, tr.object_id, tr, sp, t, camera) for tr, sp in zip(scene.objects, looks.objects)]
    for track, sprite in zip(scene.blobs, looks.blobs):
        _paint(img, owner, OCCLUDER, track, sprite, t, camera)
    for strip, (texture, px) in zip(scene.strips, looks.strips):
        draw_strip(img, owner, OCCLUDER, strip, texture, px, camera[0], camera[1])
    return np.asarray(full, np.int64)


def _sensor(frames: np.ndarray, gain: np.ndarray, noise_std: float, rng: np.random.Generator) -> None:
    """Lighting flicker and sensor noise, in place. The noise of a frame is a random crop of one of a few
    pre-drawn fields: drawing fresh Gaussian noise per frame would cost more than all the rest of rendering."""
    _, height, width, _ = frames.shape
    slack = 16
    bank = rng.standard_normal((4, height + slack, width + slack, 3), np.float32) * np.float32(noise_std)
    picks = rng.integers(0, [len(bank), slack + 1, slack + 1], size=(len(frames), 3))
    for t, (k, oy, ox) in enumerate(picks):
        f = frames[t].astype(np.float32) * np.float32(gain[t])
        f += bank[k, oy:oy + height, ox:ox + width]
        np.clip(f, 0, 255, out=f)
        frames[t] = np.rint(f)


def _render(seed: int, cfg: SyntheticConfig, scene: Scene, looks: _Looks, rng: np.random.Generator) -> SyntheticVideo:
    T, H, W = cfg.num_frames, cfg.height, cfg.width
    frames = np.empty((T, H, W, 3), np.uint8)
    labels = np.zeros((T, H, W), np.uint8)
    full = np.zeros((T, len(scene.objects)), np.int64)
    for t in range(T):
        full[t] = _render_frame(frames[t], labels[t], scene, looks, t)
    if not cfg.flat_colors:
        _sensor(frames, looks.gain, cfg.noise_std, rng)
    ids = np.array([tr.object_id for tr in scene.objects], np.int32)
    masks = labels[:, None] == ids.astype(np.uint8)[None, :, None, None]
    return SyntheticVideo(seed, cfg, frames, labels, masks, ids, full, scene.events)


def render_video(seed: int, config: SyntheticConfig | None = None) -> SyntheticVideo:
    """The video of `seed` (an int >= 0): the same seed and config always give the same pixels and masks.

    Layouts where some object never shows `min_prompt_area` visible pixels (it could not be prompted) are
    redrawn from the same seed's next attempt, deterministically.
    """
    cfg = config if config is not None else SyntheticConfig()
    if not isinstance(cfg, SyntheticConfig):
        raise SyntheticError(f"config must be a SyntheticConfig, got {type(cfg).__name__}", cfg)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise SyntheticError(f"seed must be an int >= 0, got {seed!r}", seed)
    for attempt in range(MAX_ATTEMPTS):
        # Separate streams: appearance (and flat_colors) never changes the geometry, hence the masks.
        geometry, looks, sensor = (np.random.default_rng([int(seed), attempt, k]) for k in range(3))
        scene = plan_scene(geometry, cfg)
        video = _render(int(seed), cfg, scene, _plan_looks(looks, cfg, scene), sensor)
        if (video.areas >= cfg.min_prompt_area).any(axis=0).all():
            return video
    raise SyntheticError(f"seed {seed}: no layout in {MAX_ATTEMPTS} attempts where every object shows "
                         f"{cfg.min_prompt_area} px (min_prompt_area too large for the frame?)", seed)
