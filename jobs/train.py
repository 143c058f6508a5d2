"""Train `synthetic-tiny` on synthetic clips rendered on the fly (train split seeds only).

    python -m jobs.train --out DIR [--steps N] [--batch B] [--resume | --init WEIGHTS] [--workers W] [--lr 5e-4]

Each step renders B videos, cuts one clip from each (length from the curriculum, random frame drops as
occlusion gaps), runs model.training.step.clips_forward (the step's clips of one length as one batch) and sums
model.training.losses per frame. Every --log-every steps a JSON line goes to DIR/log.jsonl; every --eval-every steps
the real StreamingTracker runs on a few val-split videos with first-frame prompts (--val-prompt) and J&F is
logged. Checkpoints: DIR/model.safetensors (loadable by model.load_model("synthetic-tiny", checkpoint=...))
and DIR/train_state.pt (optimizer + step, weights-only torch file); --resume continues from them (step count
and curriculum); --init starts from given weights with a fresh optimizer. --workers W trains data-parallel in
W processes (gloo, one thread each by default: on a 2-core CPU two ranks train ~2x faster than one 2-thread
process). DIR/curves.png plots the log.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import save_file

from model import SAM2Model, get_config
from model.checkpoint import check_state_dict, read_state_dict
from model.training.grow import grow_from
from model.training.config import config_overrides, model_config
from model.training.policies import sample_policies
from model.training.losses import MaskLossWeights
from model.training.step import TrainClip, clip_loss, clips_forward
from model.training.clips import ClipPrefetcher, ClipSpec, RenderedClip, step_clips

from .train_cli import clip_length, parse_args
from .train_report import evaluate_jf, plot_curves

PRESET = "synthetic-tiny"
WEIGHTS, STATE, LOG, PLOT = "model.safetensors", "train_state.pt", "log.jsonl", "curves.png"


# ---------------------------------------------------------------------------------------------- data

def clip_spec(args, size: int) -> ClipSpec:
    return ClipSpec(args.seed, args.rank, args.batch, size, args.drop_prob, args.static_prob, args.max_objects,
                    args.image_share, args.prompt_mix, args.families)


def to_input(model, frames: np.ndarray, masks: np.ndarray, device) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.from_numpy(frames).to(device).permute(0, 3, 1, 2).float() / 255.0  # (T, 3, S, S)
    return (x - model.pixel_mean) / model.pixel_std, torch.from_numpy(masks).to(device)


# ---------------------------------------------------------------------------------------------- steps

def _by_length(clips: list[TrainClip]) -> list[list[TrainClip]]:
    lengths = sorted({len(c.frame_index) for c in clips})
    return [[c for c in clips if len(c.frame_index) == n] for n in lengths]


def train_step(model, opt, args, step: int, device, rendered: list[RenderedClip] | None = None) -> dict:
    """One optimizer step over args.batch clips (`rendered`: the step's clips rendered ahead, else rendered
    here); returns the logged numbers."""
    length = clip_length(args.curriculum_steps, step)
    if rendered is None:
        rendered = step_clips(clip_spec(args, model.cfg.image_size), step, length)
    gen = torch.Generator().manual_seed(args.seed * 1_000_003 + step + args.rank * 7_919_000_003)
    opt.zero_grad(set_to_none=True)
    policies = sample_policies(args.policy_mix, len(rendered), [args.seed, step, args.rank, 17])
    clips = [TrainClip(*to_input(model, c.frames, c.masks, device), c.frame_index, c.prompt, c.clicks, gen, pol)
             for c, pol in zip(rendered, policies)]
    sums: dict[str, torch.Tensor | float] = {}  # on the device: read once, at the step's end
    for group in _by_length(clips):  # one batched unroll per clip length (single frames, video clips)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16(args.autocast, device)):
            outputs = clips_forward(model, group)
        losses = [clip_loss(out, c.gt_masks, MaskLossWeights(temporal=args.temporal_weight))
                  for out, c in zip(outputs, group)]
        (sum(loss for loss, _ in losses) / args.batch).backward()
        for loss, parts in losses:
            for k, v in [("loss", loss), *parts.items()]:
                v = v.detach().float() if torch.is_tensor(v) else float(v)
                sums[k] = sums.get(k, 0.0) + v / args.batch
    if args.workers > 1:
        sums = _all_reduce_mean(model, sums)
    for g in opt.param_groups:
        g["lr"] = learning_rate(args, step) * g["lr_scale"]
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip_grad)
    opt.step()
    totals = _read_once({**sums, "grad_norm": grad_norm})
    return {**totals, "clip_length": length, "lr": opt.param_groups[0]["lr"]}


def _read_once(values: dict[str, torch.Tensor | float]) -> dict[str, float]:
    """The logged numbers as floats, with one host read for all the device ones (on CUDA each read waits for
    the device: one per step, not one per loss term and clip)."""
    names = [k for k, v in values.items() if torch.is_tensor(v)]
    read = dict(zip(names, torch.stack([values[k].float() for k in names]).tolist())) if names else {}
    return {k: read.get(k, v) for k, v in values.items()}


def _all_reduce_mean(model: torch.nn.Module, totals: dict) -> dict[str, torch.Tensor]:
    """Average gradients (one flat buffer) and the logged numbers over the data-parallel ranks."""
    params = list(model.parameters())
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    device = grads[0].device
    logged = [v.reshape(1) if torch.is_tensor(v) else torch.full((1,), v, device=device) for v in totals.values()]
    flat = torch.cat([g.reshape(-1) for g in grads] + logged)
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for p, g in zip(params, grads):
        p.grad = flat[offset:offset + g.numel()].view_as(p).clone()
        offset += g.numel()
    return dict(zip(totals, flat[offset:].unbind()))


def use_bf16(mode: str, device: torch.device) -> bool:
    """Whether the clip forward runs under bf16 autocast (--autocast)."""
    if mode != "auto":
        return mode == "bf16"
    return device.type == "cuda" or (device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def learning_rate(args, step: int) -> float:
    """Linear warm-up, then cosine decay to args.min_lr_ratio * args.lr at args.steps."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    done = min(1.0, (step - args.warmup) / max(args.steps - args.warmup, 1))
    return args.lr * (args.min_lr_ratio + (1 - args.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * done)))


