"""Growing a trained model for capacity ablations: a larger config starts from a smaller one's weights.

Only added tensors are allowed (new memory-attention layers, for instance); a tensor whose shape changed cannot
be carried over and fails. New memory-attention layers start as the identity: their residual branches (each
attention's output projection and the FFN's last linear) are zeroed, so the grown model computes what the
trained one did and training decides what the new layer adds."""

from __future__ import annotations

import re

import torch

from ..errors import SamstreamError
from ..sam2 import SAM2Model

_LAYER = re.compile(r"memory_attention\.layers\.(\d+)\.")
_RESIDUAL_OUT = ("self_attn.out_proj", "cross_attn_image.out_proj", "linear2")


class GrowError(SamstreamError, ValueError):
    """Weights that cannot seed the grown config; `names` lists the offending tensors."""

    def __init__(self, message: str, names: list[str]):
        self.names = names
        super().__init__(message)


def grow_from(model: SAM2Model, state_dict: dict[str, torch.Tensor]) -> list[str]:
    """Load `state_dict` into the (larger) `model`: every tensor it has must fit; the model's tensors it lacks
    keep their initialisation, new memory-attention layers zeroed to the identity. Returns the names added."""
    ours = model.state_dict()
    unexpected = sorted(set(state_dict) - set(ours))
    mismatched = sorted(k for k in state_dict if k in ours and state_dict[k].shape != ours[k].shape)
    if unexpected or mismatched:
        bad = unexpected + mismatched
        raise GrowError(f"cannot grow from these weights: {len(unexpected)} tensors the model lacks, "
                        f"{len(mismatched)} of another shape, e.g. {', '.join(bad[:5])}", bad)
    added = sorted(set(ours) - set(state_dict))
    model.load_state_dict(state_dict, strict=False)
    new_layers = {int(m.group(1)) for k in added if (m := _LAYER.match(k))}
    with torch.no_grad():
        for i in new_layers:
            layer = model.memory_attention.layers[i]
            for path in _RESIDUAL_OUT:
                linear = layer.get_submodule(path)
                linear.weight.zero_()
                linear.bias.zero_()
    return added

