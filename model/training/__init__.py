"""Training the model: the clip forward (the tracker's decode and memory path with gradients), SAM 2's losses,
and the clips the trainer draws from the synthetic generator. Pure torch and numpy, no I/O."""

from .clips import ClipPrefetcher, ClipSpec, RenderedClip, image_mix, step_clips
from .grow import GrowError, grow_from
from .losses import MaskLossWeights, combined_loss
from .step import FrameOutput, StepOutput, TrainClip, clip_forward, clip_loss, clips_forward, gt_prompt, sample_clicks

__all__ = [
    "ClipPrefetcher", "ClipSpec", "FrameOutput", "GrowError", "MaskLossWeights", "RenderedClip", "StepOutput", "TrainClip",
    "clip_forward", "clip_loss", "clips_forward", "combined_loss", "grow_from", "gt_prompt", "image_mix", "sample_clicks",
    "step_clips",
]
