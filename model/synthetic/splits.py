"""Seed ranges of the synthetic splits: no two splits share a seed."""

from __future__ import annotations

import numpy as np

from .scene import SyntheticError

SPLITS = ("train", "val", "test")
SPLIT_STRIDE = 2**32  # seeds per split; split k owns [k * SPLIT_STRIDE, (k + 1) * SPLIT_STRIDE)


def seed_range(split: str) -> range:
    if split not in SPLITS:
        raise SyntheticError(f"unknown split {split!r}; known: {', '.join(SPLITS)}", split)
    k = SPLITS.index(split)
    return range(k * SPLIT_STRIDE, (k + 1) * SPLIT_STRIDE)


def split_seed(split: str, index: int) -> int:
    """The seed of video `index` (0 <= index < SPLIT_STRIDE) of `split`; no two splits share a seed."""
    seeds = seed_range(split)
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < len(seeds):
        raise SyntheticError(f"index must be an int in [0, {len(seeds)}), got {index!r}", index)
    return seeds[int(index)]
