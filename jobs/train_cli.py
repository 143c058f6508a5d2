"""jobs.train's command line: the options, parsed and checked into one namespace (argparse stays in jobs/)."""

from __future__ import annotations

import argparse

from model.prompts import PROMPT_KINDS
from model.synthetic import REGISTRY
from model.training.config import parse_overrides
from model.training.policies import TRAINING_POLICIES, parse_policy_mix

DESCRIPTION = "Train `synthetic-tiny` on synthetic clips rendered on the fly (train split seeds only)."


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m jobs.train", description=DESCRIPTION)
    p.add_argument("--out", required=True, help="output directory (checkpoints, log, curves)")
    p.add_argument("--steps", type=int, default=20000, help="total optimizer steps (including resumed ones)")
    p.add_argument("--batch", type=int, default=2, help="clips per step")
    p.add_argument("--resume", action="store_true", help="continue from --out's checkpoint")
    p.add_argument("--init", default=None, help="start from these weights (any fsspec URL; e.g. the embedded "
                                                "ones) with a fresh optimizer, counting steps from --start-step")
    p.add_argument("--grow", action="store_true",
                   help="with --init and --model: the weights are a smaller model's; tensors it lacks (e.g. new "
                        "memory-attention layers, which start as the identity) keep their initialisation")
    p.add_argument("--families", default="",
                   help="comma list of kind:name generator families the clips draw from (model.synthetic.families; "
                        "a kind not named uses all its training families), for data-diversity ablations")
    p.add_argument("--start-step", type=int, default=0, help="step count of --init's weights (schedules)")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--encoder-lr-scale", type=float, default=1.0,
                   help="the image encoder's learning rate as a share of --lr (SAM 2 trains its trunk slower)")
    p.add_argument("--clip-grad", type=float, default=0.1, help="max grad norm (SAM 2 uses 0.1)")
    p.add_argument("--warmup", type=int, default=200, help="linear warm-up steps")
    p.add_argument("--min-lr-ratio", type=float, default=0.1,
                   help="cosine decay from --lr after warm-up to this share of it at --steps")
    p.add_argument("--dropout", type=float, default=0.0,
                   help="dropout in memory attention (SAM 2 uses 0.1; 0 trains a small model faster on CPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int, default=None, help="override the preset's 256 (multiple of 32)")
    p.add_argument("--curriculum", default="0:4,3000:8,8000:16",
                   help="step:clip_length pairs; the clip length from each step on")
    p.add_argument("--drop-prob", type=float, default=0.15, help="chance each next frame is dropped")
    p.add_argument("--max-objects", type=int, default=3, help="objects per clip at most")
    p.add_argument("--prompt-mix", default="mask:0.5,points:0.25,box:0.25",
                   help="first-frame prompt kinds and their shares (SAM 2's by default)")
    p.add_argument("--local-attention-init", type=float, default=0.0,
                   help="from scratch: set the memory cross-attention's query and key biases to this constant, so "
                        "that under RoPE each position first attends to the same position in memory (a locality "
                        "prior; random init attends uniformly and the mask in memory is averaged away); 0 = off")
    p.add_argument("--temporal-weight", type=float, default=0.0,
                   help="weight of the temporal consistency loss (mask changes the truth does not make) next to "
                        "focal 20 : dice 1 : iou 1 : presence 1; it is logged whatever its weight")
    p.add_argument("--static-prob", type=float, default=0.0,
                   help="share of clips that repeat one frame: the memory's position alone then tells the object, "
                        "which bootstraps memory attention from scratch (it starts out attending uniformly)")
    p.add_argument("--image-share", type=float, default=0.0,
                   help="share of clips that are one frame prompted with a box or a click (SAM 2 trains on images "
                        "beside videos): cheap steps of segmentation from prompts, next to tracking from memory")
    p.add_argument("--policy-mix", default="reference:1",
                   help="memory policies the clips are unrolled with, name:share pairs drawn per clip (names: "
                        f"{', '.join(TRAINING_POLICIES)}; model/training/policies.py)")
    p.add_argument("--multimask", action="store_true",
                   help="single-click prompts get 3 candidate masks, trained with SAM's min-over-candidates loss "
                        "(the automatic mask generator prompts single clicks)")
    p.add_argument("--model", default="", metavar="FIELD=VALUE,...",
                   help="ablations: override the preset's config fields, e.g. d_model=192,memory_attention_layers=3,"
                        "trunk.embed_dim=48,trunk.stages=1-2-3-1 (checkpoints record them; load_model does not)")
    p.add_argument("--autocast", default="auto", choices=("auto", "bf16", "off"),
                   help="bf16 autocast of the clip forward; auto: on CUDA and on CPUs with native bf16 (AVX512-BF16 "
                        "or AMX), off elsewhere (an AVX2 CPU emulates bf16 matmuls ~50x slower)")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--save-every", type=int, default=200)
    p.add_argument("--val-videos", type=int, default=3)
    p.add_argument("--val-frames", type=int, default=32)
    p.add_argument("--val-prompt", default="box", choices=("points", "box", "mask"),
                   help="first-frame prompt for val J&F (mask: the truth, as in DAVIS's semi-supervised protocol)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--workers", type=int, default=1,
                   help="data-parallel processes on this machine (gloo; each takes --batch clips per step)")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="stop after this much wall-clock time, with a checkpoint (the schedule stays that of --steps: "
                        "--resume goes on); for runs that must fit a session or a lease")
    p.add_argument("--data-workers", type=int, default=0,
                   help="processes per rank that render the next steps' clips ahead (0: render inline; on a GPU "
                        "machine use the spare cores: one core renders ~12 16-frame clips/s at 128 px)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per process (default: torch's choice; 1 per process with --workers > 1)")
    args = p.parse_args(argv)
    args.curriculum_steps = _parse_curriculum(p, args.curriculum)
    args.prompt_mix = _parse_mix(p, args.prompt_mix)
    try:
        args.policy_mix = parse_policy_mix(args.policy_mix)
        args.model_overrides = parse_overrides(args.model)
    except ValueError as e:
        p.error(str(e))
    if not 0.0 <= args.image_share <= 1.0:
        p.error(f"--image-share must be in [0, 1], got {args.image_share}")
    if args.max_minutes is not None and args.max_minutes <= 0:
        p.error(f"--max-minutes must be > 0, got {args.max_minutes}")
    if args.grow and not args.init:
        p.error("--grow needs --init (the smaller model's weights)")
    args.families = tuple(f.strip() for f in args.families.split(",") if f.strip())
    try:
        REGISTRY.for_split("train").narrowed(args.families)  # training draws the train split's families only
    except ValueError as e:
        p.error(f"--families: {e}")
    if args.data_workers < 0:
        p.error(f"--data-workers must be >= 0, got {args.data_workers}")
    for name in ("workers", "steps", "batch", "log_every", "eval_every", "save_every"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    args.rank = 0
    return args


def _parse_curriculum(p, text: str) -> list[tuple[int, int]]:
    try:
        pairs = sorted((int(a), int(b)) for a, b in (item.split(":") for item in text.split(",")))
    except ValueError:
        p.error(f"--curriculum must be step:length pairs like 0:4,3000:8, got {text!r}")
    if not pairs or pairs[0][0] != 0 or any(n < 1 for _, n in pairs):
        p.error(f"--curriculum must start at step 0 with lengths >= 1, got {text!r}")
    return pairs


def _parse_mix(p, text: str) -> dict[str, float]:
    try:
        mix = {k: float(v) for k, v in (item.split(":") for item in text.split(","))}
    except ValueError:
        p.error(f"--prompt-mix must be kind:share pairs like mask:0.5,points:0.25,box:0.25, got {text!r}")
    if not mix or set(mix) - set(PROMPT_KINDS) or any(v < 0 for v in mix.values()) or sum(mix.values()) <= 0:
        p.error(f"--prompt-mix kinds are mask, points, box with shares >= 0 (not all 0), got {text!r}")
    total = sum(mix.values())
    return {k: v / total for k, v in mix.items()}


def clip_length(curriculum: list[tuple[int, int]], step: int) -> int:
    return [n for s, n in curriculum if s <= step][-1]
