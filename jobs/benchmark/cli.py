"""Frames/s and memory of samstream against the reference predictor (PyPI `sam2`): same weights, frames, prompts.

    python -m jobs.benchmark [--preset sam2.1-tiny] [--image-size 512] [--which ref,ours,batched,job,memory]
    ray job submit --address http://<head>:8265 --working-dir . -- python -m jobs.benchmark --out /tmp/bench

Configurations (--which): ref, the reference video predictor (it loads the whole video first; its init_state
counts in its frames/s and is reported as setup_s); ours, our StreamingTracker on one stream; batched, B
streams stepped together (aggregate frames/s); job, the segment job (Ray, mp4 decode, RLE, Parquet,
snapshots) with each number of --actors, beside our tracker alone in as many processes; memory, peak memory
of each system against video length, every length in a fresh process. The reference is built from its own
config with random (seeded) weights, and ours loads the same tensors. Stage times (ms per frame) come from a
separate, shorter profiled pass; frames/s from the unprofiled repeats (median). The memory policy flags
(--num-recent, --int8-memory, ...: jobs.segment's) set what our tracker keeps in every configuration; the
reference keeps its own, and the memory rows report our state bytes per object. ref, ours and batched need
neither Ray nor PyAV nor pycocotools: they are imported by the job and memory parts only.

Writes <out>/results.parquet (one row per configuration), <out>/results.md (the table, with speed-ups
against the reference measured in the same run) and <out>/results.png, and prints the table. Exit code 0
on success, 1 for bad arguments, 2 when a measurement failed (the notes say which; the rest is written).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Callable

import torch

from model import MemoryPolicy, SamstreamError
from model.memory_policy_spec import policy_spec
from workers.host_allocator import tune_host_allocator

from ..memory_cli import add_memory_args, policy_from_args
from .bench import Bench
from .config import SYSTEMS, WHICH, BenchmarkConfig, BenchmarkConfigError
from .probe import REPO, probe_main
from .report import RunInfo, add_ratios, git_commit, machine_info, markdown, now, plot, write_parquet


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on bad arguments; 2 means "a measurement failed" here, so bad arguments exit 1."""

    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(1, f"{self.prog}: error: {message}\n")


def _positive_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"every value must be >= 1, got {text!r}")
    return tuple(dict.fromkeys(values))  # in order, without repeats


def _names(known: tuple[str, ...], what: str) -> Callable[[str], tuple[str, ...]]:
    """An argparse type: a comma list of `known` names, in order, without repeats."""
    def parse(text: str) -> tuple[str, ...]:
        names = tuple(dict.fromkeys(n.strip() for n in text.split(",")))
        unknown = [n for n in names if n not in known]
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown {what} {unknown[0]!r} in {text!r}; known: {','.join(known)}")
        return names
    return parse


def parse_args(argv) -> argparse.Namespace:
    d = BenchmarkConfig()
    ap = _Parser(prog="python -m jobs.benchmark", description=__doc__,
                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default=d.preset, help="model preset (default: %(default)s)")
    ap.add_argument("--image-size", type=int, default=d.image_size, help="model input size; frames are generated "
                                                                         "at this size, square (default: %(default)s)")
    ap.add_argument("--objects", type=int, default=d.objects, help="objects prompted on frame 0 (default: %(default)s)")
    ap.add_argument("--frames", type=int, default=d.frames, help="frames per video (default: %(default)s)")
    ap.add_argument("--batch-sizes", type=_positive_list, default=d.batch_sizes, help="streams stepped together")
    ap.add_argument("--actors", type=_positive_list, default=None,
                    help="actor counts of the job runs (default: 1,2 on CPU; 1..GPUs with GPUs)")
    ap.add_argument("--memory-lengths", type=_positive_list, default=d.memory_lengths, help="video lengths")
    ap.add_argument("--memory-systems", type=_names(SYSTEMS, "system"), default=SYSTEMS,
                    help="systems measured at each memory length (default: both; 'samstream' alone reaches "
                         "lengths the reference would take hours over)")
    ap.add_argument("--which", type=_names(WHICH, "configuration"), default=WHICH,
                    help=f"subset of {','.join(WHICH)} (default: all)")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    ap.add_argument("--dtype", choices=("auto", "fp32", "bf16"), default="auto",
                    help="autocast of both systems: auto = bf16 on CUDA, fp32 on CPU (bf16 on CPU needs AVX512-BF16 "
                         "to be fast)")
    ap.add_argument("--reference-dtype", choices=("same", "fp32", "bf16"), default="same",
                    help="the reference's autocast when it should differ from --dtype: e.g. --dtype bf16 "
                         "--reference-dtype fp32 compares each system at its default on an AMX CPU")
    ap.add_argument("--compile", action="store_true",
                    help="torch.compile our hot step (inductor, static shapes) in the in-process and job runs; the "
                         "warm-up takes the compile time out of the in-process frames/s, not out of the job's")
    ap.add_argument("--reference-compile", action="store_true",
                    help="the reference in its fastest mode (vos_optimized: SAM2VideoPredictorVOS torch.compiles "
                         "its components, max-autotune; minutes of compiling at the first frames)")
    ap.add_argument("--threads", type=int, default=d.threads,
                    help="torch threads of every measuring process and job actor (default 1: both systems and "
                         "every actor get the same share)")
    ap.add_argument("--repeats", type=int, default=d.repeats, help="timed runs per configuration, alternated (median)")
    ap.add_argument("--profile-frames", type=int, default=d.profile_frames,
                    help="frames of the profiled pass for stage times")
    ap.add_argument("--out", default=d.out, help="output directory (default: %(default)s)")
    ap.add_argument("--scratch", default=None, help="where videos and weights are written (default: a temp dir; "
                                                    "job runs on a multi-node cluster need one every node sees)")
    ap.add_argument("--address", default=None, help="Ray address for the job runs (default: RAY_ADDRESS, else "
                                                    "a local Ray)")
    add_memory_args(ap, segment=False)
    return ap.parse_args(argv)


