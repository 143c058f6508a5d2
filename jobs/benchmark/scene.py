"""The benchmark's generated scene: shapes on orbits over a scrolling texture, computed per frame, so a video
of any length costs no memory to produce. Ours streams it; the reference gets it as a folder of JPEGs (all
its loader reads), and ours is then fed the decoded JPEG pixels, so both see the same frames.

The pixels come from the synthetic generator (model.synthetic, one scene generator): its scenery background
and its sprite code paint the shapes, so `object_masks` is exactly what `render_frame` paints."""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from model import Prompt
from model.synthetic.backgrounds import make_background
from model.synthetic.shapes import PRIMITIVES, draw_flat

COLORS = ((230, 60, 50), (40, 200, 90), (60, 80, 230), (230, 200, 40), (200, 60, 200), (40, 200, 220))


@functools.lru_cache(maxsize=4)
def _background(size: int) -> np.ndarray:
    image, _ = make_background(np.random.default_rng(0), "scenery", size, size)
    image.flags.writeable = False  # cached: shared by every frame
    return image


def _poses(t: int, size: int, objects: int) -> list[tuple[str, float, float, float, float]]:
    """(primitive, cx, cy, sx, sy) per object: disc, square, ellipse, ... on circular orbits of different periods,
    so they stay in view on any video length and now and then pass over each other."""
    r = 0.09 * size
    radii = ((r, r), (r * math.sqrt(2), r * math.sqrt(2)), (1.6 * r, 0.7 * r))  # a square's corners at sqrt 2
    out = []
    for k in range(objects):
        angle = 2 * math.pi * (k / objects + t / (150 + 23 * k))
        cx, cy = size * (0.5 + 0.3 * math.cos(angle)), size * (0.5 + 0.3 * math.sin(angle))
        # +0.5: pixel-centre coordinates, where the original integer-grid masks had the centre
        out.append(("square" if k % 3 == 1 else "disc", cx + 0.5, cy + 0.5, *radii[k % 3]))
    return out


def object_masks(t: int, size: int, objects: int) -> np.ndarray:
    """(objects, size, size) bool: each object's whole silhouette at frame t (see _poses)."""
    out = np.zeros((objects, size, size), bool)
    img = np.empty((size, size, 3), np.uint8)
    for k, (name, *pose) in enumerate(_poses(t, size, objects)):
        owner = np.zeros((size, size), np.uint8)
        draw_flat(img, owner, 1, PRIMITIVES[name], COLORS[k % len(COLORS)], *pose)
        out[k] = owner == 1
    return out


def render_frame(t: int, size: int, objects: int) -> np.ndarray:
    """(size, size, 3) uint8 frame t of the scene: the objects painted in order over the scrolled background."""
    img = np.roll(_background(size), t % size, axis=1)
    owner = np.zeros((size, size), np.uint8)
    for k, (name, *pose) in enumerate(_poses(t, size, objects)):
        draw_flat(img, owner, 1, PRIMITIVES[name], COLORS[k % len(COLORS)], *pose)
    return img


def first_prompts(size: int, objects: int) -> list[Prompt]:
    """Frame 0's prompts, one kind per object in turn: a click, a box, a mask."""
    prompts = []
    for k, m in enumerate(object_masks(0, size, objects)):
        ys, xs = np.nonzero(m)
        if k % 3 == 0:
            prompts.append(Prompt(k + 1, points=[[float(xs.mean()), float(ys.mean())]], labels=[1]))
        elif k % 3 == 1:
            prompts.append(Prompt(k + 1, box=[float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())]))
        else:
            prompts.append(Prompt(k + 1, mask=m))
    return prompts


def write_jpegs(folder: Path, start: int, stop: int, size: int, objects: int) -> list[Path]:
    """Frames [start, stop) as JPEG files (quality 95) named by frame index, as the reference's loader wants."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{t:06d}.jpg" for t in range(start, stop)]
    for t, path in zip(range(start, stop), paths):
        Image.fromarray(render_frame(t, size, objects)).save(path, quality=95)
    return paths


def jpeg_subset(master: Sequence[Path], num_frames: int, folder: Path) -> str:
    """A folder holding the first `num_frames` JPEGs (links): the reference loads every JPEG of its folder."""
    if num_frames > len(master):
        raise ValueError(f"asked for {num_frames} frames, only {len(master)} were written")
    folder.mkdir(parents=True, exist_ok=True)
    for path in master[:num_frames]:
        link = folder / path.name
        if not link.exists():
            link.symlink_to(path.resolve())
    return str(folder)


def read_jpegs(paths: Sequence[Path]) -> list[np.ndarray]:
    """The decoded JPEG pixels: ours sees exactly what the reference's loader sees."""
    return [np.array(Image.open(p).convert("RGB")) for p in paths]
