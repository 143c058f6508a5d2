"""The benchmark's generated scene: shapes on orbits over a scrolling texture, computed per frame, so a video
of any length costs no memory to produce. Ours streams it; the reference gets it as a folder of JPEGs (all
its loader reads), and ours is then fed the decoded JPEG pixels, so both see the same frames."""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from model import Prompt

COLORS = ((230, 60, 50), (40, 200, 90), (60, 80, 230), (230, 200, 40), (200, 60, 200), (40, 200, 220))


@functools.lru_cache(maxsize=4)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    return yy, xx


@functools.lru_cache(maxsize=4)
def _background(size: int) -> np.ndarray:
    yy, xx = _grid(size)
    base = [60 + 40 * np.sin(xx / 23.0), 70 + 30 * np.cos(yy / 17.0), 80 + 20 * np.sin((xx + yy) / 31.0)]
    return np.stack(base, -1).astype(np.uint8)


def object_masks(t: int, size: int, objects: int) -> np.ndarray:
    """(objects, size, size) bool: disc, square, ellipse, ... on circular orbits of different periods, so they
    stay in view on any video length and now and then pass over each other."""
    yy, xx = _grid(size)
    r = 0.09 * size
    out = np.empty((objects, size, size), bool)
    for k in range(objects):
        angle = 2 * math.pi * (k / objects + t / (150 + 23 * k))
        cx, cy = size * (0.5 + 0.3 * math.cos(angle)), size * (0.5 + 0.3 * math.sin(angle))
        if k % 3 == 0:
            out[k] = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
        elif k % 3 == 1:
            out[k] = (abs(xx - cx) < r) & (abs(yy - cy) < r)
        else:
            out[k] = ((xx - cx) / (1.6 * r)) ** 2 + ((yy - cy) / (0.7 * r)) ** 2 < 1
    return out


def render_frame(t: int, size: int, objects: int) -> np.ndarray:
    """(size, size, 3) uint8 frame t of the scene."""
    img = np.roll(_background(size), t % size, axis=1)
    for k, m in enumerate(object_masks(t, size, objects)):
        img[m] = COLORS[k % len(COLORS)]
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
