"""How the benchmark job measures: a generated scene, both predictors on the same weights, timed and profiled
runs, peak memory.

The scene is computed per frame (shapes on orbits over a scrolling texture), so a video of any length costs
no memory to produce: ours can stream it, the reference gets it as a folder of JPEGs (all its loader reads).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import math
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, record_function

from model import Prompt, StreamingTracker, load_model

REPO = Path(__file__).resolve().parents[1]
# The reference's config file for each of our presets (synthetic-tiny is ours alone).
REFERENCE_CONFIGS = {
    "sam2-tiny": "configs/sam2/sam2_hiera_t.yaml", "sam2-small": "configs/sam2/sam2_hiera_s.yaml",
    "sam2-base-plus": "configs/sam2/sam2_hiera_b+.yaml", "sam2-large": "configs/sam2/sam2_hiera_l.yaml",
    "sam2.1-tiny": "configs/sam2.1/sam2.1_hiera_t.yaml", "sam2.1-small": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "sam2.1-base-plus": "configs/sam2.1/sam2.1_hiera_b+.yaml", "sam2.1-large": "configs/sam2.1/sam2.1_hiera_l.yaml",
}
# Reference methods timed as our stages (its memory attention runs beside its decoder, not inside it).
REFERENCE_METHODS = {"forward_image": "image_encoder", "_prepare_memory_conditioned_features": "memory_attention",
                     "_forward_sam_heads": "mask_decoder", "_encode_new_memory": "memory_encoder"}
REFERENCE_LABELS = {s: f"bench.reference.{s}" for s in ("decode", *REFERENCE_METHODS.values())}
COLORS = ((230, 60, 50), (40, 200, 90), (60, 80, 230), (230, 200, 40), (200, 60, 200), (40, 200, 220))


# ---------------------------------------------------------------------------------------------- scene

@functools.lru_cache(maxsize=4)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    return yy, xx


@functools.lru_cache(maxsize=4)
def _background(size: int) -> np.ndarray:
    yy, xx = _grid(size)
    base = [60 + 40 * np.sin(xx / 23.0), 70 + 30 * np.cos(yy / 17.0), 80 + 20 * np.sin((xx + yy) / 31.0)]
    return np.stack(base, -1).astype(np.uint8)


def object_masks(t: int, size: int, objects: int) -> np.ndarray:
    """(objects, size, size) bool: disc, square, ellipse, ... on circular orbits of different periods, so they
    stay in view on any video length and now and then pass over each other."""
    yy, xx = _grid(size)
    r = 0.09 * size
    out = np.empty((objects, size, size), bool)
    for k in range(objects):
        angle = 2 * math.pi * (k / objects + t / (150 + 23 * k))
        cx, cy = size * (0.5 + 0.3 * math.cos(angle)), size * (0.5 + 0.3 * math.sin(angle))
        if k % 3 == 0:
            out[k] = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
        elif k % 3 == 1:
            out[k] = (abs(xx - cx) < r) & (abs(yy - cy) < r)
        else:
            out[k] = ((xx - cx) / (1.6 * r)) ** 2 + ((yy - cy) / (0.7 * r)) ** 2 < 1
    return out


def render_frame(t: int, size: int, objects: int) -> np.ndarray:
    """(size, size, 3) uint8 frame t of the scene."""
    img = np.roll(_background(size), t % size, axis=1)
    for k, m in enumerate(object_masks(t, size, objects)):
        img[m] = COLORS[k % len(COLORS)]
    return img


def first_prompts(size: int, objects: int) -> list[Prompt]:
    """Frame 0's prompts, one kind per object in turn: a click, a box, a mask."""
    prompts = []
    for k, m in enumerate(object_masks(0, size, objects)):
        ys, xs = np.nonzero(m)
        if k % 3 == 0:
            prompts.append(Prompt(k + 1, points=[[float(xs.mean()), float(ys.mean())]], labels=[1]))
        elif k % 3 == 1:
            prompts.append(Prompt(k + 1, box=[float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())]))
        else:
            prompts.append(Prompt(k + 1, mask=m))
    return prompts


def write_jpegs(folder: Path, start: int, stop: int, size: int, objects: int) -> list[Path]:
    """Frames [start, stop) as JPEG files (quality 95) named by frame index, as the reference's loader wants."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{t:06d}.jpg" for t in range(start, stop)]
    for t, path in zip(range(start, stop), paths):
        Image.fromarray(render_frame(t, size, objects)).save(path, quality=95)
    return paths


def jpeg_subset(master: Sequence[Path], num_frames: int, folder: Path) -> str:
    """A folder holding the first `num_frames` JPEGs (links): the reference loads every JPEG of its folder."""
    if num_frames > len(master):
        raise ValueError(f"asked for {num_frames} frames, only {len(master)} were written")
    folder.mkdir(parents=True, exist_ok=True)
    for path in master[:num_frames]:
        link = folder / path.name
        if not link.exists():
            link.symlink_to(path.resolve())
    return str(folder)


def read_jpegs(paths: Sequence[Path]) -> list[np.ndarray]:
    """The decoded JPEG pixels: ours sees exactly what the reference's loader sees."""
    return [np.array(Image.open(p).convert("RGB")) for p in paths]