def make_optimizer(model: torch.nn.Module, args) -> torch.optim.AdamW:
    """AdamW with the image encoder in its own group (lr_scale = --encoder-lr-scale)."""
    encoder = [p for n, p in model.named_parameters() if n.startswith("image_encoder.")]
    rest = [p for n, p in model.named_parameters() if not n.startswith("image_encoder.")]
    groups = [{"params": encoder, "lr_scale": args.encoder_lr_scale}, {"params": rest, "lr_scale": 1.0}]
    return torch.optim.AdamW(groups, lr=args.lr, weight_decay=args.weight_decay)


def local_attention_init(model, value: float) -> None:
    """Equal constant query/key biases in every memory cross-attention: RoPE then peaks at zero offset."""
    with torch.no_grad():
        for layer in model.memory_attention.layers:
            layer.cross_attn_image.q_proj.bias.fill_(value)
            layer.cross_attn_image.k_proj.bias.fill_(value)


def set_dropout(model: torch.nn.Module, p: float) -> None:
    """Every dropout in the model (modules and attention dropout_p) to p."""
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = p
        if hasattr(m, "dropout_p"):
            m.dropout_p = p


# ---------------------------------------------------------------------------------------------- checkpoints

def _atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp")  # a crash mid-save never leaves a torn checkpoint
    write(str(tmp))
    os.replace(tmp, path)


def save_checkpoint(out: Path, model, opt, step: int) -> None:
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"preset": PRESET, "step": str(step), "image_size": str(model.cfg.image_size),
            "overrides": json.dumps(config_overrides(model.cfg, get_config(PRESET)))}
    _atomic(out / WEIGHTS, lambda p: save_file(weights, p, metadata=meta))
    _atomic(out / STATE, lambda p: torch.save({"step": step, "optimizer": opt.state_dict()}, p))


def build_model(args, device, checkpoint: str | None = None) -> SAM2Model:
    """The preset at --image-size with --model's overrides and --multimask, random or from `checkpoint`."""
    cfg = model_config(get_config(PRESET, args.image_size), args.model_overrides, args.multimask)
    model = SAM2Model(cfg)
    if checkpoint is not None:
        state_dict = read_state_dict(checkpoint)
        check_state_dict(model, state_dict, checkpoint)
        model.load_state_dict(state_dict)
    return model.to(device)


def load_checkpoint(out: Path, model, opt, device) -> int:
    """Weights into `model`, state into `opt`; returns the step to continue from."""
    model.load_state_dict(read_state_dict(str(out / WEIGHTS)))
    state = torch.load(out / STATE, map_location=device, weights_only=True)
    opt.load_state_dict(state["optimizer"])
    return int(state["step"])


# ---------------------------------------------------------------------------------------------- main

