"""Training throughput of jobs.train's step on this machine: clips/s for variants, paired in one process.

Each variant is jobs.train.train_step (forward, backward, AdamW) over the same pre-rendered clips (rendering is
timed apart, per clip); variants take turns round by round (A B C A B C ...) so that drift in the machine's
speed hits them alike, and the median of each variant's rounds is reported with its ratio to the first.

    python -m benchmarks.train_throughput --rounds 3 --steps 2 --variants fp32,bf16 [--batch 8] [--length 16]
"""

import argparse
import statistics
import time

import torch

from jobs import train as train_job
from model.training.clips import step_clips

VARIANTS = {  # name -> (jobs.train flags, compile the image encoder)
    "fp32": (["--autocast", "off"], False),
    "bf16": (["--autocast", "bf16"], False),
    "fp32-compiled-encoder": (["--autocast", "off"], True),
}


def _setup(flags, base, compile_encoder: bool):
    args = train_job.parse_args(base + flags)
    torch.manual_seed(0)
    model = train_job.build_model(args, torch.device("cpu")).train()
    if compile_encoder:
        model.image_encoder.compile(dynamic=True)
    return args, model, train_job.make_optimizer(model, args)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--variants", default="fp32,bf16")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=2, help="timed steps per variant and round")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--length", type=int, default=16, help="clip length")
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--extra", default="", help="more jobs.train flags for every variant, space separated")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.set_flush_denormal(True)
    base = ["--out", "/tmp/unused", "--batch", str(a.batch), "--curriculum", f"0:{a.length}",
            "--image-size", str(a.image_size), "--max-objects", "4", "--warmup", "1"] + a.extra.split()
    names = a.variants.split(",")
    setups = {n: _setup(VARIANTS[n][0], base, VARIANTS[n][1]) for n in names}
    args0, model0, _ = setups[names[0]]
    t0 = time.perf_counter()
    clips = [step_clips(train_job.clip_spec(args0, model0.cfg.image_size), s, a.length) for s in range(a.steps + 1)]
    render_s = (time.perf_counter() - t0) / (a.batch * len(clips))
    for n in names:  # warm-up step (and compilation) outside the timing
        args, model, opt = setups[n]
        train_job.train_step(model, opt, args, 0, torch.device("cpu"), clips[0])
    times = {n: [] for n in names}
    for _ in range(a.rounds):
        for n in names:
            args, model, opt = setups[n]
            t = time.perf_counter()
            for s in range(1, a.steps + 1):
                train_job.train_step(model, opt, args, s, torch.device("cpu"), clips[s])
            times[n].append(a.steps * a.batch / (time.perf_counter() - t))
    print(f"rendering: {render_s * 1000:.0f} ms per clip of {a.length} frames at {a.image_size} px (one core)")
    first = statistics.median(times[names[0]])
    for n in names:
        med = statistics.median(times[n])
        print(f"{n:24s} {med:7.3f} clips/s  (rounds: {', '.join(f'{x:.3f}' for x in times[n])})  "
              f"x{med / first:.2f} of {names[0]}")


if __name__ == "__main__":
    main()
