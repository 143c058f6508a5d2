"""Synthetic videos with exact ground truth: training data for the embedded model, and an evaluation corpus.

A video (`render_video(seed, config)`) shows a textured background under a drifting camera and 1-4 tracked
objects (ellipses, polygons, stars, blobs; some wear the same texture as another, as distractors) that move,
zoom, rotate and deform, pass behind each other, disappear behind foreground occluders (bars and blobs that are
never tracked) and leave the frame, for up to `hidden_frames` frames, then come back. The disappearances are
scripted so that they are exact (see workers.synthetic_scene); `SyntheticVideo.events` lists them and
`SyntheticVideo.reappearances()` finds every return after >= 5 hidden frames from the truth itself.

Ground truth: `masks[t, k]` is the VISIBLE part of object k on frame t, after every occlusion; `labels[t]`
names the owner of every pixel (0 background, object id, OCCLUDER). The truth refers to the rendered frames;
the mp4 that `write_corpus` writes is H.264, so its decoded pixels differ slightly (the masks still hold).

Everything is deterministic: the same (seed, config) gives the same frames and masks (with the same numpy:
its Generator streams may change between numpy releases). Splits never share a seed: split k ("train", "val",
"test") owns the seeds [k * SPLIT_STRIDE, (k + 1) * SPLIT_STRIDE). A 64-frame 256x256 video renders in about
0.2 s on one CPU core.

Corpus layout (`write_corpus`):
    <out>/manifest.jsonl                       the job manifest: absolute mp4 path, video_id, prompts
    <out>/videos/<video_id>.mp4
    <out>/truth/masklets/video_id=<id>/part-00000-000000.parquet
                                               the truth as a masklet table, the job output's layout and
                                               schema: read it with workers.masklets.read_masklets(<out>/truth)
    <out>/truth/videos.jsonl                   per video: seed, size, object ids, reappearances, events
    <out>/truth/config.json                    the SyntheticConfig used
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from .synthetic_render import FLAT_COLORS, OCCLUDER, SyntheticVideo, reappearances, render_video
from .synthetic_scene import Event, SyntheticConfig, SyntheticError

# Rendering needs numpy only, so training runs where PyAV and pycocotools are not installed (a GPU image):
# the masklet and mp4 writers are imported where a corpus or a mask prompt is written.

__all__ = [
    "FLAT_COLORS", "OCCLUDER", "PROMPT_KINDS", "SPLITS", "SPLIT_STRIDE", "Event", "SyntheticConfig",
    "SyntheticError", "SyntheticVideo", "first_frame_prompts", "interior_point", "reappearances", "render_video",
    "seed_range", "split_seed", "truth_table", "write_corpus",
]

SPLITS = ("train", "val", "test")
SPLIT_STRIDE = 2**32  # seeds per split; split k owns [k * SPLIT_STRIDE, (k + 1) * SPLIT_STRIDE)
PROMPT_KINDS = ("points", "box", "mask")


# ---------------------------------------------------------------------------------------------- splits

def seed_range(split: str) -> range:
    if split not in SPLITS:
        raise SyntheticError(f"unknown split {split!r}; known: {', '.join(SPLITS)}", split)
    k = SPLITS.index(split)
    return range(k * SPLIT_STRIDE, (k + 1) * SPLIT_STRIDE)


def split_seed(split: str, index: int) -> int:
    """The seed of video `index` (0 <= index < SPLIT_STRIDE) of `split`; no two splits share a seed."""
    seeds = seed_range(split)
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < len(seeds):
        raise SyntheticError(f"index must be an int in [0, {len(seeds)}), got {index!r}", index)
    return seeds[int(index)]


# ---------------------------------------------------------------------------------------------- prompts

def _erode(m: np.ndarray, diagonal: bool) -> np.ndarray:
    """One step of binary erosion (4- or 8-neighbourhood); `m` has a False border that stays False."""
    out = np.zeros_like(m)
    core = m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
    if diagonal:
        core &= m[:-2, :-2] & m[:-2, 2:] & m[2:, :-2] & m[2:, 2:]
    out[1:-1, 1:-1] = core
    return out


def interior_point(mask: np.ndarray) -> tuple[int, int]:
    """(x, y) of a pixel of `mask` far from its boundary (the frame's edge counts as boundary).

    Erodes until nothing is left, alternating 4- and 8-neighbourhoods (an octagonal approximation of the
    Euclidean distance transform), then takes the last survivor closest to the survivors' centroid.
    """
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        raise SyntheticError("cannot pick a point inside an empty mask", 0)
    y0, x0 = ys.min(), xs.min()
    m = np.pad(mask[y0:ys.max() + 1, x0:xs.max() + 1], 1)
    step = 0
    while True:
        eroded = _erode(m, diagonal=step % 2 == 1)
        if not eroded.any():
            break
        m, step = eroded, step + 1
    ry, rx = np.nonzero(m)
    best = int(np.argmin((ry - ry.mean()) ** 2 + (rx - rx.mean()) ** 2))
    return int(rx[best] + x0 - 1), int(ry[best] + y0 - 1)


def _prompt(object_id: int, frame: int, mask: np.ndarray, kind: str) -> dict:
    prompt = {"object_id": object_id, "frame_index": frame}
    if kind == "points":
        prompt.update(points=[list(map(float, interior_point(mask)))], labels=[1])
    elif kind == "box":  # inclusive pixel indices, as SAM 2's training derives boxes from masks
        ys, xs = np.nonzero(mask)
        prompt["box"] = [float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())]
    else:
        from .masklets import encode_masks

        counts, _, _ = encode_masks(mask[None])
        prompt["mask"] = {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts[0]}
    return prompt


def first_frame_prompts(video: SyntheticVideo, kind: str = "points", min_area: int | None = None) -> list[dict]:
    """One prompt per object, in the job manifest's format, on the first frame where its visible area
    reaches `min_area` (default: the config's min_prompt_area). kind: "points" (one positive click at an
    interior point, integer pixel coordinates), "box" ([x0, y0, x1, y1] of the visible mask) or "mask"."""
    if kind not in PROMPT_KINDS:
        raise SyntheticError(f"unknown prompt kind {kind!r}; known: {', '.join(PROMPT_KINDS)}", kind)
    min_area = video.config.min_prompt_area if min_area is None else min_area
    areas = video.areas
    prompts = []
    for j, object_id in enumerate(video.object_ids):
        frames = np.flatnonzero(areas[:, j] >= min_area)
        if frames.size == 0:
            raise SyntheticError(f"object {object_id} of seed {video.seed} never shows {min_area} px", min_area)
        t = int(frames[0])
        prompts.append(_prompt(int(object_id), t, video.masks[t, j], kind))
    return prompts


# ---------------------------------------------------------------------------------------------- corpus

def truth_table(video: SyntheticVideo, video_id: str, prompts: Sequence[dict] = ()) -> pa.Table:
    """The ground truth as masklet rows (MASKLET_SCHEMA): one row per object per frame, score 1, object_score
    1 where visible, is_prompt on each prompt's frame."""
    from .masklets import ChunkRows

    rows = ChunkRows(video_id)
    prompted = {(p["object_id"], p["frame_index"]) for p in prompts}
    visible = video.visible
    ids = [int(i) for i in video.object_ids]
    for t in range(video.frames.shape[0]):
        rows.add(t, t / video.config.fps, ids, video.masks[t], 1.0, visible[t].astype(np.float32),
                 [(i, t) in prompted for i in ids])
    return rows.to_table()


def _video_record(video: SyntheticVideo, video_id: str, split: str, index: int) -> dict:
    return {"video_id": video_id, "split": split, "index": index, "seed": video.seed,
            "num_frames": int(video.frames.shape[0]), "height": int(video.frames.shape[1]),
            "width": int(video.frames.shape[2]), "fps": video.config.fps,
            "object_ids": [int(i) for i in video.object_ids],
            "reappearances": [list(r) for r in video.reappearances()],
            "events": [dataclasses.asdict(e) for e in video.events]}


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")  # readers never see a half-written manifest
    tmp.write_text(text)
    os.replace(tmp, path)


def write_corpus(out_dir, split: str, count: int, config: SyntheticConfig | None = None,
                 prompt_kind: str = "points", start: int = 0) -> Path:
    """Render videos `start`..`start + count - 1` of `split` into `out_dir` (layout in the module docstring);
    returns the manifest's path. Running it again rewrites the same files with the same bytes of truth."""
    cfg = config if config is not None else SyntheticConfig()
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise SyntheticError(f"count must be an int >= 1, got {count!r}", count)
    if prompt_kind not in PROMPT_KINDS:
        raise SyntheticError(f"unknown prompt kind {prompt_kind!r}; known: {', '.join(PROMPT_KINDS)}", prompt_kind)
    split_seed(split, start + count - 1)  # validate the split and the index range before any work
    out = Path(out_dir).resolve()
    (out / "videos").mkdir(parents=True, exist_ok=True)
    (out / "truth").mkdir(exist_ok=True)
    from .output import RunOutput
    from .video_writer import write_mp4

    writer = RunOutput(str(out / "truth"))
    manifest, records = [], []
    for index in range(start, start + count):
        video = render_video(split_seed(split, index), cfg)
        video_id = f"{split}-{index:06d}"
        path = write_mp4(out / "videos" / f"{video_id}.mp4", video.frames, fps=cfg.fps)
        prompts = first_frame_prompts(video, prompt_kind)
        writer.write_part(video_id, 0, 0, truth_table(video, video_id, prompts))
        manifest.append({"url": str(path), "video_id": video_id, "prompts": prompts})
        records.append(_video_record(video, video_id, split, index))
    _write_text(out / "truth" / "config.json", json.dumps(dataclasses.asdict(cfg), indent=1) + "\n")
    _write_text(out / "truth" / "videos.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    _write_text(out / "manifest.jsonl", "".join(json.dumps(r) + "\n" for r in manifest))
    return out / "manifest.jsonl"
