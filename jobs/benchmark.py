"""Frames/s and memory of samstream against the reference predictor (PyPI `sam2`): same weights, frames, prompts.

    python -m jobs.benchmark [--preset sam2.1-tiny] [--image-size 512] [--which ref,ours,batched,job,memory]
    ray job submit --address http://<head>:8265 --working-dir . -- python -m jobs.benchmark --out /tmp/bench

Configurations (--which): ref, the reference video predictor (it loads the whole video first; its init_state
counts in its frames/s and is reported as setup_s); ours, our StreamingTracker on one stream; batched, B
streams stepped together (aggregate frames/s); job, the segment job (Ray, mp4 decode, RLE, Parquet,
snapshots) with each number of --actors, beside our tracker alone in as many processes; memory, peak memory
of each system against video length, every length in a fresh process. The reference is built from its own
config with random (seeded) weights, and ours loads the same tensors. Stage times (ms per frame) come from a
separate, shorter profiled pass; frames/s from the unprofiled repeats (median).

Writes <out>/results.parquet (one row per configuration), <out>/results.md (the table, with speed-ups
against the reference measured in the same run) and <out>/results.png, and prints the table. Exit code 0
on success, 1 for bad arguments, 2 when a measurement failed (the notes say which; the rest is written).
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from model import SamstreamError, get_config, load_model
from model.tracker import STAGE_LABELS
from workers.host_allocator import tune_host_allocator

from .benchmark_job import bench_job, bench_memory
from .benchmark_measure import (REFERENCE_LABELS, REPO, build_reference, build_tracker, first_prompts, jpeg_subset,
                                ours_stage_ms, peak_mb, profile_stages, read_jpegs, reference_ranges,
                                reference_unavailable, reset_peak, run_reference, run_streams, save_weights,
                                write_jpegs)
from .benchmark_probe import probe_main
from .benchmark_report import Row, RunInfo, add_ratios, git_commit, machine_info, markdown, now, plot, write_parquet

WHICH = ("ref", "ours", "batched", "job", "memory")
SYSTEMS = ("reference", "samstream")


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
    ap = _Parser(prog="python -m jobs.benchmark", description=__doc__,
                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="sam2.1-tiny", help="model preset (default: %(default)s)")
    ap.add_argument("--image-size", type=int, default=512, help="model input size; frames are generated at "
                                                                "this size, square (default: %(default)s)")
    ap.add_argument("--objects", type=int, default=3, help="objects prompted on frame 0 (default: %(default)s)")
    ap.add_argument("--frames", type=int, default=200, help="frames per video (default: %(default)s)")
    ap.add_argument("--batch-sizes", type=_positive_list, default=(1, 2, 4, 8), help="streams stepped together")
    ap.add_argument("--actors", type=_positive_list, default=None,
                    help="actor counts of the job runs (default: 1,2 on CPU; 1..GPUs with GPUs)")
    ap.add_argument("--memory-lengths", type=_positive_list, default=(100, 1000, 3000), help="video lengths")
    ap.add_argument("--memory-systems", type=_names(SYSTEMS, "system"), default=SYSTEMS,
                    help="systems measured at each memory length (default: both; 'samstream' alone reaches "
                         "lengths the reference would take hours over)")
    ap.add_argument("--which", type=_names(WHICH, "configuration"), default=WHICH, help=f"subset of {','.join(WHICH)} (default: all)")
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
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads of every measuring process and job actor (default 1: both systems and "
                         "every actor get the same share)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per configuration, alternated (median)")
    ap.add_argument("--profile-frames", type=int, default=20, help="frames of the profiled pass for stage times")
    ap.add_argument("--out", default="out/benchmark", help="output directory (default: %(default)s)")
    ap.add_argument("--scratch", default=None, help="where videos and weights are written (default: a temp dir; "
                                                    "job runs on a multi-node cluster need one every node sees)")
    ap.add_argument("--address", default=None, help="Ray address for the job runs (default: RAY_ADDRESS, else "
                                                    "a local Ray)")
    return ap.parse_args(argv)


@dataclass(frozen=True)
class BenchConfig:
    preset: str
    image_size: int
    objects: int
    frames: int
    batch_sizes: tuple[int, ...]
    actors: tuple[int, ...]
    memory_lengths: tuple[int, ...]
    memory_systems: tuple[str, ...]
    which: tuple[str, ...]
    device: str  # resolved: cpu or cuda
    dtype: str  # resolved: fp32 or bf16
    reference_dtype: str  # resolved: fp32 or bf16
    compile: bool
    threads: int
    repeats: int
    profile_frames: int
    out: str
    scratch: str | None
    address: str | None

    @classmethod
    def from_args(cls, a: argparse.Namespace) -> "BenchConfig":
        """Validated arguments; errors name the offending value."""
        get_config(a.preset, a.image_size)  # unknown presets and bad sizes
        for name in ("objects", "frames", "threads", "repeats", "profile_frames"):
            if getattr(a, name) < (2 if name == "frames" else 1):
                raise ValueError(f"--{name.replace('_', '-')} must be >= {2 if name == 'frames' else 1}, "
                                 f"got {getattr(a, name)}")
        if a.objects > 32:
            raise ValueError(f"--objects must be <= 32, got {a.objects}")
        cuda = torch.cuda.is_available()
        if a.device == "cuda" and not cuda:
            raise ValueError("--device cuda, but torch.cuda.is_available() is False on this machine")
        device = "cuda" if a.device == "cuda" or (a.device == "auto" and cuda) else "cpu"
        dtype = a.dtype if a.dtype != "auto" else ("bf16" if device == "cuda" else "fp32")
        actors = a.actors or ((1, 2) if device == "cpu" else tuple(range(1, torch.cuda.device_count() + 1)))
        fields = {k: v for k, v in vars(a).items() if k in cls.__dataclass_fields__}
        ref_dtype = dtype if a.reference_dtype == "same" else a.reference_dtype
        return cls(**(fields | {"device": device, "dtype": dtype, "reference_dtype": ref_dtype, "actors": actors}))


@dataclass
class _Speed:
    """One in-process speed configuration: a row to fill, and a run over the first n frames."""

    row: Row
    run: Callable[[int], tuple[int, float, float | None]]  # n -> (frames, seconds, setup seconds)
    profile: Callable[[int], dict[str, float]]  # n -> ms per frame per stage


class Bench:
    def __init__(self, cfg: BenchConfig, work: Path):
        self.cfg, self.work = cfg, work
        self.device = torch.device(cfg.device)
        self.rows: list[Row] = []
        self.notes: list[str] = []
        self.failed = False
        self.prompts = first_prompts(cfg.image_size, cfg.objects)
        self.ref_reason = reference_unavailable(cfg.preset)
        self.predictor = self.tracker = None
        self.weights: str | None = None
        self.compiled = False
        self._jpegs: list[Path] = []
        self._frames = None

    # ---- shared inputs ----------------------------------------------------------------------------
    def prepare(self) -> None:
        """Weights both systems load: the reference's own random init when it exists for the preset."""
        cfg = self.cfg
        if self.ref_reason is None:
            self.predictor = build_reference(cfg.preset, cfg.image_size, self.device, seed=0)
            state_dict = self.predictor.state_dict()
        else:
            torch.manual_seed(0)
            state_dict = load_model(cfg.preset, None, cfg.image_size).state_dict()
        self.weights = save_weights(state_dict, self.work / "weights.pt")
        # Compiled (inductor) with --compile; the warm-up runs take the compile time out of frames/s.
        self.tracker = build_tracker(cfg.preset, self.weights, cfg.image_size, self.device, cfg.dtype, cfg.compile)
        self.compiled = cfg.compile

    def jpegs(self, n: int) -> list[Path]:
        """The first n frames as JPEG files (written once, extended on demand)."""
        if n > len(self._jpegs):
            self._jpegs += write_jpegs(self.work / "jpg", len(self._jpegs), n, self.cfg.image_size, self.cfg.objects)
        return self._jpegs[:n]

    def folder(self, n: int) -> str:
        return jpeg_subset(self.jpegs(n), n, self.work / f"video{n}")

    def frames(self, n: int) -> list:
        if self._frames is None:
            self._frames = read_jpegs(self.jpegs(self.cfg.frames))
        return self._frames[:n]

    def section(self, name: str, fn: Callable[[], None]) -> None:
        """Run one part of the benchmark; a failure is recorded, and the other parts still run."""
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - reported in the notes and the exit code
            traceback.print_exc()
            self.failed = True
            self.notes.append(f"{name} failed: {type(e).__name__}: {e}")

    # ---- speed: reference, ours, batched ------------------------------------------------------------
    def speed_configs(self) -> list[_Speed]:
        cfg, configs = self.cfg, []
        if "ref" in cfg.which:
            if self.ref_reason:
                self.notes.append(f"reference skipped: {self.ref_reason}")
            else:
                configs.append(_Speed(Row("reference", "single", cfg.frames), self._run_ref, self._profile_ref))
        sizes = ((1,) if "ours" in cfg.which else ()) + (cfg.batch_sizes if "batched" in cfg.which else ())
        for i, b in enumerate(sizes):
            mode = "single" if "ours" in cfg.which and i == 0 else "batched"
            configs.append(_Speed(Row("samstream", mode, cfg.frames, streams=b), self._run_ours(b),
                                  self._profile_ours(b)))
        return configs

    def _run_ref(self, n: int):
        return run_reference(self.predictor, self.folder(n), self.prompts, self.device, self.cfg.reference_dtype)

    def _profile_ref(self, n: int) -> dict[str, float]:
        with reference_ranges(self.predictor):
            frames, totals = profile_stages(lambda: self._run_ref(n)[0], REFERENCE_LABELS, self.device)
        return {k: v / frames for k, v in totals.items()}

    def _run_ours(self, streams: int):
        def run(n: int):
            frames, seconds = run_streams(self.tracker, [self.frames(n)] * streams, self.prompts)
            return frames, seconds, None
        return run

    def _profile_ours(self, streams: int):
        def profile(n: int) -> dict[str, float]:
            frames, totals = profile_stages(lambda: self._run_ours(streams)(n)[0], STAGE_LABELS, self.device)
            return ours_stage_ms(totals, frames)
        return profile

    def bench_speed(self) -> None:
        cfg = self.cfg
        configs = self.speed_configs()
        for c in configs:  # warm-up: first calls (allocator, kernel selection, compiles) are not the steady state
            c.run(min(cfg.frames, 3 if self.compiled else 2))
        times: dict[int, list] = {i: [] for i in range(len(configs))}
        peaks: dict[int, list] = {i: [] for i in range(len(configs))}
        for _ in range(cfg.repeats):  # alternated, so drifting machine load hits every configuration alike
            for i, c in enumerate(configs):
                exact = reset_peak(self.device)
                times[i].append(c.run(cfg.frames))
                peaks[i].append(peak_mb(self.device) + (exact,))
        for i, c in enumerate(configs):
            self._fill_speed(c, times[i], peaks[i])
        if any(not p[2] for ps in peaks.values() for p in ps):
            self.notes.append("peak memory could not be reset between configurations: in-process peaks include "
                              "the ones before")

    def _fill_speed(self, c: _Speed, times: list, peaks: list) -> None:
        r = c.row
        r.frames_per_s = statistics.median(f / s for f, s, _ in times)
        r.ms_per_frame = 1000.0 / r.frames_per_s
        if r.system == "reference":
            r.setup_s = statistics.median(t[2] for t in times)
        else:
            r.ms_model = r.ms_per_frame
        r.peak_mem_mb, r.memory_kind = max(p[0] or 0.0 for p in peaks), peaks[0][1]
        for stage, ms in c.profile(min(self.cfg.frames, self.cfg.profile_frames)).items():
            setattr(r, f"ms_{stage}", ms)
        self.rows.append(r)

    # ---- everything (the segment job and memory: benchmark_job.py) -----------------------------------
    def run(self) -> None:
        self.section("setup", self.prepare)
        if self.weights is None:
            return
        if {"ref", "ours", "batched"} & set(self.cfg.which):
            self.section("speed", self.bench_speed)
        if "job" in self.cfg.which:
            self.section("job", lambda: bench_job(self))
        if "memory" in self.cfg.which:
            self.section("memory", lambda: bench_memory(self))


