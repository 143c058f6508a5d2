"""Memory policies scored on the long-occlusion stress set: J&F overall and after long returns, state bytes per
object and the tracker's frames/s, one row per MemoryPolicy.

The stress set (model.synthetic.stress) hides every object for 30-300 frames at a time, several times per
600-frame video, while a look-alike stays in view: what the tracker's memory keeps decides whether it finds
the object again. Every row runs the shipped synthetic-tiny weights on the same videos, each object prompted
with its true mask on its first frame (DAVIS's semi-supervised protocol, the prompted frame left out), scored
by jobs.train_report's loop. Each video is rendered once and tracked by every row in turn.

    python -m benchmarks.memory_policies [--row NAME=SPEC ...] [--table recent] [--videos 8] [--frames 600]
        [--image-size 256] [--min-hidden 31] [--threads N] [--out memory_policies.json]

SPEC is a comma list of MemoryPolicy field=value ("num_recent=8,num_keyframes=4,store_threshold=0.5");
"default" or empty is MemoryPolicy(). Values are parsed by the field's type (int, float, bool as true/false,
"none" where the field may be None), so fields added to MemoryPolicy later need no change here.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from jobs.train_report import JFTally, score_video
from model import MemoryPolicy, StreamingTracker, load_model, resolve_checkpoint
from model.memory_policy_spec import PolicySpecError, parse_policy_spec
from model.synthetic import STRESS_SPLIT, render_stress_video

PRESET = "synthetic-tiny"
TABLES = {  # --table NAME: rows (named by their spec) in the order printed
    "recent": ("num_recent=4", "default", "num_recent=8", "num_recent=12", "num_recent=16", "num_recent=32"),
}


def parse_rows(rows: list[str], tables: list[str]) -> dict[str, MemoryPolicy]:
    """{name: policy} of --table rows, then --row NAME=SPEC ones; only the default policy when neither is given."""
    specs = {spec: spec for table in tables for spec in TABLES[table]}
    for row in rows:
        name, eq, spec = row.partition("=")
        if not eq or not name.strip():
            raise PolicySpecError(f"--row takes NAME=SPEC (SPEC may be 'default'), got {row!r}", row)
        if name.strip() in specs:
            raise PolicySpecError(f"row {name.strip()!r} is given twice", name.strip())
        specs[name.strip()] = spec
    specs = specs or {"default": "default"}
    return {name: parse_policy_spec(spec) for name, spec in specs.items()}


# ---------------------------------------------------------------------------------------------- scoring

@dataclass(frozen=True)
class PolicyRecord:
    """One row's scores on the stress set (bytes per object: the largest over the videos, at each one's end)."""

    name: str  # the row's name (--row NAME=..., or a --table row's spec)
    policy: dict  # the MemoryPolicy's fields as run
    jf: float  # DAVIS J&F over every object of every video (the prompted frame left out)
    j: float
    f: float
    reappear_jf: float  # J&F over the 5 frames after each return from >= min_hidden hidden frames (NaN: none)
    reappearances: int  # such returns scored
    reappear_objects: int  # objects with one or more
    objects: int
    state_bytes_per_object: float  # TrackerState.nbytes / objects: the stored memories
    resident_bytes_per_object: float | None  # TrackerState.resident_nbytes / objects (derived caches too), if any
    frames: int  # frames tracked
    frames_per_s: float  # frames / wall time of the tracker's steps (rendering and scoring left out)


def score_policies(model, policies: dict[str, MemoryPolicy], videos: int, frames: int, image_size: int,
                   min_hidden: int = 31, log=None) -> list[PolicyRecord]:
    """Every policy on stress videos 0..videos-1 (`frames` frames of `image_size` px); one tracker per policy,
    the same model and videos for all."""
    trackers = {name: StreamingTracker(model, policy) for name, policy in policies.items()}
    tallies = {name: JFTally(min_hidden) for name in policies}
    for i in range(videos):
        start = time.perf_counter()
        video = render_stress_video(i, image_size, frames)
        rendered = time.perf_counter() - start
        for name, tracker in trackers.items():
            score_video(tracker, video, f"{STRESS_SPLIT}-{i}", "mask", tallies[name])
        if log:
            log(f"video {i + 1}/{videos}: {len(video.object_ids)} objects, rendered in {rendered:.1f} s, "
                f"tracked by {len(trackers)} rows in {time.perf_counter() - start - rendered:.0f} s")
    return [_record(name, policies[name], tallies[name].summary()) for name in policies]


def _record(name: str, policy: MemoryPolicy, s: dict) -> PolicyRecord:
    return PolicyRecord(name, dataclasses.asdict(policy), s["JF"], s["J"], s["F"], s["reappear_J&F"],
                        s["reappearances"], s["reappear_objects"], s["objects"], s["state_bytes_per_object"],
                        s["resident_bytes_per_object"], s["frames_tracked"], s["frames_per_s"])


# ---------------------------------------------------------------------------------------------- report

def _kib(n: float | None) -> str:
    return "-" if n is None else f"{n / 1024:.0f}"


def markdown(records: list[PolicyRecord], args) -> str:
    lines = [f"Stress split: {args.videos} videos x {args.frames} frames at {args.image_size} px, {PRESET} "
             f"(embedded weights), first-frame mask prompts; returns after >= {args.min_hidden} hidden frames.", "",
             "| row | J&F | J | F | J&F after returns | returns | state KiB/object | resident KiB/object | frames/s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        lines.append(f"| {r.name} | {r.jf:.4f} | {r.j:.4f} | {r.f:.4f} | {r.reappear_jf:.4f} | {r.reappearances} | "
                     f"{_kib(r.state_bytes_per_object)} | {_kib(r.resident_bytes_per_object)} | "
                     f"{r.frames_per_s:.1f} |")
    return "\n".join(lines) + "\n"


def _json_value(v):
    return None if isinstance(v, float) and math.isnan(v) else v  # NaN is not JSON


def write_json(path: Path, records: list[PolicyRecord], args) -> None:
    options = {k: v for k, v in vars(args).items() if k != "out"}
    rows = [{k: _json_value(v) for k, v in dataclasses.asdict(r).items()} for r in records]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"options": options, "preset": PRESET, "rows": rows}, indent=1))


def add_stress_set_args(ap: argparse.ArgumentParser, videos: int, image_size: int) -> None:
    """Which stress-set videos a benchmark tracks, and what counts as a return."""
    ap.add_argument("--videos", type=int, default=videos)
    ap.add_argument("--frames", type=int, default=600)
    ap.add_argument("--image-size", type=int, default=image_size,
                    help="the videos' size (px); the model runs at its own")
    ap.add_argument("--min-hidden", type=int, default=31, help="a return counts after this many hidden frames")


def parse_stress_set_args(ap: argparse.ArgumentParser, argv) -> argparse.Namespace:
    args = ap.parse_args(argv)
    for name in ("videos", "frames", "image_size", "min_hidden"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    return args


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.memory_policies", description=__doc__.split("\n")[0])
    ap.add_argument("--row", action="append", default=[], metavar="NAME=SPEC",
                    help="a row: NAME=comma list of MemoryPolicy field=value, or NAME=default (repeatable)")
    ap.add_argument("--table", action="append", default=[], choices=sorted(TABLES),
                    help="a preset list of rows: recent = num_recent 4, 6 (the default), 8, 12, 16, 32")
    add_stress_set_args(ap, videos=8, image_size=256)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--out", type=Path, default=Path("out/memory_policies.json"))
    args = parse_stress_set_args(ap, argv)
    try:
        policies = parse_rows(args.row, args.table)
    except PolicySpecError as e:
        ap.error(str(e))
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(PRESET, resolve_checkpoint(PRESET, None))
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    records = score_policies(model, policies, args.videos, args.frames, args.image_size, args.min_hidden, log)
    write_json(args.out, records, args)
    print(markdown(records, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
