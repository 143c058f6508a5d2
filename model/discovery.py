"""Tracking with discovery: objects found automatically on keyframes, tracked from memory, ended when gone.

The rules (DEVA's automatic mode, with SAM's automatic mask generator as the proposer):
- a keyframe is the stream's first frame and every `keyframe_every` frames after it;
- on a keyframe, grid clicks fall only where no live track covers the frame, so a tracked object is not
  proposed again; a proposal whose IoU with a live track's mask exceeds `match_iou` is that track anyway;
- the remaining proposals join as new objects at that frame (their mask is their prompt), up to
  `max_objects` live objects per stream;
- a discovered track whose presence probability stays below 0.5 for `max_missing` frames in a row is ended
  and removed from the stream's memory. Objects given by the user are never ended.

The counters live in DiscoveryState, part of the stream's TrackerState, so a snapshot resumes discovery
exactly where it stopped.
"""

from dataclasses import dataclass, field

import torch

from .auto_masks import AutoMaskConfig, generate_masks, point_grid
from .sam2 import SAM2Model

PRESENT = 0.5  # presence probability below which a frame counts as missing


@dataclass(frozen=True)
class DiscoveryConfig:
    auto_masks: AutoMaskConfig = AutoMaskConfig()  # the proposer's grid and thresholds
    keyframe_every: int = 16  # discovery on a stream's first frame and every this many frames after it
    match_iou: float = 0.5  # a proposal with IoU above this with a live track's mask is that track
    max_missing: int = 45  # consecutive frames of presence < 0.5 after which a discovered track ends
    max_objects: int = 64  # live objects per stream; proposals beyond it are dropped (best IoU first kept)

    def __post_init__(self):
        if self.keyframe_every < 1:
            raise ValueError(f"keyframe_every must be >= 1, got {self.keyframe_every}")
        if not 0.0 <= self.match_iou <= 1.0:
            raise ValueError(f"match_iou must be in [0, 1], got {self.match_iou}")
        if self.max_missing < 1:
            raise ValueError(f"max_missing must be >= 1, got {self.max_missing}")
        if self.max_objects < 1:
            raise ValueError(f"max_objects must be >= 1, got {self.max_objects}")


@dataclass
class DiscoveryState:
    """One stream's discovery counters (host metadata, saved in snapshots)."""

    start_frame: int  # the stream's first frame: keyframes are counted from it
    next_id: int  # id of the next discovered object; ids below `first_id` are the user's
    first_id: int  # the first discovered id of this stream
    missing: dict[int, int] = field(default_factory=dict)  # live discovered id -> consecutive frames absent

    def is_keyframe(self, frame_index: int, every: int) -> bool:
        return (frame_index - self.start_frame) % every == 0

    def to_dict(self) -> dict:
        return {"start_frame": self.start_frame, "next_id": self.next_id, "first_id": self.first_id,
                "missing": [[k, v] for k, v in self.missing.items()]}

    @classmethod
    def from_dict(cls, d: dict) -> "DiscoveryState":
        return cls(d["start_frame"], d["next_id"], d["first_id"], {int(k): int(v) for k, v in d["missing"]})


@dataclass
class NewObjects:
    """Proposals that join one stream as new objects on this frame."""

    object_ids: list[int]
    masks: torch.Tensor  # (K, 1, S, S) float {0, 1}: the mask prompt each joins with


def propose_new_objects(model: SAM2Model, config: DiscoveryConfig, feat: torch.Tensor,
                        high_res: list[torch.Tensor], live_low_res: torch.Tensor, state: DiscoveryState,
                        num_live: int) -> NewObjects:
    """New objects of one stream's keyframe. `feat`, `high_res`: the frame's features (batch of 1, before
    memory); `live_low_res`: (N, 1, S/4, S/4) logits of the live tracks on this frame (N may be 0)."""
    cfg, auto = model.cfg, config.auto_masks.resolved(model.cfg)
    n = auto.points_per_side
    live = live_low_res[:, 0] > 0  # (N, h4, w4)
    covered = live.any(dim=0) if live.shape[0] else torch.zeros(live.shape[1:], dtype=torch.bool,
                                                                  device=feat.device)
    grid = point_grid(n, cfg.image_size, feat.device)  # (n*n, 2) x, y in model pixels
    scale = covered.shape[-1] / cfg.image_size
    xy = (grid * scale).long().clamp(0, covered.shape[-1] - 1)  # (n*n, 2) cells of the low-res grid
    point_ok = ~covered[xy[:, 1], xy[:, 0]]  # (n*n,)
    proposals = generate_masks(model, feat, high_res, auto, point_ok)
    logits = proposals.low_res  # (K, 1, h4, w4), best predicted IoU first
    masks = logits[:, 0] > 0  # (K, h4, w4)
    keep = masks.flatten(1).any(dim=1)  # (K,)
    if live.shape[0] and masks.shape[0]:
        inter = (masks[:, None] & live[None]).flatten(2).sum(-1).float()  # (K, N)
        union = (masks[:, None] | live[None]).flatten(2).sum(-1).float()
        keep &= (inter / union.clamp(min=1)).amax(dim=1) <= config.match_iou  # above: that live track
    logits = logits[keep][:max(config.max_objects - num_live, 0)]  # one host sync per keyframe (the count)
    ids = list(range(state.next_id, state.next_id + logits.shape[0]))
    state.next_id += len(ids)
    state.missing.update({i: 0 for i in ids})
    full = model.upsample(logits.float()) > 0  # (K, 1, S, S): the logits upsampled, as the tracker's outputs
    return NewObjects(ids, full.float())


def update_missing(state: DiscoveryState, object_ids: list[int], presence: list[float],
                   max_missing: int) -> list[int]:
    """Count frames of absence per discovered track; returns the ids that end on this frame."""
    ended = []
    for oid, p in zip(object_ids, presence):
        if oid not in state.missing:  # a user-given object: never ended
            continue
        state.missing[oid] = 0 if p >= PRESENT else state.missing[oid] + 1
        if state.missing[oid] >= max_missing:
            ended.append(oid)
    for oid in ended:
        del state.missing[oid]
    return ended
