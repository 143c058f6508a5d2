"""Score training runs side by side: J&F and reappearance J&F of the real tracker on val and held-out videos.

Each run is a jobs.train output (DIR/model.safetensors); its model is rebuilt from the checkpoint's metadata
(image size and `--model` overrides, which load_model does not read), so runs of other input sizes or
capacities score on the very same videos: --videos videos of each split at 256 x 256, --frames frames, every
object prompted with its true mask on its first frame (DAVIS's semi-supervised protocol).

    python -m benchmarks.ablations RUN_DIR [RUN_DIR ...] [--videos 30] [--frames 48] [--splits val,heldout]
        [--image-size S]

Prints one markdown row per run, with the step its checkpoint was saved at.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from safetensors import safe_open

from jobs.train_report import tracker_jf
from model import SAM2Model, get_config
from model.checkpoint import read_state_dict
from model.synthetic import SyntheticConfig
from model.training.config import model_config

PRESET = "synthetic-tiny"


def load_run(weights: Path, image_size: int | None = None) -> tuple[SAM2Model, dict]:
    """The model a jobs.train checkpoint was trained as (at `image_size` instead, if given), and the
    checkpoint's metadata."""
    with safe_open(str(weights), "pt") as f:
        meta = f.metadata() or {}
    size = image_size or (int(meta["image_size"]) if "image_size" in meta else None)
    cfg = model_config(get_config(PRESET, size), json.loads(meta.get("overrides", "{}")))
    model = SAM2Model(cfg)
    model.load_state_dict(read_state_dict(str(weights)))
    return model.eval(), meta


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.ablations", description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--videos", type=int, default=30)
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--splits", default="val,heldout")
    ap.add_argument("--image-size", type=int, default=None,
                    help="run every model at this input size instead of its checkpoint's (e.g. weights trained at "
                         "128 run at 256: what the size alone changes)")
    ap.add_argument("--out", type=Path, default=None, help="also write the results as JSON here")
    args = ap.parse_args(argv)
    splits = [s.strip() for s in args.splits.split(",")]
    cfg = SyntheticConfig(height=256, width=256, num_frames=args.frames)
    print("| run | image size | overrides | step | " + " | ".join(f"{s} J&F | {s} reappearance" for s in splits) + " |")
    print("|---|---|---|---|" + "---|---|" * len(splits))
    results = {}
    for run in args.runs:
        weights = run / "model.safetensors" if run.is_dir() else run
        model, meta = load_run(weights, args.image_size)
        with torch.inference_mode():
            scores = {s: tracker_jf(model, s, args.videos, cfg, "mask") for s in splits}
        results[str(run)] = {"meta": meta, **scores}
        cells = " | ".join(f"{scores[s]['JF']:.4f} | {scores[s]['reappear_J&F']:.4f}" for s in splits)
        print(f"| {run.name} | {model.cfg.image_size} | {meta.get('overrides', '{}')} | {meta.get('step', '?')} | "
              f"{cells} |", flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
