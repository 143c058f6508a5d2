"""Seed ranges of the synthetic splits: no two splits share a seed.

Split k of SPLITS owns the seeds [k * SPLIT_STRIDE, (k + 1) * SPLIT_STRIDE). "train", "val" and "test" draw
from the in-family families, "heldout" (index 3, added after them so the other ranges did not move) from the
held-out ones (model.synthetic.families): a seed's split decides its families. "stress" (index 4, added last)
draws in-family too: long occlusions with look-alikes in view (model.synthetic.stress), never trained on.
"""

from __future__ import annotations

import numpy as np

from .config import SyntheticError

SPLITS = ("train", "val", "test", "heldout", "stress")
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


def split_of_seed(seed: int) -> str:
    """The split that owns `seed` (an int >= 0 below len(SPLITS) * SPLIT_STRIDE)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < len(SPLITS) * SPLIT_STRIDE:
        raise SyntheticError(f"seed must be an int in [0, {len(SPLITS) * SPLIT_STRIDE}) (a split's), got {seed!r}",
                             seed)
    return SPLITS[int(seed) // SPLIT_STRIDE]
