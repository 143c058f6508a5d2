"""How the benchmark measures our tracker: built on the reference's weights, stepped over B streams, timed
and profiled by stage."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity

from model import MemoryPolicy, Prompt, StreamingTracker, load_model

from .reference import sync


def build_tracker(preset: str, weights: str | None, image_size: int, device: torch.device,
                  dtype: str = "fp32", compile: bool = False, policy: MemoryPolicy | None = None) -> StreamingTracker:
    """Our tracker on `weights` (None: random, seeded by the caller) keeping memory by `policy` (None: the
    reference's), hole filling off as the reference's."""
    tracker = StreamingTracker(load_model(preset, weights, image_size, device), policy, fill_hole_area=0,
                               autocast_dtype=torch.bfloat16 if dtype == "bf16" else None)
    if compile:
        tracker.compile()
    return tracker


def save_weights(state_dict: dict, path: Path) -> str:
    """An official-style checkpoint ({"model": tensors}) that both predictors load, weights only."""
    torch.save({"model": {k: v.detach().cpu() for k, v in state_dict.items()}}, path)
    return str(path)


def run_streams(tracker: StreamingTracker, videos: Sequence[Iterable[np.ndarray]],
                prompts: Sequence[Prompt], states_out: list | None = None) -> tuple[int, float]:
    """(stream-frames, seconds) of stepping len(videos) streams together, frame 0 prompted in each, each
    frame's masks brought to the host; the streams' final TrackerStates are appended to `states_out`."""
    device = tracker.device
    states, frames = None, 0
    sync(device)
    start = time.perf_counter()
    for t, batch in enumerate(zip(*videos)):
        if states is None:
            states = [tracker.new_stream(*f.shape[:2]) for f in batch]
        for result in tracker.step_batch(states, list(batch), [prompts if t == 0 else ()] * len(batch)):
            result.masks.cpu()
        frames += len(batch)
    sync(device)
    seconds = time.perf_counter() - start
    if states_out is not None:
        states_out.extend(states or ())
    return frames, seconds


def profile_stages(run: Callable[[], int], labels: dict[str, str], device: torch.device) -> tuple[int, dict]:
    """(frames, total ms per stage) of one run under torch.profiler. CPU: the wall time inside each range;
    CUDA: the summed time of the kernels launched inside it (launches are asynchronous)."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch.profiler.profile(activities=activities) as prof:
        frames = run()
    stage_of = {label: stage for stage, label in labels.items()}
    totals = dict.fromkeys(labels, 0.0)
    for e in prof.events():
        stage = stage_of.get(e.name)
        if stage is None or e.device_type != DeviceType.CPU:
            continue
        us = getattr(e, "device_time_total", 0.0) if device.type == "cuda" else e.cpu_time_total
        totals[stage] += us / 1000.0
    return frames, totals


def ours_stage_ms(totals: dict[str, float], frames: int) -> dict[str, float]:
    """Per-frame ms of our stages: "mask_decoder" encloses "memory_attention", so the decoder is the rest."""
    out = {k: v / frames for k, v in totals.items()}
    out["mask_decoder"] -= out["memory_attention"]
    return out
