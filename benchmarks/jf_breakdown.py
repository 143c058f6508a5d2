"""Where a segment run loses J: per frame, by frames since the prompt, by object size, visible vs hidden.

jobs.evaluate gives DAVIS's means per object; this splits the same per-frame J (region Jaccard, DAVIS
definition: an empty prediction of an empty truth scores 1) by what a tracker gets wrong:

- frames since the object's prompt (is the first frame after the prompt already poor, or does it drift?),
- visible frames vs frames where the object is hidden (a mask predicted while hidden scores 0),
- object size (quartiles of the true area);
and gives J on the prompted frames themselves (with box or click prompts: the decoder's segmentation with no
memory involved; with mask prompts the prompt is the output).

    python -m benchmarks.jf_breakdown --gt <corpus>/truth --pred <segment run> [--videos N]

Prints the tables; the tracked tables leave the prompted frames out, as benchmarks.synthetic_jf does.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import pandas as pd

from jobs.evaluate import MaskletSource
from model.metrics import jaccard
from workers.masklets import decode_rle

SINCE_PROMPT = [0, 1, 2, 4, 8, 16, 32, 64, 10**9]  # bins of frames since the prompt: (0, 1], (1, 2], ...


def frame_rows(gt: pd.DataFrame, pred: pd.DataFrame) -> list[dict]:
    """One row per (object, frame) of the truth: J, true and predicted area, frames since the prompt."""
    prompted = {obj: frame for (obj, frame), p in pred.iterrows() if p.is_prompt}
    rows = []
    for (obj, frame), g in gt.iterrows():
        if obj not in prompted or frame < prompted[obj]:
            continue  # what precedes the prompt is not tracking
        truth = decode_rle(g.mask_rle, g.height, g.width)
        p = pred.loc[(obj, frame)] if (obj, frame) in pred.index else None
        mask = decode_rle(p.mask_rle, p.height, p.width) if p is not None else np.zeros_like(truth)
        rows.append({"J": jaccard(mask, truth), "area": int(truth.sum()), "pred_area": int(mask.sum()),
                     "since_prompt": frame - prompted[obj]})
    return rows


def breakdown(frames: pd.DataFrame) -> dict[str, pd.DataFrame]:
    prompted, frames = frames[frames.since_prompt == 0], frames[frames.since_prompt > 0]
    visible = frames[frames.area > 0]
    since = pd.cut(visible.since_prompt, SINCE_PROMPT)
    size = pd.qcut(visible.area, 4, duplicates="drop")
    hidden = frames[frames.area == 0]
    return {
        "visible frames by frames since the prompt": visible.groupby(since, observed=True).J.agg(["mean", "count"]),
        "visible frames by true area (px, quartiles)": visible.groupby(size, observed=True).J.agg(["mean", "count"]),
        "visible vs hidden": pd.DataFrame({
            "mean J": [visible.J.mean(), hidden.J.mean()], "frames": [len(visible), len(hidden)],
            "predicted empty": [(visible.pred_area == 0).mean(), (hidden.pred_area == 0).mean()]},
            index=["visible", "hidden"]),
        "prompted frames": pd.DataFrame({"mean J": [prompted.J.mean()], "frames": [len(prompted)]}, index=["prompted"]),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.jf_breakdown", description=__doc__.split("\n")[0])
    ap.add_argument("--gt", required=True, help="ground-truth masklet table (a corpus's truth/)")
    ap.add_argument("--pred", required=True, help="a segment run's output directory")
    ap.add_argument("--videos", type=int, default=None, help="only the first N videos of the truth")
    args = ap.parse_args(argv)
    if args.videos is not None and args.videos < 1:
        ap.error(f"--videos must be >= 1, got {args.videos}")
    gt = MaskletSource(args.gt, {}, "ground truth")
    pred = MaskletSource(args.pred, {}, "prediction", extra=["is_prompt"])
    rows = [r for v in gt.video_ids()[:args.videos] for r in frame_rows(gt.video(v), pred.video(v))]
    if not rows:
        ap.error(f"no tracked frames: does {args.pred!r} hold predictions for {args.gt!r}?")
    for title, table in breakdown(pd.DataFrame(rows)).items():
        print(f"\n{title}\n{table.round(4).to_string()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