# ---------------------------------------------------------------------------------------------- models

def reference_unavailable(preset: str) -> str | None:
    """Why the reference cannot run this preset, or None when it can."""
    if preset not in REFERENCE_CONFIGS:
        return f"preset {preset!r} has no reference config (the reference ships only the official models)"
    try:
        importlib.import_module("sam2.build_sam")  # with its own dependencies (hydra, iopath)
    except ImportError as e:
        return f"the reference (PyPI sam2) is not installed: {e}"
    return None


def build_reference(preset: str, image_size: int, device: torch.device, checkpoint: str | None = None,
                    seed: int = 0):
    """The reference video predictor from its own config; random weights (its init, seeded) without a
    checkpoint. Hole filling is off: it needs the reference's CUDA extension (ours is off to match)."""
    from sam2.build_sam import build_sam2_video_predictor

    torch.manual_seed(seed)
    predictor = build_sam2_video_predictor(REFERENCE_CONFIGS[preset], ckpt_path=checkpoint, device=str(device),
                                           hydra_overrides_extra=[f"++model.image_size={image_size}"])
    predictor.fill_hole_area = 0
    return predictor


def build_tracker(preset: str, weights: str, image_size: int, device: torch.device,
                  dtype: str = "fp32", compile: bool = False) -> StreamingTracker:
    tracker = StreamingTracker(load_model(preset, weights, image_size, device), fill_hole_area=0,
                               autocast_dtype=torch.bfloat16 if dtype == "bf16" else None)
    if compile:
        tracker.compile()
    return tracker


def save_weights(state_dict: dict, path: Path) -> str:
    """An official-style checkpoint ({"model": tensors}) that both predictors load, weights only."""
    torch.save({"model": {k: v.detach().cpu() for k, v in state_dict.items()}}, path)
    return str(path)


# ---------------------------------------------------------------------------------------------- runs

def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, dtype: str):
    """bf16 autocast for the reference (its recommended CUDA setting; on CPU the same for a fair comparison)."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if dtype == "bf16" else contextlib.nullcontext()


@contextlib.contextmanager
def _patched(obj, name: str, value):
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


def run_reference(predictor, folder: str, prompts: Sequence[Prompt], device: torch.device,
                  dtype: str) -> tuple[int, float, float]:
    """(frames, seconds, init_state seconds): the whole video's load, the prompts on frame 0, propagation,
    each frame's masks brought to the host (as ours are)."""
    import sam2.sam2_video_predictor as vp
    import sam2.utils.misc as misc
    from tqdm import tqdm

    quiet = functools.partial(tqdm, disable=True)  # its progress bars (frame loading, propagation)
    with torch.inference_mode(), autocast(device, dtype), _patched(vp, "tqdm", quiet), _patched(misc, "tqdm", quiet):
        sync(device)
        start = time.perf_counter()
        state = predictor.init_state(folder)
        sync(device)
        init = time.perf_counter() - start
        for p in prompts:
            if p.mask is not None:
                predictor.add_new_mask(state, 0, p.object_id, torch.as_tensor(p.mask))
            else:
                predictor.add_new_points_or_box(state, 0, p.object_id, points=p.points, labels=p.labels, box=p.box)
        frames = 0
        for _, _, masks in predictor.propagate_in_video(state):
            (masks > 0).cpu()
            frames += 1
        sync(device)
    return frames, time.perf_counter() - start, init


def run_streams(tracker: StreamingTracker, videos: Sequence[Iterable[np.ndarray]],
                prompts: Sequence[Prompt]) -> tuple[int, float]:
    """(stream-frames, seconds) of stepping len(videos) streams together, frame 0 prompted in each, each
    frame's masks brought to the host."""
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
    return frames, time.perf_counter() - start


@contextlib.contextmanager
def reference_ranges(predictor):
    """Profiler ranges around the reference's stages (it has none): its frame loader and four methods."""
    import sam2.sam2_video_predictor as vp

    loader = vp.load_video_frames
    vp.load_video_frames = _ranged(REFERENCE_LABELS["decode"], loader)
    for name, stage in REFERENCE_METHODS.items():  # instance attributes shadow the class's methods
        object.__setattr__(predictor, name, _ranged(REFERENCE_LABELS[stage], getattr(predictor, name)))
    try:
        yield
    finally:
        vp.load_video_frames = loader
        for name in REFERENCE_METHODS:
            predictor.__dict__.pop(name, None)


def _ranged(label: str, fn: Callable) -> Callable:
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with record_function(label):
            return fn(*args, **kwargs)
    return wrapper


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



# ---------------------------------------------------------------------------------------------- memory

def _proc_status_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    return None


def reset_peak(device: torch.device) -> bool:
    """Start a new peak; False when the platform cannot (then a peak includes what came before)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return True
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def peak_mb(device: torch.device) -> tuple[float | None, str]:
    """(peak MB, what it is): CUDA memory allocated by torch, or the process's peak resident set."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    return _proc_status_mb("VmHWM"), "rss_peak"


def current_mb(device: torch.device) -> float | None:
    return torch.cuda.memory_allocated(device) / 2**20 if device.type == "cuda" else _proc_status_mb("VmRSS")
