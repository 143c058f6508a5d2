"""Benchmark measurements that run in a fresh interpreter (`python -m jobs.benchmark --probe <json>`).

A process's peak memory only grows, so each memory figure gets its own process; the tracker-alone figure
beside the segment job runs as many processes side by side as the job has actors.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch

from model.memory_policy_spec import parse_policy_spec
from workers.host_allocator import tune_host_allocator

from .measure import build_tracker, run_streams
from .memory import current_mb, peak_mb, reset_peak
from .reference import build_reference, run_reference
from .scene import first_prompts, render_frame

REPO = Path(__file__).resolve().parents[2]  # the checkout: probes run `python -m jobs.benchmark` from it
PROBE_TAG = "SAMSTREAM_BENCH_PROBE "  # prefix of the one stdout line a probe answers with


@dataclass(frozen=True)
class ProbeSpec:
    kind: str  # "memory": one video of `frames`; "alone": our tracker on pre-decoded `videos`
    system: str  # "reference" or "samstream"
    preset: str
    image_size: int
    weights: str  # checkpoint both predictors load
    device: str
    dtype: str
    threads: int
    objects: int
    compile: bool = False  # ours: torch.compile its hot step (as the job's actors do with --compile)
    policy: str = "default"  # ours: its memory policy as a spec (model.memory_policy_spec)
    frames: int = 0  # memory: the video's length (ours renders it frame by frame, the reference reads `folder`)
    folder: str | None = None
    videos: tuple[str, ...] = ()  # alone: mp4 files, stepped `streams` at a time
    streams: int = 1
    barrier: str | None = None  # alone: a folder where `parties` probes meet before their timed work
    parties: int = 1


def probe_main(spec_json: str) -> int:
    spec = ProbeSpec(**json.loads(spec_json))
    torch.set_num_threads(spec.threads)
    tune_host_allocator()  # as the main benchmark process and the job's actors
    device = torch.device(spec.device)
    result = _probe_alone(spec, device) if spec.kind == "alone" else _probe_memory(spec, device)
    print(PROBE_TAG + json.dumps(result), flush=True)
    return 0


def _probe_memory(spec: ProbeSpec, device: torch.device) -> dict:
    """One video through one system; the peak is taken from the moment its model is built (loading
    transients are not the video's cost)."""
    prompts = first_prompts(spec.image_size, spec.objects)
    init = None
    if spec.system == "reference":
        predictor = build_reference(spec.preset, spec.image_size, device, checkpoint=spec.weights)
        baseline, _ = current_mb(device), reset_peak(device)
        frames, seconds, init = run_reference(predictor, spec.folder, prompts, device, spec.dtype)
    else:
        tracker = build_tracker(spec.preset, spec.weights, spec.image_size, device, spec.dtype, spec.compile,
                                    parse_policy_spec(spec.policy))
        baseline, _ = current_mb(device), reset_peak(device)
        video = (render_frame(t, spec.image_size, spec.objects) for t in range(spec.frames))
        states = []
        frames, seconds = run_streams(tracker, [video], prompts, states)
    peak, kind = peak_mb(device)
    out = {"frames": frames, "seconds": seconds, "setup_s": init, "peak_mem_mb": peak,
           "mem_baseline_mb": baseline, "memory_kind": kind}
    if spec.system == "samstream":  # what the stream's memory holds at the end, per object
        objects = max(len(states[0].objects), 1)
        out |= {"state_kib_per_object": states[0].nbytes / objects / 1024,
                "resident_kib_per_object": states[0].resident_nbytes / objects / 1024}
    return out


def _probe_alone(spec: ProbeSpec, device: torch.device) -> dict:
    from workers.video_source import VideoSource, probe_video

    tracker = build_tracker(spec.preset, spec.weights, spec.image_size, device, spec.dtype, spec.compile,
                                    parse_policy_spec(spec.policy))
    prompts = first_prompts(spec.image_size, spec.objects)
    decoded = []
    for url in spec.videos:  # decoded before the clock starts: the tracker alone
        info = probe_video(url)
        with VideoSource(info) as source:
            decoded.append(list(source.frames(0, info.num_frames)))
    _meet(spec.barrier, spec.parties)
    start, frames = time.time(), 0
    for i in range(0, len(decoded), spec.streams):
        frames += run_streams(tracker, decoded[i:i + spec.streams], prompts)[0]
    return {"frames": frames, "start": start, "end": time.time(), "peak_mem_mb": peak_mb(device)[0]}


def _meet(folder: str | None, parties: int, timeout: float = 900.0) -> None:
    """Wait until `parties` probes have arrived, so their timed work runs side by side."""
    if folder is None or parties <= 1:
        return
    Path(folder, str(os.getpid())).touch()
    deadline = time.time() + timeout
    while len(os.listdir(folder)) < parties:
        if time.time() > deadline:
            raise TimeoutError(f"only {len(os.listdir(folder))} of {parties} probes arrived in {timeout:.0f} s")
        time.sleep(0.05)


def run_probes(specs: Sequence[ProbeSpec]) -> list[dict]:
    """Run the probes side by side, each in its own interpreter; their answers in order."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))
    procs = []
    for spec in specs:
        out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")  # files: pipes could fill up
        cmd = [sys.executable, "-m", "jobs.benchmark", "--probe", json.dumps(asdict(spec))]
        procs.append((spec, subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=err, text=True), out, err))
    results = []
    for spec, proc, out, err in procs:
        code = proc.wait()
        out.seek(0), err.seek(0)
        answer = [line for line in out.read().splitlines() if line.startswith(PROBE_TAG)]
        out.close()
        tail = err.read()[-1500:]
        err.close()
        if code != 0 or not answer:
            what = f"{spec.frames} frames" if spec.kind == "memory" else f"{len(spec.videos)} videos"
            raise RuntimeError(f"{spec.kind} probe of {spec.system} ({what}) exited {code}: {tail}")
        results.append(json.loads(answer[-1][len(PROBE_TAG):]))
    return results
