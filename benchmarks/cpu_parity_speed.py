"""Per-frame time of our tracker vs the reference video predictor: same CPU, weights, frames, prompts.

Runs both in one process, alternating (reference, ours) `--repeats` times, and prints the median seconds
per frame of each and their ratio. Usage: python -m benchmarks.cpu_parity_speed [--preset P] [--size S]
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from model import Prompt, StreamingTracker, load_model
from tests.conftest import build_reference
from tests.videos import moving_shapes, shape_masks


def prompts(size: int) -> list[Prompt]:
    m = shape_masks(size, size, 0)
    ys, xs = np.nonzero(m["square"])
    return [Prompt(1, points=[[0.3 * size, 0.35 * size]], labels=[1]),
            Prompt(2, box=[xs.min(), ys.min(), xs.max(), ys.max()]), Prompt(3, mask=m["ellipse"])]


def time_reference(predictor, video_dir: str, num_frames: int, size: int) -> float:
    start = time.perf_counter()
    state = predictor.init_state(video_dir)  # loads (and resizes) every frame: part of its per-video cost
    for p in prompts(size):
        if p.mask is not None:
            predictor.add_new_mask(state, 0, p.object_id, torch.as_tensor(p.mask))
        else:
            predictor.add_new_points_or_box(state, 0, p.object_id, points=p.points, labels=p.labels, box=p.box)
    for _ in predictor.propagate_in_video(state):
        pass
    return (time.perf_counter() - start) / num_frames


def time_ours(tracker, frames: list[np.ndarray], size: int) -> float:
    start = time.perf_counter()
    state = tracker.new_stream(size, size)
    for t, frame in enumerate(frames):
        result = tracker.step(state, frame, prompts(size) if t == 0 else ())
        result.masks.cpu()  # what a caller needs: the masks on the host
    return (time.perf_counter() - start) / len(frames)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--preset", default="sam2.1-tiny")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    torch.set_num_threads(torch.get_num_threads())
    predictor = build_reference(args.preset, image_size=args.size, seed=0)
    model = load_model(args.preset, image_size=args.size)
    model.load_state_dict(predictor.state_dict())
    tracker = StreamingTracker(model, fill_hole_area=0)
    with tempfile.TemporaryDirectory() as tmp:
        for t, frame in enumerate(moving_shapes(args.frames, args.size, args.size, seed=1)):
            Image.fromarray(frame).save(Path(tmp) / f"{t:05d}.jpg", quality=95)
        frames = [np.array(Image.open(Path(tmp) / f"{t:05d}.jpg").convert("RGB")) for t in range(args.frames)]
        ref, ours = [], []
        with torch.inference_mode():
            for _ in range(args.repeats):
                ref.append(time_reference(predictor, tmp, args.frames, args.size))
                ours.append(time_ours(tracker, frames, args.size))
    r, o = statistics.median(ref), statistics.median(ours)
    print(f"preset {args.preset}, image size {args.size}, {args.frames} frames, 3 objects, "
          f"{torch.get_num_threads()} threads, median of {args.repeats} alternating runs")
    print(f"reference: {r * 1000:.1f} ms/frame ({1 / r:.2f} frames/s)")
    print(f"ours:      {o * 1000:.1f} ms/frame ({1 / o:.2f} frames/s)")
    print(f"speed-up:  {r / o:.2f}x")


if __name__ == "__main__":
    main()