def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _log(out: Path, record: dict) -> None:
    with open(out / LOG, "a") as f:
        f.write(json.dumps(record) + "\n")


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.resume and (not (out / WEIGHTS).exists() or not (out / STATE).exists()):
        print(f"--resume: no checkpoint in {out}", file=sys.stderr)
        return 2
    if args.workers == 1:
        return train(args)
    import torch.multiprocessing as mp

    port = _free_port()
    args.parent_pid = os.getpid()  # ranks stop when this process is gone (killing it must stop the run)
    mp.spawn(_rank_main, args=(args, port), nprocs=args.workers, join=True)
    return 0


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, args, port: int) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=args.workers)
    args.rank = rank
    try:
        train(args)
    finally:
        dist.destroy_process_group()


def train(args) -> int:
    """The training loop of one process (denormal floats flushed to zero on CPU, restored after)."""
    # Peaked softmaxes (the memory attention's locality prior) leave denormal gradients, which x86 cores work
    # through ~100x slower: a step took 16% longer with them on this machine (docs/benchmarks.md).
    flush = _device(args.device).type == "cpu" and torch.set_flush_denormal(True)
    try:
        return _train(args)
    finally:
        if flush:
            torch.set_flush_denormal(False)


def _train(args) -> int:
    """The training loop of one process; rank 0 logs, evaluates and saves."""
    out, device, lead = Path(args.out), _device(args.device), args.rank == 0
    threads = args.threads or (1 if args.workers > 1 else None)
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(args.seed)  # every rank starts from the same weights
    model = build_model(args, device).train()
    set_dropout(model, args.dropout)
    opt = make_optimizer(model, args)
    step = load_checkpoint(out, model, opt, device) if args.resume else args.start_step
    if args.init and not args.resume and args.grow:
        added = grow_from(model, read_state_dict(args.init))
        if lead:
            print(f"grown from {args.init}: {len(added)} new tensors")
    elif args.init and not args.resume:
        model.load_state_dict(build_model(args, "cpu", args.init).state_dict())
    elif not args.resume and args.local_attention_init:
        local_attention_init(model, args.local_attention_init)
    if args.resume and lead:
        print(f"resumed at step {step}")
    t0, start = time.time(), step
    deadline = t0 + 60 * args.max_minutes if args.max_minutes else math.inf
    with ClipPrefetcher(clip_spec(args, model.cfg.image_size), args.data_workers) as data:
        while step < args.steps and _before(deadline, args):
            step = _train_one(model, opt, args, step, device, data, (t0, start))
    if step < args.steps and lead:
        save_checkpoint(out, model, opt, step)
        print(f"--max-minutes {args.max_minutes} spent at step {step} of {args.steps}; --resume goes on")
    if lead and (out / LOG).exists():
        plot_curves(out / LOG, out / PLOT)
    if lead:
        print(f"done: step {step}, checkpoint {out / WEIGHTS}")
    return 0


def _before(deadline: float, args) -> bool:
    """Whether there is time for another step (ranks agree: rank 0's clock decides for all)."""
    if deadline == math.inf:
        return True
    go = torch.tensor([float(time.time() < deadline)])
    if args.workers > 1:
        dist.broadcast(go, src=0)
    return bool(go.item())


def _train_one(model, opt, args, step: int, device, data: ClipPrefetcher, since: tuple[float, int]) -> int:
    """One step with its logging, validation and checkpoint (rank 0) -> the next step."""
    out, lead = Path(args.out), args.rank == 0
    if args.workers > 1 and os.getppid() != args.parent_pid:
        raise SystemExit(f"rank {args.rank}: the launching process {args.parent_pid} is gone; stopping")
    rendered = data.get(step, lambda s: clip_length(args.curriculum_steps, s))
    record = train_step(model, opt, args, step, device, rendered)
    step += 1
    if lead and (step % args.log_every == 0 or step == args.steps):
        rate = (step - since[1]) / (time.time() - since[0])
        _log(out, {"step": step, **record, "steps_per_s": rate, "workers": args.workers})
        print(f"step {step}  loss {record['loss']:.4g}  len {record['clip_length']}  {rate:.2f} steps/s", flush=True)
    if lead and (step % args.eval_every == 0 or step == args.steps):
        summary = evaluate_jf(model, args, device)
        model.train()
        _log(out, {"step": step, "val_JF": summary["JF"], "val_J": summary["J"], "val_F": summary["F"]})
        print(f"step {step}  val J&F {summary['JF']:.4f}", flush=True)
    if lead and (step % args.save_every == 0 or step == args.steps):
        save_checkpoint(out, model, opt, step)
    return step


if __name__ == "__main__":
    sys.exit(main())
