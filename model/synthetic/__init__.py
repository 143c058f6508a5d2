"""Synthetic videos with exact ground truth: training data for the embedded model, and an evaluation corpus.

A video (`render_video(seed, config)`) shows a textured background under a drifting camera and 1-4 tracked
objects (ellipses, polygons, stars, blobs; some wear the same texture as another, as distractors) that move,
zoom, rotate and deform, pass behind each other, disappear behind foreground occluders (bars and blobs that are
never tracked) and leave the frame, for up to `hidden_frames` frames, then come back. The disappearances are
scripted so that they are exact (see model.synthetic.scene); `SyntheticVideo.events` lists them and
`SyntheticVideo.reappearances()` finds every return after >= 5 hidden frames from the truth itself.

Ground truth: `masks[t, k]` is the VISIBLE part of object k on frame t, after every occlusion; `labels[t]`
names the owner of every pixel (0 background, object id, OCCLUDER). The truth refers to the rendered frames;
the mp4 that `workers.synthetic_corpus.write_corpus` writes is H.264, so its decoded pixels differ slightly (the masks still hold).

Everything is deterministic: the same (seed, config) gives the same frames and masks (with the same numpy:
its Generator streams may change between numpy releases). Splits never share a seed: split k ("train", "val",
"test") owns the seeds [k * SPLIT_STRIDE, (k + 1) * SPLIT_STRIDE). A 64-frame 256x256 video renders in about
0.2 s on one CPU core.
"""

from .interior import interior_point
from .render import FLAT_COLORS, OCCLUDER, SyntheticVideo, reappearances, render_video
from .scene import Event, SyntheticConfig, SyntheticError
from .splits import SPLITS, SPLIT_STRIDE, seed_range, split_seed

__all__ = [
    "FLAT_COLORS", "OCCLUDER", "SPLITS", "SPLIT_STRIDE", "Event", "SyntheticConfig", "SyntheticError",
    "SyntheticVideo", "interior_point", "reappearances", "render_video", "seed_range", "split_seed",
]
