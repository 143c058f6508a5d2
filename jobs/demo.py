"""The README's first command (for now): stream a generated video through the tracker and summarise.

Until the trained embedded model and the distributed segment job land, this runs `synthetic-tiny` with
random weights (or any preset/checkpoint you name) on a generated video and prints what happened.
"""

import argparse
import sys
import time

import numpy as np
import torch

from model import MemoryPolicy, Prompt, StreamingTracker, load_model


def generated_video(num_frames: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """(T, H, W, 3) uint8: a disc drifting over a textured background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([80 + 40 * np.sin(xx / 19.0), 90 + 30 * np.cos(yy / 13.0), 100 + 0 * xx], -1)
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    for t in range(num_frames):
        img = base + rng.normal(0, 5, base.shape)
        cx, cy = width * (0.3 + 0.4 * t / max(num_frames - 1, 1)), height * 0.5
        img[(xx - cx) ** 2 + (yy - cy) ** 2 < (0.15 * height) ** 2] = (220, 50, 40)
        frames[t] = np.clip(img, 0, 255).astype(np.uint8)
    return frames


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m jobs.demo", description=__doc__)
    ap.add_argument("--preset", default="synthetic-tiny")
    ap.add_argument("--checkpoint", default=None, help="fsspec URL of weights (default: random, seeded)")
    ap.add_argument("--frames", type=int, default=120)
    ap.add_argument("--size", type=int, nargs=2, default=(240, 320), metavar=("H", "W"))
    ap.add_argument("--num-recent", type=int, default=6)
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    model = load_model(args.preset, checkpoint=args.checkpoint)
    tracker = StreamingTracker(model, MemoryPolicy(num_recent=args.num_recent))
    H, W = args.size
    video = generated_video(args.frames, H, W)
    state = tracker.new_stream(H, W)
    first = [Prompt(1, points=[[0.3 * W, 0.5 * H]], labels=[1])]
    start, areas = time.perf_counter(), []
    for t, frame in enumerate(video):
        result = tracker.step(state, frame, first if t == 0 else ())
        areas.append(int(result[1].mask.sum()))
    seconds = time.perf_counter() - start
    print(f"samstream demo: preset {args.preset} ({'random weights' if args.checkpoint is None else args.checkpoint})")
    print(f"  {args.frames} frames of {W}x{H} in {seconds:.1f} s = {args.frames / seconds:.1f} frames/s")
    print(f"  tracker state: {state.nbytes / 1e6:.2f} MB, bounded by the memory policy")
    print(f"  object 1 mask area: first {areas[0]} px, mean {np.mean(areas):.0f} px, last {areas[-1]} px")
    return 0


if __name__ == "__main__":
    sys.exit(main())
