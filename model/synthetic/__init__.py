"""Synthetic videos with exact ground truth: training data for the embedded model, and evaluation corpora.

A video (`render_video(seed, config)`) shows a background under a drifting camera and 1-4 tracked objects
that move, zoom, rotate and deform, pass behind each other, disappear behind foreground occluders (bars and
blobs that are never tracked) and leave the frame, for up to `hidden_frames` frames (up to 60), then come
back. The disappearances are scripted so that they are exact (see model.synthetic.scene); `SyntheticVideo.events`
lists them and `SyntheticVideo.reappearances()` finds every return after >= 5 hidden frames from the truth.

What is drawn comes from named families (model.synthetic.families, one registry), in two disjoint sets:

    kind        in-family (splits train, val, test, stress)              held-out (split heldout)
    shape       ellipse, polygon, star, blob (star-shaped), thin          glyph (letters, digits: Pillow's
                (sticks, bars, aspect 4-12), concave (crescent, L, U,     font), ring (round or square,
                slotted disc)                                             with a hole)
    texture     flat, stripes, checker, dots, noise, gradient            photo (real photographs), voronoi
    background  scenery (value noise), mosaic (blocks of flat colour     photo, bokeh (soft out-of-focus
                or texture), gradient                                     lights)
    motion      wander (eased keyframes), drift (slow), fast (up to      orbit (circles, ellipses), bounce
                8% of the frame per frame)                                (abrupt reversals)

The seed's split decides the set, inside render_video, so no training seed can draw a held-out family
(`SyntheticConfig.families` may narrow a set, never leave it); `SyntheticVideo.families` names every family a
video used ("kind:name"). In every split: look-alikes (an object wearing another's texture, often its shape
family too, and untracked clutter of the same look behind the tracked objects), object diameters from 2% to
40% of the frame's shorter side (log-uniform, raised where an object could not show `min_prompt_area` px),
lighting changes (a drifting gain, a moving soft light or shadow), blur (defocus or motion) and sensor noise.

Ground truth: `masks[t, k]` is the VISIBLE part of object k on frame t, after every occlusion; `labels[t]`
names the owner of every pixel (0 background, object id, OCCLUDER); `clutter_areas[t, c]` counts the visible
pixels of untracked look-alike c (owned by the background). The truth refers to the rendered frames;
the mp4 that `workers.synthetic_corpus.write_corpus` writes is H.264, so its decoded pixels differ slightly (the masks still hold).

The "stress" split (`render_stress_video(index)`, `stress_config()`: model.synthetic.stress) is for memory:
600-frame videos where every object vanishes for 30-300 frames at a time, several times, while a look-alike
stays in view; its seeds are never trained on.

Everything is deterministic: the same (seed, config) gives the same frames and masks (with the same numpy and,
for glyphs, the same Pillow/FreeType: numpy's Generator streams may change between releases). Splits never
share a seed: split k of SPLITS ("train", "val", "test", "heldout", "stress") owns the seeds [k * SPLIT_STRIDE,
(k + 1) * SPLIT_STRIDE). A 64-frame 256x256 video renders in about 0.3 s (held out: 0.4 s) on one CPU core.
Pure numpy at import time: the photographs (assets/photos.npz) are read on first use, Pillow is imported only
for glyphs.
"""

from .config import SyntheticConfig, SyntheticError
from .families import (FAMILY_KINDS, HELD_OUT, HELD_OUT_SPLITS, IN_FAMILY, KNOWN_FAMILIES, REGISTRY, FamilyRegistry,
                       FamilySet, parse_families)
from .interior import interior_point
from .render import FLAT_COLORS, OCCLUDER, SyntheticVideo, reappearances, render_video
from .scene import Event
from .splits import SPLITS, SPLIT_STRIDE, seed_range, split_of_seed, split_seed
from .stress import STRESS_SPLIT, render_stress_video, stress_config

__all__ = [
    "FAMILY_KINDS", "FLAT_COLORS", "HELD_OUT", "HELD_OUT_SPLITS", "IN_FAMILY", "KNOWN_FAMILIES", "OCCLUDER",
    "REGISTRY", "SPLITS", "SPLIT_STRIDE", "STRESS_SPLIT", "Event", "FamilyRegistry", "FamilySet", "SyntheticConfig",
    "SyntheticError", "SyntheticVideo", "interior_point", "parse_families", "reappearances", "render_stress_video",
    "render_video", "seed_range", "split_of_seed", "split_seed", "stress_config",
]
