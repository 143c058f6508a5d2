"""Per-frame time of our tracker vs the reference video predictor: same CPU, weights, frames, prompts.

Runs both in one process, alternating (reference, ours) `--repeats` times, and prints the median seconds
per frame of each and their ratio. Frames and prompts are the benchmark job's generated scene (3 objects: a
click, a box, a mask). Usage: python -m benchmarks.cpu_parity_speed [--preset P] [--size S]
"""

import argparse
import statistics
import tempfile
from pathlib import Path

import torch

from jobs.benchmark.measure import run_streams
from jobs.benchmark.reference import build_reference, run_reference
from jobs.benchmark.scene import first_prompts, read_jpegs, write_jpegs
from model import StreamingTracker, load_model

OBJECTS = 3


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--preset", default="sam2.1-tiny")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    device = torch.device("cpu")
    predictor = build_reference(args.preset, image_size=args.size, seed=0)
    model = load_model(args.preset, image_size=args.size)
    model.load_state_dict(predictor.state_dict())
    tracker = StreamingTracker(model, fill_hole_area=0)
    prompts = first_prompts(args.size, OBJECTS)
    with tempfile.TemporaryDirectory() as tmp:
        frames = read_jpegs(write_jpegs(Path(tmp), 0, args.frames, args.size, OBJECTS))
        ref, ours = [], []
        for _ in range(args.repeats):
            # The reference's time includes init_state: it loads (and resizes) every frame first.
            n, seconds, _ = run_reference(predictor, tmp, prompts, device, "fp32")
            ref.append(seconds / n)
            n, seconds = run_streams(tracker, [frames], prompts)  # masks brought to the host, as a caller needs
            ours.append(seconds / n)
    r, o = statistics.median(ref), statistics.median(ours)
    print(f"preset {args.preset}, image size {args.size}, {args.frames} frames, {OBJECTS} objects, "
          f"{torch.get_num_threads()} threads, median of {args.repeats} alternating runs")
    print(f"reference: {r * 1000:.1f} ms/frame ({1 / r:.2f} frames/s)")
    print(f"ours:      {o * 1000:.1f} ms/frame ({1 / o:.2f} frames/s)")
    print(f"speed-up:  {r / o:.2f}x")


if __name__ == "__main__":
    main()
