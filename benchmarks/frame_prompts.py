"""Single frames, no memory: box- and click-prompted J, the IoU head's calibration, and automatic-mask recall.

For one frame of each of a split's first --videos synthetic videos (the middle frame; "test": unseen seeds
of the training families, "heldout": families never trained on), every object visible there with at least
the generator's min_prompt_area pixels is
- prompted with its box and with one click at an interior point (jobs' prompt path: model.prompts), decoded
  as the tracker decodes a prompted frame (no memory), and scored with J (region Jaccard) at the video's size;
- compared with the decoder's predicted IoU for those masks (calibration: mean |predicted - actual|, Pearson r,
  and a binned table), which the pseudo-label job filters on;
- looked for among the frame's automatic masks (model.auto_masks.generate_masks, the pseudo-label job's
  discovery, its default thresholds): recall = share of true objects that some proposal covers at IoU >= 0.5;
  precision = share of proposals that cover some true object at IoU >= 0.5.

    python -m benchmarks.frame_prompts [--split heldout] [--videos 50] [--checkpoint URL] [--image-size S]
                                       [--out out/frame_prompts]

Prints a markdown table and writes <out>/<split>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from model import load_model, resolve_checkpoint
from model.auto_masks import AutoMaskConfig, generate_masks
from model.metrics import jaccard
from model.prompts import Prompt, to_model_prompt
from model.synthetic import SyntheticConfig, interior_point, render_video, split_seed

FRAMES = 24  # rendered per video; the middle one is scored (objects have moved off their start positions)
BINS = (0.0, 0.25, 0.5, 0.75, 0.9, 1.01)  # predicted-IoU bins of the calibration table


def frame_objects(video, t: int) -> list[tuple[int, np.ndarray]]:
    """(object id, true mask (H, W) bool) of the objects showing at least min_prompt_area pixels on frame t."""
    keep = np.flatnonzero(video.areas[t] >= video.config.min_prompt_area)
    return [(int(video.object_ids[j]), video.masks[t, j]) for j in keep]


def to_video_size(logits: torch.Tensor, height: int, width: int) -> np.ndarray:
    """(N, 1, s, s) logits -> (N, H, W) bool masks, bilinear as the tracker resizes its output."""
    return (F.interpolate(logits.float(), size=(height, width), mode="bilinear", align_corners=False)[:, 0] > 0).cpu().numpy()


def prompted(model, feat, high_res, prompt: Prompt, height: int, width: int) -> tuple[np.ndarray, float]:
    """One prompt decoded as the tracker decodes a prompted frame -> (mask (H, W) bool, predicted IoU)."""
    mp = to_model_prompt(prompt, height, width, model.cfg.image_size, feat.device)
    multimask = mp.num_points <= model.cfg.multimask_max_pt_num
    res = model.decode(feat, high_res, mp.points[None], mp.labels[None], None, multimask)
    return to_video_size(res.high_res, height, width)[0], float(res.iou[0])


def box_of(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


@torch.inference_mode()
def score_frame(model, video, t: int) -> dict:
    """Box/click J and predicted IoU per object, and automatic-mask matches, for frame t of `video`."""
    H, W = video.frames.shape[1:3]
    feats = model.encode_frames(model.preprocess(torch.from_numpy(video.frames[t]))[None])
    feat = model.without_memory(feats.feat)
    rows, objects = [], frame_objects(video, t)
    for oid, mask in objects:
        box_mask, box_iou = prompted(model, feat, feats.high_res, Prompt(oid, box=box_of(mask)), H, W)
        x, y = interior_point(mask)
        click_mask, click_iou = prompted(model, feat, feats.high_res,
                                         Prompt(oid, points=[[x, y]], labels=[1]), H, W)
        rows.append({"box_J": jaccard(box_mask, mask), "box_pred": box_iou,
                     "click_J": jaccard(click_mask, mask), "click_pred": click_iou})
    proposals = generate_masks(model, feats.feat, feats.high_res, AutoMaskConfig())
    auto = to_video_size(proposals.low_res, H, W)  # (K, H, W)
    truth = [m for _, m in objects]
    ious = np.array([[jaccard(p, m) for p in auto] for m in truth]).reshape(len(truth), len(auto))
    return {"objects": rows, "found": int((ious.max(1, initial=0) >= 0.5).sum()), "true": len(truth),
            "proposals": len(auto), "proposals_matched": int((ious.max(0, initial=0) >= 0.5).sum())}


def calibration(pred: np.ndarray, actual: np.ndarray) -> dict:
    """Mean |predicted - actual| IoU, Pearson r, and per predicted-IoU bin: count, mean predicted, mean actual."""
    bins = []
    for lo, hi in zip(BINS[:-1], BINS[1:]):
        sel = (pred >= lo) & (pred < hi)
        if sel.any():
            bins.append({"bin": f"[{lo:.2f}, {min(hi, 1.0):.2f}]", "n": int(sel.sum()),
                         "predicted": float(pred[sel].mean()), "actual": float(actual[sel].mean())})
    r = float(np.corrcoef(pred, actual)[0, 1]) if len(pred) > 1 and pred.std() > 0 and actual.std() > 0 else float("nan")
    return {"mae": float(np.abs(pred - actual).mean()), "pearson_r": r, "bins": bins}


def summarize(frames: list[dict]) -> dict:
    rows = [r for f in frames for r in f["objects"]]
    col = {k: np.array([r[k] for r in rows]) for k in rows[0]}
    pred = np.concatenate([col["box_pred"], col["click_pred"]])
    actual = np.concatenate([col["box_J"], col["click_J"]])
    found, true = sum(f["found"] for f in frames), sum(f["true"] for f in frames)
    props, matched = sum(f["proposals"] for f in frames), sum(f["proposals_matched"] for f in frames)
    return {"frames": len(frames), "objects": len(rows), "box_J": float(col["box_J"].mean()),
            "click_J": float(col["click_J"].mean()), "auto_recall": found / max(true, 1),
            "auto_precision": matched / max(props, 1), "proposals_per_frame": props / len(frames),
            "calibration": calibration(pred, actual)}


def markdown(s: dict, args) -> str:
    c = s["calibration"]
    lines = [f"{args.split} split, {s['frames']} frames ({s['objects']} objects), checkpoint "
             f"{args.checkpoint or 'embedded'}:", "",
             "| box J | click J | auto-mask recall @0.5 | auto-mask precision @0.5 | proposals/frame | "
             "IoU head mean abs error | IoU head Pearson r |", "|---|---|---|---|---|---|---|",
             f"| {s['box_J']:.4f} | {s['click_J']:.4f} | {s['auto_recall']:.4f} | {s['auto_precision']:.4f} | "
             f"{s['proposals_per_frame']:.1f} | {c['mae']:.4f} | {c['pearson_r']:.3f} |", "",
             "| predicted IoU | masks | mean predicted | mean actual |", "|---|---|---|---|"]
    lines += [f"| {b['bin']} | {b['n']} | {b['predicted']:.3f} | {b['actual']:.3f} |" for b in c["bins"]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.frame_prompts", description=__doc__.split("\n")[0])
    ap.add_argument("--split", default="heldout", choices=("test", "heldout", "val"))
    ap.add_argument("--videos", type=int, default=50)
    ap.add_argument("--checkpoint", default=None, help="weights (default: the embedded ones)")
    ap.add_argument("--image-size", type=int, default=None)
    ap.add_argument("--out", default="out/frame_prompts")
    args = ap.parse_args(argv)
    model = load_model("synthetic-tiny", checkpoint=resolve_checkpoint("synthetic-tiny", args.checkpoint),
                       image_size=args.image_size).eval()
    cfg = SyntheticConfig(num_frames=FRAMES)
    frames = [score_frame(model, render_video(split_seed(args.split, i), cfg), FRAMES // 2) for i in range(args.videos)]
    summary = summarize(frames)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.split}.json").write_text(json.dumps(summary, indent=1))
    print(markdown(summary, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
