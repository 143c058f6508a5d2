"""Rendering a planned synthetic scene to frames plus its exact ground truth (see model.synthetic).

Geometry and appearance come from two independent random streams of the same seed, so `flat_colors=True`
(every owner in one flat colour, no noise) gives exactly the same masks as the textured video: a debug view
in which a pixel's colour says who owns it.

Per frame, back to front: the background (cropped at the camera offset), the untracked look-alikes (clutter,
owned by the background), the tracked objects in depth order, then the foreground occluders (blobs, then
bars). Every paint also writes the pixel's owner into a label map; the ground truth mask of object k is
`labels == k`, i.e. only what is visible after every occlusion. Lighting, blur and noise follow
(model.synthetic.effects); they change no owner.

The families a video draws from are its seed's split's (model.synthetic.families), narrowed by the config's
`families`; `SyntheticVideo.families` lists those it used.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .backgrounds import make_background
from .config import MAX_CLUTTER
from .effects import Optics, apply_optics, plan_optics
from .families import REGISTRY, FamilySet
from .scene import Event, Scene, SyntheticConfig, SyntheticError, Track, plan_scene
from .shapes import TEXTURE_SIZE, Sprite, draw_sprite, draw_strip
from .splits import split_of_seed
from .textures import make_texture

OCCLUDER = 255  # label of foreground occluder pixels; 0 is the background, 1..4 the tracked objects
FLAT_COLORS = {0: (0, 0, 0), 1: (255, 0, 0), 2: (0, 255, 0), 3: (0, 0, 255), 4: (255, 255, 0),
               OCCLUDER: (255, 255, 255)}  # flat_colors mode: owner -> RGB
MAX_ATTEMPTS = 8  # layouts tried per seed before giving up on one where every object can be prompted
_CLUTTER = OCCLUDER - 1 - MAX_CLUTTER  # owner code of look-alike c while a frame is painted: _CLUTTER + c


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
    # "kind:name" of every family drawn: shapes, motions and textures of the objects, clutter and occluders
    # (bars: their textures), the background and its textures (in flat_colors: what the textured render draws)
    families: frozenset[str] = frozenset()
    # (T, C) int64: visible pixels of each untracked look-alike (clutter: owned by the background in `labels`)
    clutter_areas: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int64))
    clutter_of: tuple[int, ...] = ()  # (C,) the tracked object each look-alike copies (shape family, texture)

    def families_of(self, kind: str) -> tuple[str, ...]:
        """The names of the families of `kind` ("shape", "texture", "background", "motion") it used, sorted."""
        return tuple(sorted(f.split(":", 1)[1] for f in self.families if f.split(":", 1)[0] == kind))

    @property
    def areas(self) -> np.ndarray:
        """(T, O) int64 visible pixels per object and frame."""
        return self.masks.sum(axis=(2, 3), dtype=np.int64)

    @property
    def visible(self) -> np.ndarray:
        """(T, O) bool: any pixel visible (the masklet table's `visible`, area > 0)."""
        return self.masks.any(axis=(2, 3))

    def lookalike_visible(self) -> np.ndarray:
        """(T, O) bool: some untracked look-alike of each object shows a pixel on the frame."""
        of = np.asarray(self.clutter_of, np.int64)
        shown = self.clutter_areas > 0
        return np.stack([shown[:, of == oid].any(axis=1) for oid in self.object_ids], axis=1)

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
    clutter: tuple[Sprite, ...]
    strips: tuple[tuple[np.ndarray, float], ...]  # (texture, px per texel)
    optics: Optics  # lighting and blur
    families: frozenset[str]


def _flat(code: int) -> np.ndarray:
    return np.broadcast_to(np.array(FLAT_COLORS[code], np.uint8), (TEXTURE_SIZE, TEXTURE_SIZE, 3))


def _textures(rng: np.random.Generator, fams: FamilySet, count: int, used: set[str]) -> list[np.ndarray]:
    """`count` textures of random families of `fams` (their names added to `used`)."""
    out = []
    for _ in range(count):
        kind = fams.texture[int(rng.integers(len(fams.texture)))]
        used.add(f"texture:{kind}")
        out.append(make_texture(rng, kind))
    return out


def _object_textures(rng: np.random.Generator, fams: FamilySet, scene: Scene, used: set[str]) -> list[np.ndarray]:
    """One per object; a look-alike (track.twin) wears its original's (model.synthetic.scene decides who)."""
    textures: list[np.ndarray] = []
    for track in scene.objects:
        textures += [textures[track.twin - 1]] if track.twin else _textures(rng, fams, 1, used)
    return textures


def _plan_looks(rng: np.random.Generator, cfg: SyntheticConfig, fams: FamilySet, scene: Scene) -> _Looks:
    pad = int(np.ceil(cfg.camera_drift)) + 1
    kind = fams.background[int(rng.integers(len(fams.background)))]
    background, on_background = make_background(rng, kind, cfg.height + 2 * pad, cfg.width + 2 * pad, fams.texture)
    used = {f"background:{kind}"} | {f"texture:{t}" for t in on_background}
    textures = _object_textures(rng, fams, scene, used)
    blob_textures = _textures(rng, fams, len(scene.blobs), used)
    strips = tuple((tx, float(rng.uniform(1.5, 3.0))) for tx in _textures(rng, fams, len(scene.strips), used))
    clutter_textures = [textures[tr.twin - 1] for tr in scene.clutter]
    optics = plan_optics(rng, cfg)
    if cfg.flat_colors:
        background = np.broadcast_to(np.array(FLAT_COLORS[0], np.uint8), background.shape)
        textures = [_flat(track.object_id) for track in scene.objects]
        blob_textures = [_flat(OCCLUDER) for _ in scene.blobs]
        clutter_textures = [_flat(0) for _ in scene.clutter]  # the background's colour: they belong to it
        strips = tuple((_flat(OCCLUDER), px) for _, px in strips)
        optics = Optics(np.ones(cfg.num_frames), None, {})
    tracks = scene.objects + scene.blobs + scene.clutter
    density = rng.uniform(1.0, 2.5, len(tracks))  # px per texel
    sprites = [Sprite(tr.shape, tr.wobble, tx, tr.radius / px)
               for tr, tx, px in zip(tracks, textures + blob_textures + clutter_textures, density)]
    used |= {f"shape:{tr.shape.kind}" for tr in tracks} | {f"motion:{tr.motion}" for tr in tracks}
    n, m = len(scene.objects), len(scene.blobs)
    return _Looks(background, pad, tuple(sprites[:n]), tuple(sprites[n:n + m]), tuple(sprites[n + m:]), strips,
                  optics, frozenset(used))


# ---------------------------------------------------------------------------------------------- render

def _paint(img: np.ndarray, owner: np.ndarray, code: int, track: Track, sprite: Sprite, t: int,
           camera: np.ndarray) -> int:
    cx, cy = track.center[t] - camera
    return draw_sprite(img, owner, code, sprite, cx, cy, track.angle[t], track.sx[t], track.sy[t], track.amps[t])


def _render_frame(img: np.ndarray, owner: np.ndarray, scene: Scene, looks: _Looks, t: int,
                  clutter: np.ndarray) -> np.ndarray:
    """Paint frame t into img / owner and each look-alike's visible pixels into `clutter` (C,); returns each
    object's silhouette area before occlusion."""
    height, width = owner.shape
    camera = scene.camera[t]
    ox, oy = np.rint(camera).astype(np.int64) + looks.pad  # whole-pixel background shift, sub-pixel sprites
    img[:] = looks.background[oy:oy + height, ox:ox + width]
    for c, (track, sprite) in enumerate(zip(scene.clutter, looks.clutter)):  # a code of its own until counted
        _paint(img, owner, _CLUTTER + c, track, sprite, t, camera)
    full = [_paint(img, owner, tr.object_id, tr, sp, t, camera) for tr, sp in zip(scene.objects, looks.objects)]
    for track, sprite in zip(scene.blobs, looks.blobs):
        _paint(img, owner, OCCLUDER, track, sprite, t, camera)
    for strip, (texture, px) in zip(scene.strips, looks.strips):
        draw_strip(img, owner, OCCLUDER, strip, texture, px, camera[0], camera[1])
    _count_clutter(owner, clutter)
    return np.asarray(full, np.int64)


def _count_clutter(owner: np.ndarray, clutter: np.ndarray) -> None:
    """Count each look-alike's pixels left visible, then give them to the background (0): untracked."""
    if clutter.size:
        hits = (owner >= _CLUTTER) & (owner < _CLUTTER + clutter.size)
        clutter[:] = np.bincount(owner[hits] - _CLUTTER, minlength=clutter.size)
        owner[hits] = 0


def _render(seed: int, cfg: SyntheticConfig, scene: Scene, looks: _Looks, rng: np.random.Generator) -> SyntheticVideo:
    T, H, W = cfg.num_frames, cfg.height, cfg.width
    frames = np.empty((T, H, W, 3), np.uint8)
    labels = np.zeros((T, H, W), np.uint8)
    full = np.zeros((T, len(scene.objects)), np.int64)
    clutter = np.zeros((T, len(scene.clutter)), np.int64)
    for t in range(T):
        full[t] = _render_frame(frames[t], labels[t], scene, looks, t, clutter[t])
    if not cfg.flat_colors:
        apply_optics(frames, looks.optics, cfg.noise_std, rng)
    ids = np.array([tr.object_id for tr in scene.objects], np.int32)
    masks = labels[:, None] == ids.astype(np.uint8)[None, :, None, None]
    return SyntheticVideo(seed, cfg, frames, labels, masks, ids, full, scene.events, looks.families, clutter,
                          tuple(tr.twin for tr in scene.clutter))


def render_video(seed: int, config: SyntheticConfig | None = None) -> SyntheticVideo:
    """The video of `seed` (an int >= 0): the same seed and config always give the same pixels and masks.

    The seed's split (model.synthetic.splits) decides the family set: a held-out family can only appear in
    the "heldout" split's videos, and only there. Layouts where some object never shows `min_prompt_area`
    visible pixels (it could not be prompted) are redrawn from the same seed's next attempt, deterministically.
    """
    cfg = config if config is not None else SyntheticConfig()
    if not isinstance(cfg, SyntheticConfig):
        raise SyntheticError(f"config must be a SyntheticConfig, got {type(cfg).__name__}", cfg)
    fams = REGISTRY.for_split(split_of_seed(seed)).narrowed(cfg.families)  # validates the seed too
    for attempt in range(MAX_ATTEMPTS):
        # Separate streams: appearance (and flat_colors) never changes the geometry, hence the masks.
        geometry, looks, sensor = (np.random.default_rng([int(seed), attempt, k]) for k in range(3))
        scene = plan_scene(geometry, cfg, fams)
        video = _render(int(seed), cfg, scene, _plan_looks(looks, cfg, fams, scene), sensor)
        if (video.areas >= cfg.min_prompt_area).any(axis=0).all():
            return video
    raise SyntheticError(f"seed {seed}: no layout in {MAX_ATTEMPTS} attempts where every object shows "
                         f"{cfg.min_prompt_area} px (min_prompt_area too large for the frame?)", seed)
