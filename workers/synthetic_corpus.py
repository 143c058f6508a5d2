"""The synthetic videos (model.synthetic) as a job corpus: mp4 files, a manifest with prompts, the truth as masklets.

Corpus layout (`write_corpus`):
    <out>/manifest.jsonl                       the job manifest: absolute mp4 path, video_id, prompts
    <out>/videos/<video_id>.mp4
    <out>/truth/masklets/video_id=<id>/part-00000-000000.parquet
                                               the truth as a masklet table, the job output's layout and
                                               schema: read it with workers.masklets.read_masklets(<out>/truth)
    <out>/truth/videos.jsonl                   per video: seed, size, object ids, reappearances, events,
                                               families ("kind:name", model.synthetic.families)
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

from model.prompts import PROMPT_KINDS
from model.synthetic import SyntheticConfig, SyntheticError, SyntheticVideo, interior_point, render_video, split_seed

# Rendering needs numpy only, so training runs where PyAV and pycocotools are not installed (a GPU image):
# the masklet and mp4 writers are imported where a corpus or a mask prompt is written.

__all__ = ["first_frame_prompts", "truth_table", "write_corpus"]


# ---------------------------------------------------------------------------------------------- prompts

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
            "events": [dataclasses.asdict(e) for e in video.events], "families": sorted(video.families)}


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")  # readers never see a half-written manifest
    tmp.write_text(text)
    os.replace(tmp, path)


def write_corpus(out_dir, split: str, count: int, config: SyntheticConfig | None = None,
                 prompt_kind: str = "points", start: int = 0) -> Path:
    """Render videos `start`..`start + count - 1` of `split` (any of model.synthetic.SPLITS, "heldout"
    included: its videos draw only held-out families) into `out_dir` (layout in the module docstring);
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