def config_from_args(a: argparse.Namespace) -> BenchmarkConfig:
    """The one place arguments become a config: "auto" resolved against this machine, then validated."""
    cuda = torch.cuda.is_available()
    if a.device == "cuda" and not cuda:
        raise BenchmarkConfigError("device", a.device, "auto or cpu here (torch.cuda.is_available() is False)")
    device = "cuda" if a.device == "cuda" or (a.device == "auto" and cuda) else "cpu"
    dtype = a.dtype if a.dtype != "auto" else ("bf16" if device == "cuda" else "fp32")
    actors = a.actors or ((1, 2) if device == "cpu" else tuple(range(1, torch.cuda.device_count() + 1)))
    fields = {k: v for k, v in vars(a).items() if k in BenchmarkConfig.names()}
    ref_dtype = dtype if a.reference_dtype == "same" else a.reference_dtype
    return BenchmarkConfig(**(fields | {"device": device, "dtype": dtype, "reference_dtype": ref_dtype,
                                        "actors": actors, "policy": policy_from_args(a)}))


def _standing_notes(cfg: BenchmarkConfig) -> list[str]:
    """How to read the figures of the parts that ran."""
    kernel = "summed CUDA kernel time inside each range" if cfg.device == "cuda" else "wall time inside each range"
    notes = ["hole filling off in both systems (the reference's needs its CUDA extension)",
             "host allocator: every measuring process, both systems alike, keeps freed memory for reuse as the job's "
             "actors do (workers/host_allocator.py)"]
    if cfg.policy != MemoryPolicy():
        notes.append(f"memory: ours keeps {policy_spec(cfg.policy)}, the reference its own (prompted frames + 6 "
                     "recent): speed and memory ratios compare different memories")
    if cfg.reference_compile:
        notes.append("reference: its fastest mode (vos_optimized: SAM2VideoPredictorVOS, components torch.compiled "
                     "with max-autotune); the warm-up takes its compile time out of its frames/s")
    if cfg.speed:
        notes += [
            f"frames: a generated scene at {cfg.image_size}x{cfg.image_size}, JPEG quality 95; ours is fed the "
            "decoded JPEG pixels (already in memory: no decode in its figures), the reference reads the folder",
            f"stage ms: a separate profiled pass of {min(cfg.frames, cfg.profile_frames)} frames under "
            f"torch.profiler ({kernel}; the profiler's overhead is in these, not in frames/s). Ours: image_encoder "
            "includes resizing; mask_decoder excludes memory_attention. Reference: decode is its whole-video load "
            "(resize, normalise)",
            "in-process peaks (single / batched): the benchmark process's peak during that configuration, both "
            "models loaded; the memory rows (a fresh process each) are the per-system figures"]
    if "job" in cfg.which:
        notes.append("job rows: frames/s end to end (plan, actor start, model load included); stage ms are actor "
                     "seconds per frame (decode, model, rle_write = masks to host + RLE + Parquet, snapshot); "
                     "peak = actor RSS")
    return notes


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--probe"] and len(argv) == 2:  # a measurement in a fresh process (probe.py)
        return probe_main(argv[1])
    try:
        cfg = config_from_args(parse_args(argv))
    except SystemExit as e:  # argparse: bad arguments (1, see _Parser) or --help (0)
        return int(e.code or 0)
    except (ValueError, SamstreamError) as e:
        print(f"python -m jobs.benchmark: error: {e}", file=sys.stderr)
        return 1
    Path(cfg.out).mkdir(parents=True, exist_ok=True)  # before hours of measuring: a bad --out fails now
    bench = run(cfg)
    command = "python -m jobs.benchmark " + " ".join(shlex.quote(a) for a in argv)
    write_results(cfg, bench, command)
    return 2 if bench.failed else 0


def run(cfg: BenchmarkConfig) -> Bench:
    """Every configuration of `cfg`, measured with cfg.threads torch threads (the caller's are restored)."""
    tune_host_allocator()  # as the actors do; the reference measured in this process gets it as well
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        with tempfile.TemporaryDirectory(prefix="samstream-bench-", dir=cfg.scratch) as work:
            bench = Bench(cfg, Path(work))
            bench.run()
    finally:
        torch.set_num_threads(threads)
    return bench


def write_results(cfg: BenchmarkConfig, bench: Bench, command: str) -> None:
    out = Path(cfg.out)
    add_ratios(bench.rows)
    info = RunInfo(now(), machine_info(), git_commit(REPO), torch.__version__, cfg.preset, cfg.image_size,
                   cfg.objects, cfg.device, cfg.dtype, cfg.reference_dtype, bench.compiled, cfg.threads, cfg.repeats,
                   cfg.reference_compile, policy_spec(cfg.policy))
    text = markdown(info, bench.rows, command, _standing_notes(cfg) + bench.notes)
    write_parquet(info, bench.rows, out / "results.parquet")
    (out / "results.md").write_text(text)
    plot(bench.rows, out / "results.png", f"samstream vs reference: {cfg.preset} at {cfg.image_size} px, "
                                          f"{cfg.device} {cfg.dtype}, {info.date}")
    print(text)
    print(f"wrote {out / 'results.parquet'}, {out / 'results.md'}, {out / 'results.png'}")
