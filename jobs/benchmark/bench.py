"""One benchmark run in this process: the shared inputs (weights, frames, prompts), the in-process speed
configurations (ref, ours, batched), and the parts that run elsewhere (job.py: the segment job, memory)."""

from __future__ import annotations

import statistics
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from model import load_model
from model.tracker import STAGE_LABELS

from .config import BenchmarkConfig
from .measure import build_tracker, ours_stage_ms, profile_stages, run_streams, save_weights
from .memory import peak_mb, reset_peak
from .reference import REFERENCE_LABELS, build_reference, reference_ranges, reference_unavailable, run_reference
from .report import Row
from .scene import first_prompts, jpeg_subset, read_jpegs, write_jpegs

WARMUP_FRAMES, COMPILED_WARMUP_FRAMES = 2, 8  # compiled: until the memory banks are full (no new graphs after)


@dataclass
class _Speed:
    """One in-process speed configuration: a row to fill, and a run over the first n frames."""

    row: Row
    run: Callable[[int], tuple[int, float, float | None]]  # n -> (frames, seconds, setup seconds)
    profile: Callable[[int], dict[str, float]]  # n -> ms per frame per stage
    compiled: bool  # its first calls compile: a longer warm-up


class Bench:
    def __init__(self, cfg: BenchmarkConfig, work: Path):
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
        """Weights both systems load: the reference's own random init when it exists for the preset (ours
        when the reference cannot be built: its rows are then missing, ours still measured)."""
        cfg, state_dict = self.cfg, None
        if self.ref_reason is None:
            self.section("reference", self._build_reference)
        if self.predictor is not None:
            state_dict = self.predictor.state_dict()
        else:
            torch.manual_seed(0)
            state_dict = load_model(cfg.preset, None, cfg.image_size).state_dict()
        self.weights = save_weights(state_dict, self.work / "weights.pt")
        # Compiled (inductor) with --compile; the warm-up runs take the compile time out of frames/s.
        self.tracker = build_tracker(cfg.preset, self.weights, cfg.image_size, self.device, cfg.dtype, cfg.compile,
                                     cfg.policy)
        self.compiled = cfg.compile

    def _build_reference(self) -> None:
        try:
            self.predictor = build_reference(self.cfg.preset, self.cfg.image_size, self.device, seed=0,
                                             vos_optimized=self.cfg.reference_compile)
        except Exception as e:
            self.ref_reason = f"it could not be built: {type(e).__name__}: {e}"
            raise

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

    def section(self, name: str, fn: Callable[[], None]) -> bool:
        """Run one part of the benchmark; a failure is recorded, and the other parts still run."""
        try:
            fn()
            return True
        except Exception as e:  # noqa: BLE001 - reported in the notes and the exit code
            traceback.print_exc()
            self.failed = True
            self.notes.append(f"{name} failed: {type(e).__name__}: {' '.join(str(e).split())[:400]}")
            return False

    # ---- speed: reference, ours, batched ------------------------------------------------------------
    def speed_configs(self) -> list[_Speed]:
        cfg, configs = self.cfg, []
        if "ref" in cfg.which:
            if self.ref_reason:
                self.notes.append(f"reference skipped: {self.ref_reason}")
            else:
                configs.append(_Speed(Row("reference", "single", cfg.frames), self._run_ref, self._profile_ref,
                                      cfg.reference_compile))
        sizes = ((1,) if "ours" in cfg.which else ()) + (cfg.batch_sizes if "batched" in cfg.which else ())
        for i, b in enumerate(sizes):
            mode = "single" if "ours" in cfg.which and i == 0 else "batched"
            configs.append(_Speed(Row("samstream", mode, cfg.frames, streams=b), self._run_ours(b),
                                  self._profile_ours(b), self.compiled))
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
        configs = []
        for c in self.speed_configs():  # warm-up: first calls (allocator, kernel selection, compiles) are not
            warm = min(cfg.frames, COMPILED_WARMUP_FRAMES if c.compiled else WARMUP_FRAMES)  # the steady state
            start = time.perf_counter()
            if self.section(f"warm-up of {c.row.label}", lambda: c.run(warm)):
                configs.append(c)  # a configuration that fails alone is left out; the others are measured
            # Progress on stdout: a run cut short by a time limit still tells what its compiles cost.
            print(f"warm-up of {c.row.label}: {warm} frames in {time.perf_counter() - start:.1f} s", flush=True)
        times: dict[int, list] = {i: [] for i in range(len(configs))}
        peaks: dict[int, list] = {i: [] for i in range(len(configs))}
        for rep in range(cfg.repeats):  # alternated, so drifting machine load hits every configuration alike
            for i, c in enumerate(configs):
                exact = reset_peak(self.device)
                times[i].append(c.run(cfg.frames))
                peaks[i].append(peak_mb(self.device) + (exact,))
                print(f"repeat {rep + 1} of {c.row.label}: {times[i][-1][0] / times[i][-1][1]:.2f} frames/s",
                      flush=True)
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

    # ---- everything (the segment job and memory: job.py) --------------------------------------------
    def run(self) -> None:
        if not self.section("setup", self.prepare):
            return
        if self.cfg.speed:
            self.section("speed", self.bench_speed)
        if "job" in self.cfg.which:
            from .job import bench_job

            self.section("job", lambda: bench_job(self))
        if "memory" in self.cfg.which:
            from .job import bench_memory

            self.section("memory", lambda: bench_memory(self))