def _standing_notes(cfg: BenchConfig) -> list[str]:
    """How to read the figures of the parts that ran."""
    kernel = "summed CUDA kernel time inside each range" if cfg.device == "cuda" else "wall time inside each range"
    notes = ["hole filling off in both systems (the reference's needs its CUDA extension)",
             "host allocator: every measuring process, both systems alike, keeps freed memory for reuse as the job's "
             "actors do (workers/host_allocator.py)"]
    if {"ref", "ours", "batched"} & set(cfg.which):
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
    if argv[:1] == ["--probe"] and len(argv) == 2:  # a measurement in a fresh process (benchmark_probe)
        return probe_main(argv[1])
    try:
        cfg = BenchConfig.from_args(parse_args(argv))
    except SystemExit as e:  # argparse: bad arguments (1, see _Parser) or --help (0)
        return int(e.code or 0)
    except (ValueError, SamstreamError) as e:
        print(f"python -m jobs.benchmark: error: {e}", file=sys.stderr)
        return 1
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    tune_host_allocator()  # as the actors do; the reference measured in this process gets it as well
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        with tempfile.TemporaryDirectory(prefix="samstream-bench-", dir=cfg.scratch) as work:
            bench = Bench(cfg, Path(work))
            bench.run()
    finally:
        torch.set_num_threads(threads)
    add_ratios(bench.rows)
    info = RunInfo(now(), machine_info(), git_commit(REPO), torch.__version__, cfg.preset, cfg.image_size,
                   cfg.objects, cfg.device, cfg.dtype, cfg.reference_dtype, bench.compiled, cfg.threads, cfg.repeats)
    command = "python -m jobs.benchmark " + " ".join(shlex.quote(a) for a in argv)
    text = markdown(info, bench.rows, command, _standing_notes(cfg) + bench.notes)
    write_parquet(info, bench.rows, out / "results.parquet")
    (out / "results.md").write_text(text)
    plot(bench.rows, out / "results.png", f"samstream vs reference: {cfg.preset} at {cfg.image_size} px, "
                                          f"{cfg.device} {cfg.dtype}, {info.date}")
    print(text)
    print(f"wrote {out / 'results.parquet'}, {out / 'results.md'}, {out / 'results.png'}")
    return 2 if bench.failed else 0


if __name__ == "__main__":
    sys.exit(main())
