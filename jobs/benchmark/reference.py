"""The reference predictor (PyPI `sam2`): the one place that builds it, for the tests (an oracle) and the
benchmarks (a baseline), and the way the benchmark runs it. `sam2` is imported inside the functions only, so
this module imports where the reference is not installed.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import time
from typing import Callable, Sequence

import torch
from torch.profiler import record_function

from model import Prompt, UnknownPresetError

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


def reference_config(preset: str) -> str:
    """The reference's config name for `preset` (relative to its package, as its builder takes it)."""
    if preset not in REFERENCE_CONFIGS:
        raise UnknownPresetError(preset, sorted(REFERENCE_CONFIGS))
    return REFERENCE_CONFIGS[preset]


def reference_config_path(preset: str) -> str:
    """The yaml file of `preset`'s reference config inside the installed `sam2` package."""
    import sam2

    return os.path.join(os.path.dirname(sam2.__file__), reference_config(preset))


def reference_unavailable(preset: str) -> str | None:
    """Why the reference cannot run this preset, or None when it can."""
    if preset not in REFERENCE_CONFIGS:
        return f"preset {preset!r} has no reference config (the reference ships only the official models)"
    try:
        importlib.import_module("sam2.build_sam")  # with its own dependencies (hydra, iopath)
    except ImportError as e:
        return f"the reference (PyPI sam2) is not installed: {e}"
    return None


def build_reference(preset: str, image_size: int | None = None, device: str | torch.device = "cpu",
                    checkpoint: str | None = None, seed: int = 0, vos_optimized: bool = False,
                    fill_hole_area: int = 0):
    """The reference video predictor from its own config, in eval mode on `device`.

    Without a checkpoint (a local official .pt file) its weights are its own init, seeded. `image_size`
    overrides the config's 1024. Hole filling is off by default: it needs the reference's CUDA extension,
    which it warns about on every frame without (ours is built with fill_hole_area=0 to match).
    `vos_optimized` is its fastest mode (SAM2VideoPredictorVOS): image encoder, memory attention and
    encoder, prompt encoder and mask decoder torch.compiled (max-autotune) at their first call.
    """
    from sam2.build_sam import build_sam2_video_predictor

    overrides = [] if image_size is None else [f"++model.image_size={int(image_size)}"]
    torch.manual_seed(seed)
    predictor = build_sam2_video_predictor(reference_config(preset), ckpt_path=checkpoint, device=str(device),
                                           hydra_overrides_extra=overrides, vos_optimized=vos_optimized)
    # Set on the built predictor: its builder appends its own `++model.fill_hole_area=8` after our overrides.
    predictor.fill_hole_area = int(fill_hole_area)
    return predictor


# ---------------------------------------------------------------------------------------------- runs

def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, dtype: str):
    """bf16 autocast (the reference's recommended CUDA setting; on CPU the same for a fair comparison)."""
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
        prompt_reference(predictor, state, 0, prompts)
        frames = 0
        for _, _, masks in predictor.propagate_in_video(state):
            (masks > 0).cpu()
            frames += 1
        sync(device)
    return frames, time.perf_counter() - start, init


def prompt_reference(predictor, state, frame: int, prompts: Sequence[Prompt]) -> None:
    """Our prompts, given to the reference's inference state on `frame` (masks, else clicks and boxes)."""
    for p in prompts:
        if p.mask is not None:
            predictor.add_new_mask(state, frame, p.object_id, torch.as_tensor(p.mask))
        else:
            predictor.add_new_points_or_box(state, frame, p.object_id, points=p.points, labels=p.labels, box=p.box)


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
