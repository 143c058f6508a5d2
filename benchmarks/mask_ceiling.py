"""How high J&F can go at a model's image size: the ground truth itself, passed through the model's mask grid.

A SAM 2 model predicts each mask as logits on a grid of image_size / 4 cells (32 x 32 for synthetic-tiny's 128
px), which the tracker upsamples bilinearly to the video's size and thresholds at 0. So no weights, however well
trained, can score more than the best such grid does. For every true mask of the synthetic test split this
fits the grid's logits to it (Adam on binary cross-entropy + soft Dice of the upsampled logits, from the true
mask's area-averaged grid), thresholds the result as the tracker does, and scores it with jobs.evaluate exactly
as benchmarks.synthetic_jf scores a model (the prompted frames left out). Hidden objects get an empty grid.

    python -m benchmarks.mask_ceiling [--videos 50] [--frames 64] [--prompt mask] [--image-sizes 128,256]
                                      [--steps 60] [--out out/synthetic_jf]

Writes <out>/ceiling.json and <out>/ceiling.md and prints the table. Fitting is per mask, so the figure is
within what the optimiser reaches of the grid's true optimum: a lower bound on the ceiling, and an upper bound
on any model at that size.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
import torch.nn.functional as F

from benchmarks.synthetic_jf import corpus
from cluster.manifest import read_manifest
from jobs.evaluate import METRICS_SCHEMA, MaskletSource, Options, score_video, summarize
from workers.masklets import decode_rle, encode_masks
from model.prompts import PROMPT_KINDS


def fit_grid(masks: torch.Tensor, grid: int, steps: int) -> torch.Tensor:
    """(n, H, W) bool true masks -> (n, H, W) bool: the best masks (by the fit) that (n, grid, grid) logits,
    bilinearly upsampled and thresholded at 0, can carry."""
    n, H, W = masks.shape
    target = masks.float()[:, None]  # (n, 1, H, W)
    area = F.interpolate(target, size=(grid, grid), mode="area")  # (n, 1, g, g) fraction covered
    logits = ((area - 0.5) * 8.0).requires_grad_()
    opt = torch.optim.Adam([logits], lr=0.25)
    for _ in range(steps):
        up = F.interpolate(logits, size=(H, W), mode="bilinear", align_corners=False)  # (n, 1, H, W)
        prob = up.sigmoid()
        inter = (prob * target).flatten(1).sum(1)
        dice = 1 - (2 * inter + 1) / (prob.flatten(1).sum(1) + target.flatten(1).sum(1) + 1)  # (n,)
        loss = F.binary_cross_entropy_with_logits(up, target) * n + dice.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        up = F.interpolate(logits, size=(H, W), mode="bilinear", align_corners=False)
        return up[:, 0] > 0


def ceiling_rows(gt: pd.DataFrame, prompts: set[tuple[int, int]], grid: int, steps: int) -> pd.DataFrame:
    """A prediction table for one video (`MaskletSource.video`'s index and columns) holding the fitted masks;
    `prompts` are the (object_id, frame_index) pairs the manifest prompts, marked is_prompt."""
    masks = np.stack([decode_rle(r.mask_rle, r.height, r.width) for r in gt.itertuples()])  # (n, H, W)
    visible = masks.reshape(len(masks), -1).any(1)
    fitted = np.zeros_like(masks)
    if visible.any():
        fitted[visible] = fit_grid(torch.from_numpy(masks[visible]), grid, steps).numpy()
    pred = gt.copy()
    pred["mask_rle"] = encode_masks(fitted)[0]
    pred["is_prompt"] = [key in prompts for key in gt.index.tolist()]
    return pred


def manifest_prompts(manifest: Path) -> dict[str, set[tuple[int, int]]]:
    """video_id -> the (object_id, frame_index) pairs its manifest entry prompts (read as the job reads it)."""
    return {v.video_id: {(p.object_id, p.frame_index) for p in v.prompts} for v in read_manifest(str(manifest))}


def ceiling(manifest: Path, image_size: int, steps: int) -> dict:
    """The evaluate summary of the fitted grids of one image size over the corpus."""
    truth = MaskletSource(str(manifest.parent / "truth"), {}, "ground truth")
    prompts, opts, rows = manifest_prompts(manifest), Options(exclude_prompts=True), []
    for video_id in truth.video_ids():
        gt = truth.video(video_id)
        pred = ceiling_rows(gt, prompts.get(video_id, set()), image_size // 4, steps)
        rows += score_video(video_id, gt, pred, opts)
    table = pa.Table.from_pylist(rows, schema=METRICS_SCHEMA)
    return summarize(table, {"videos_without_prediction": [], "extra_videos": [], "extra_objects": 0,
                             "failed_in_run": []})


def markdown(results: dict[int, dict], args) -> str:
    lines = [f"The best J&F a mask grid of image_size / 4 cells can carry: synthetic test split, {args.videos} "
             f"videos x {args.frames} frames, {args.prompt}-prompted frames left out, {args.steps} fitting steps.",
             "", "| image size | mask grid | J&F | J | F | reappearance J&F | frames |",
             "|---|---|---|---|---|---|---|"]
    for size, s in results.items():
        lines.append(f"| {size} | {size // 4} x {size // 4} | {s['J&F']:.4f} | {s['J']:.4f} | {s['F']:.4f} | "
                     f"{s['reappear_J&F']:.4f} | {s['frames']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.mask_ceiling", description=__doc__.split("\n")[0])
    ap.add_argument("--videos", type=int, default=50)
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--prompt", default="mask", choices=PROMPT_KINDS)
    ap.add_argument("--image-sizes", default="128,256", help="comma list of model image sizes (multiples of 16)")
    ap.add_argument("--steps", type=int, default=60, help="Adam steps per mask")
    ap.add_argument("--out", default="out/synthetic_jf")
    args = ap.parse_args(argv)
    try:
        sizes = [int(s) for s in args.image_sizes.split(",")]
    except ValueError:
        ap.error(f"--image-sizes must be a comma list of integers, got {args.image_sizes!r}")
    if any(s < 16 or s % 16 for s in sizes):
        ap.error(f"--image-sizes must be multiples of 16, got {args.image_sizes!r}")
    if args.steps < 0:
        ap.error(f"--steps must be >= 0, got {args.steps}")
    out = Path(args.out)
    manifest = corpus(out, args.videos, args.frames, args.prompt)
    results = {size: ceiling(manifest, size, args.steps) for size in sizes}
    text = markdown(results, args)
    (out / "ceiling.md").write_text(text)
    (out / "ceiling.json").write_text(json.dumps(
        {size: {k: v for k, v in s.items() if k != "missing"} for size, s in results.items()}, indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
