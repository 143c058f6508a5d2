"""Memory policies sampled per training clip, so the model learns to use what inference can switch on.

A clip is unrolled with one MemoryPolicy (model/memory_bank.py) drawn from a mix of named policies; the names
are the trainer's `--policy-mix` vocabulary. Training clips are short (16 frames at most), so the keyframe
policies keep a frame every 4: within a clip a keyframe then outlives the recent ring, as a long video's do.
"""

import numpy as np

from ..memory_bank import MemoryPolicy

TRAINING_POLICIES: dict[str, MemoryPolicy] = {
    "reference": MemoryPolicy(),  # prompted frames + the 6 most recent, as inference's default
    "selective": MemoryPolicy(store_threshold=0.5),  # only frames where the object is seen are remembered
    "keyframes": MemoryPolicy(num_keyframes=3, keyframe_every=4),  # long reach past the recent ring
    "selective-keyframes": MemoryPolicy(store_threshold=0.5, num_keyframes=3, keyframe_every=4),
    "short": MemoryPolicy(num_recent=2),  # little recent memory: leans on the prompt and pointers
}


def parse_policy_mix(text: str) -> dict[str, float]:
    """'reference:0.5,selective:0.25,...' -> normalised shares; ValueError naming the bad part."""
    mix = {}
    for item in text.split(","):
        name, _, share = item.partition(":")
        if name not in TRAINING_POLICIES:
            raise ValueError(f"unknown memory policy {name!r} in {text!r}; known: {', '.join(TRAINING_POLICIES)}")
        try:
            mix[name] = float(share)
        except ValueError:
            raise ValueError(f"policy share must be a number, got {item!r} in {text!r}") from None
    if any(v < 0 for v in mix.values()) or sum(mix.values()) <= 0:
        raise ValueError(f"policy shares must be >= 0 and not all 0, got {text!r}")
    total = sum(mix.values())
    return {k: v / total for k, v in mix.items()}


def sample_policies(mix: dict[str, float], count: int, seed: list[int]) -> list[MemoryPolicy]:
    """`count` policies drawn from `mix`, a pure function of `seed` (the step's: resumes redraw the same)."""
    if list(mix) == ["reference"]:
        return [TRAINING_POLICIES["reference"]] * count
    rng = np.random.default_rng(seed)
    names = rng.choice(list(mix), size=count, p=list(mix.values()))
    return [TRAINING_POLICIES[str(n)] for n in names]
