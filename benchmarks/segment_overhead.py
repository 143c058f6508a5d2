"""The segment job's overhead over the bare tracker, and an actor's peak memory against video length.

1. Frames/s of the whole job (decode, track, RLE, Parquet, snapshots, Ray) with one single-threaded actor
   vs the StreamingTracker alone on the same, already decoded frames, one thread.
2. Peak RSS of the actor over a short and a 10x longer video (bounded memory: should be flat).

Videos: the benchmark job's generated scene (jobs/benchmark/scene.py) as H.264, 3 objects prompted on
frame 0 (a click, a box, a mask). Usage: python -m benchmarks.segment_overhead [--frames 150] [--videos 4]
[--short 300] [--long 3000] [--size 256]
"""

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # local Ray on loopback

import numpy as np
import ray
import torch

from cluster.config import RunConfig
from cluster.manifest import read_manifest
from cluster.run import RunSummary, run_segment
from jobs.benchmark.job import prompt_json
from jobs.benchmark.scene import first_prompts, render_frame
from model import StreamingTracker, load_model
from workers.tasks import ModelSpec
from workers.video_source import VideoSource, probe_video
from workers.video_writer import write_mp4

OBJECTS = 3


def corpus(folder: Path, lengths: list[int], name: str, size: int) -> Path:
    rows = []
    prompts = [prompt_json(p) for p in first_prompts(size, OBJECTS)]
    for i, n in enumerate(lengths):
        path = folder / f"{name}{i}.mp4"
        write_mp4(path, np.stack([render_frame(t, size, OBJECTS) for t in range(n)]), fps=24)
        rows.append({"url": str(path), "video_id": f"{name}{i}", "prompts": prompts})
    manifest = folder / f"{name}.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest


def job(manifest: Path, out: Path) -> RunSummary:
    config = RunConfig(out=str(out), model=ModelSpec("synthetic-tiny"), chunk_frames=64, actors=1,
                       progress=False)
    return run_segment(read_manifest(str(manifest)), config)


def tracker_alone(manifest: Path, size: int) -> float:
    """Frames/s of the tracker on pre-decoded frames, one thread, as one actor runs it."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    tracker = StreamingTracker(load_model("synthetic-tiny"))
    first = first_prompts(size, OBJECTS)
    frames_total, seconds = 0, 0.0
    for entry in read_manifest(str(manifest)):
        info = probe_video(entry.url)
        frames = list(VideoSource(info).frames(0, info.num_frames))
        state = tracker.new_stream(info.height, info.width)
        start = time.perf_counter()
        for t, frame in enumerate(frames):
            tracker.step(state, frame, first if t == 0 else ()).masks.cpu()
        seconds += time.perf_counter() - start
        frames_total += len(frames)
    return frames_total / seconds


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--videos", type=int, default=4)
    ap.add_argument("--short", type=int, default=300)
    ap.add_argument("--long", type=int, default=3000)
    ap.add_argument("--size", type=int, default=256, help="frame width and height")
    args = ap.parse_args(argv)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        manifest = corpus(tmp, [args.frames] * args.videos, "v", args.size)
        summary = job(manifest, tmp / "out")
        alone = tracker_alone(manifest, args.size)
        steady = summary.frames / sum(v for k, v in summary.stage_seconds.items())
        print(f"job: {summary.frames} frames in {summary.seconds:.1f} s = {summary.frames_per_s:.2f} "
              f"frames/s end to end (Ray start, probing, actor start included); {steady:.2f} frames/s in the "
              f"actor's chunk work; stages {json.dumps({k: round(v, 1) for k, v in summary.stage_seconds.items()})}")
        print(f"tracker alone: {alone:.2f} frames/s; job / tracker: end to end {summary.frames_per_s / alone:.2f}, "
              f"chunk work {steady / alone:.2f}")
        for n in (args.short, args.long):
            s = job(corpus(tmp, [n], f"len{n}_", args.size), tmp / f"out{n}")
            print(f"{n} frames: actor peak RSS {s.actor_peak_rss_mb:.0f} MB ({s.frames_per_s:.2f} frames/s)")


if __name__ == "__main__":
    main()
