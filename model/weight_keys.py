"""Keys for values derived from parameters and kept between calls: they change whenever the weights may have.

A normal tensor's version counter moves on every in-place write (a `load_state_dict`, an optimizer step), so
(storage, version) per parameter tells when a kept value is stale. Tensors made under torch.inference_mode()
(a model built or loaded inside it) have no version counter: reading it raises. Their values can only be
written in place inside inference_mode, in practice by `load_state_dict`, so for them a count of the
owning modules' loads stands in for the version. (A hand-written in-place edit of such a tensor inside
inference_mode goes unseen: load weights with `load_state_dict`.)
"""

from typing import Iterable

import torch
from torch import nn

_LOADS = "_samstream_weight_loads"  # attribute on a module: how many times its state dict was loaded


def weights_key(owners: Iterable[nn.Module], params: Iterable[torch.Tensor]) -> tuple:
    """What identifies the current values of `params`, whose modules are `owners`. Equal keys: equal values."""
    loads = tuple(load_count(m) for m in owners)
    return loads, tuple((p.data_ptr(), None if p.is_inference() else p._version) for p in params)


def load_count(module: nn.Module) -> int:
    """How many times `module`'s state dict was loaded, its own or as part of a parent's, since first asked."""
    count = module.__dict__.get(_LOADS)
    if count is None:
        # A post hook of a module runs when any ancestor's load_state_dict reaches it, not only its own.
        module.register_load_state_dict_post_hook(_count_load)
        count = module.__dict__[_LOADS] = 0
    return count


def _count_load(module: nn.Module, incompatible_keys) -> None:
    module.__dict__[_LOADS] += 1
