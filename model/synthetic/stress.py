"""The long-occlusion stress split: long videos in which objects vanish for 30-300 frames while look-alikes
stay in view, to score memory policies (benchmarks.memory_policies).

The point of the set is memory, not appearance: its families are the in-family ones (as "test"'s), so a loss
on it comes from what the memory kept, not from a look the model never saw. Its seeds are the "stress" split's
(model.synthetic.splits), which no training code draws from (jobs.train renders "train" seeds only).

What makes it hard, per video (600 frames by default): every object is scripted to disappear, again and
again (event_prob 1, windows packed by event_gap), each time for 30-300 frames (log-uniform: the median near 95),
behind a bar or outside the frame; each object has an untracked double (clutter_per_object: its shape family
and texture, always on screen) and often a tracked twin too. `SyntheticVideo.lookalike_visible()` says on
which frames a double shows. A 600-frame video renders in about 1.6 s at 256 px (0.5 s at 128 px) on one core.
"""

from __future__ import annotations

from .config import SyntheticConfig
from .render import SyntheticVideo, render_video
from .splits import split_seed

STRESS_SPLIT = "stress"
STRESS_HIDDEN = (30, 300)  # frames of one scripted full disappearance (log-uniform)


def stress_config(image_size: int = 256, num_frames: int = 600) -> SyntheticConfig:
    """The stress set's config: square frames of `image_size` px. Fewer frames fit fewer long disappearances
    (none in under about 50)."""
    return SyntheticConfig(
        height=image_size, width=image_size, num_frames=num_frames,
        hidden_frames=STRESS_HIDDEN,
        event_prob=1.0,  # windows until the video is full: every object disappears, several times
        event_gap=100,  # at most 100 frames from one window's lead-out to the next's lead-in
        distractor_prob=0.6,  # tracked twins: an object wearing an earlier one's texture...
        twin_shape_prob=0.9,  # ...and nearly always its shape family
        max_clutter=3,  # random untracked look-alikes, besides...
        clutter_per_object=1,  # ...one double of each object, in view while it is hidden
    )


def render_stress_video(index: int, image_size: int = 256, num_frames: int = 600) -> SyntheticVideo:
    """Video `index` of the stress split (deterministic: the same arguments give the same pixels and masks)."""
    return render_video(split_seed(STRESS_SPLIT, index), stress_config(image_size, num_frames))
