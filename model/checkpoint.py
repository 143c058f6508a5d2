"""Build a model from a preset and load official SAM 2 / 2.1 checkpoints (or ours) from any fsspec URL.

Only weights are read: `torch.load(weights_only=True)` or safetensors, never arbitrary pickles.
"""

import io
import re
import zipfile
from pathlib import Path

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import load_file as load_safetensors_file

from .config import PRESETS, get_config
from .errors import CheckpointError
from .sam2 import SAM2Model


# Weights that ship inside the package, by preset (see weights/MODEL_CARD.md).
EMBEDDED_WEIGHTS = Path(__file__).with_name("weights")
RANDOM = "random"  # the checkpoint value that asks for random (seeded) weights explicitly


def embedded_checkpoint(preset: str) -> str | None:
    """Path of the preset's shipped weights, or None when it ships none (the official presets)."""
    path = EMBEDDED_WEIGHTS / f"{preset}.safetensors"
    return str(path) if path.is_file() else None


def resolve_checkpoint(preset: str, checkpoint: str | None) -> str | None:
    """What a job loads: the given URL; "random" -> None (random weights); None -> the embedded weights."""
    if checkpoint == RANDOM:
        return None
    return embedded_checkpoint(preset) if checkpoint is None else checkpoint


def load_model(preset: str, checkpoint: str | None = None, image_size: int | None = None,
               device: str | torch.device = "cpu", storage_options: dict | None = None) -> SAM2Model:
    """The preset's model in eval mode; random weights (torch's generator) when `checkpoint` is None."""
    model = SAM2Model(get_config(preset, image_size))
    if checkpoint is not None:
        state_dict = read_state_dict(checkpoint, storage_options)
        check_state_dict(model, state_dict, checkpoint)
        model.load_state_dict(state_dict, strict=True)
    return model.to(device).eval()


def check_checkpoint(preset: str, checkpoint: str, image_size: int | None = None,
                     storage_options: dict | None = None) -> None:
    """Raise CheckpointError unless the checkpoint's names and shapes fit the preset: what a driver checks
    before it starts actors. The model is built on the meta device (shapes only, no memory, no init)."""
    with torch.device("meta"):
        model = SAM2Model(get_config(preset, image_size))
    check_state_dict(model, read_state_dict(checkpoint, storage_options), checkpoint)


def read_state_dict(url: str, storage_options: dict | None = None) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint: an official .pt (its "model" entry), a bare state dict, or safetensors.
    Local files are memory-mapped (no second copy of the weights in memory); others are read whole."""
    try:
        path, local, data = _read_head_or_whole(url, storage_options)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"cannot read checkpoint {url}: {e}", url) from e
    try:
        if data[8:9] == b"{":  # safetensors: 8-byte header length, then a JSON header
            return load_safetensors_file(path) if local else load_safetensors(data)
        mmap = local and zipfile.is_zipfile(path)  # torch can only memory-map its zip format, not legacy files
        source = path if local else io.BytesIO(data)
        obj = torch.load(source, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:  # an unpickler refusal or a corrupt file: either way not loadable
        raise CheckpointError(f"checkpoint {url} is not a weights-only torch file or safetensors: {e}", url) from e
    state_dict = obj.get("model", obj) if isinstance(obj, dict) else None
    if not isinstance(state_dict, dict) or not all(torch.is_tensor(v) for v in state_dict.values()):
        raise CheckpointError(f"checkpoint {url} holds no state dict of tensors (top level: "
                              f"{type(obj).__name__})", url)
    return state_dict


def _read_head_or_whole(url: str, storage_options: dict | None) -> tuple[str, bool, bytes]:
    """(path, is local, bytes): a local file's first 9 bytes (it is memory-mapped later), anything else whole.
    fsspec is imported only for remote URLs: the model package runs where only torch, numpy and safetensors are
    installed (a GPU image), and a local path needs nothing more."""
    if "://" not in url or url.startswith("file://"):
        path = str(Path(url.removeprefix("file://")).expanduser().absolute())
        with open(path, "rb") as f:
            return path, True, f.read(9)
    import fsspec
    from fsspec.implementations.local import LocalFileSystem

    fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    local = isinstance(fs, LocalFileSystem)
    with fs.open(path, "rb") as f:
        return path, local, f.read(9) if local else f.read()


def check_state_dict(model: SAM2Model, state_dict: dict[str, torch.Tensor], url: str) -> None:
    """Fail with the missing, unexpected and mismatched names, and the preset the shapes suggest."""
    ours = model.state_dict()
    missing = sorted(set(ours) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(ours))
    mismatched = sorted(f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
                        for k, v in ours.items() if k in state_dict and state_dict[k].shape != v.shape)
    if not (missing or unexpected or mismatched):
        return
    guess = suggest_preset(state_dict)
    parts = [f"checkpoint {url} does not fit preset {model.cfg.name!r}"]
    if guess and guess != model.cfg.name:
        parts.append(f"its shapes suggest preset {guess!r}")
    for title, names in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
        if names:
            shown = ", ".join(names[:20]) + (f" ... ({len(names)} in all)" if len(names) > 20 else "")
            parts.append(f"{title}: {shown}")
    raise CheckpointError("; ".join(parts), url, missing, unexpected, mismatched)


def suggest_preset(state_dict: dict[str, torch.Tensor]) -> str | None:
    """The preset whose trunk width, depth and SAM 2.1 extras match the checkpoint's, if any."""
    embed = state_dict.get("image_encoder.trunk.patch_embed.proj.weight")
    if embed is None:
        return None
    blocks = {int(m.group(1)) for k in state_dict if (m := re.match(r"image_encoder\.trunk\.blocks\.(\d+)\.", k))}
    is21 = "no_obj_embed_spatial" in state_dict
    for name, cfg in PRESETS.items():
        if (cfg.trunk.embed_dim == embed.shape[0] and sum(cfg.trunk.stages) == len(blocks)
                and cfg.sam21 == is21 and name != "synthetic-tiny"):
            return name
    return "synthetic-tiny" if embed.shape[0] == PRESETS["synthetic-tiny"].trunk.embed_dim else None
