"""Prompts in native pixel coordinates, validated against their frame and converted for the model."""

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .errors import FrameError, PromptError

# Labels the prompt encoder understands: negative / positive click, box corners.
NEGATIVE, POSITIVE, BOX_TOP_LEFT, BOX_BOTTOM_RIGHT = 0, 1, 2, 3


@dataclass(frozen=True)
class Prompt:
    """What a user tells the tracker about one object on the frame it arrives with.

    A prompt for an unknown object adds it at this frame. For a known object the frame becomes a new
    conditioning frame (decoded from the prompt alone, kept as a prompt memory), unless `correction` is
    set: then the tracked mask of this frame is refined with the clicks (decoded with memory and the
    tracked mask, kept as a recent memory), as the reference does for clicks added after tracking.
    """

    object_id: int
    points: Any = None  # (N, 2) x, y in pixels of the native frame
    labels: Any = None  # (N,) 1 positive, 0 negative
    box: Any = None  # (4,) x0, y0, x1, y1 in pixels
    mask: Any = None  # (H, W) bool, the frame's native size
    correction: bool = False


@dataclass(frozen=True)
class ModelPrompt:
    """A validated prompt in the model's input coordinates."""

    object_id: int
    points: torch.Tensor | None  # (P, 2) float, model pixels (box corners first)
    labels: torch.Tensor | None  # (P,) int32
    mask: torch.Tensor | None  # (1, S, S) float in {0, 1}
    correction: bool

    @property
    def num_points(self) -> int:
        return 0 if self.points is None else self.points.shape[0]




def _check_points(prompt: Prompt, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    oid = prompt.object_id
    if (prompt.points is None) != (prompt.labels is None):
        raise PromptError(f"object {oid}: points and labels must be given together", oid, prompt.points)
    if prompt.points is None:
        return np.zeros((0, 2)), np.zeros((0,), dtype=np.int64)
    points = np.asarray(prompt.points.cpu() if torch.is_tensor(prompt.points) else prompt.points, dtype=np.float64)
    labels = np.asarray(prompt.labels.cpu() if torch.is_tensor(prompt.labels) else prompt.labels)
    if points.ndim != 2 or points.shape[1] != 2:
        raise PromptError(f"object {oid}: points must have shape (N, 2), got {points.shape}", oid, points.tolist())
    if labels.ndim != 1 or labels.shape[0] != points.shape[0]:
        raise PromptError(f"object {oid}: {points.shape[0]} points but labels of shape {labels.shape}",
                          oid, labels.tolist())
    bad_labels = [v for v in labels.tolist() if v not in (NEGATIVE, POSITIVE)]
    if bad_labels:
        raise PromptError(f"object {oid}: labels must be 0 or 1, got {bad_labels}", oid, bad_labels)
    outside = ~np.isfinite(points).all(1) | (points[:, 0] < 0) | (points[:, 0] > width) \
        | (points[:, 1] < 0) | (points[:, 1] > height)
    if outside.any():
        raise PromptError(f"object {oid}: point {points[outside][0].tolist()} is outside the "
                          f"frame (width {width}, height {height})", oid, points[outside][0].tolist())
    return points, labels.astype(np.int64)


def _check_box(prompt: Prompt, height: int, width: int) -> np.ndarray | None:
    oid = prompt.object_id
    if prompt.box is None:
        return None
    box = np.asarray(prompt.box.cpu() if torch.is_tensor(prompt.box) else prompt.box, dtype=np.float64).reshape(-1)
    if box.shape != (4,) or not np.isfinite(box).all():
        raise PromptError(f"object {oid}: box must be 4 finite numbers x0, y0, x1, y1, got {box.tolist()}", oid, box)
    x0, y0, x1, y1 = box.tolist()
    if x1 < x0 or y1 < y0:
        raise PromptError(f"object {oid}: box {box.tolist()} has x1 < x0 or y1 < y0", oid, box.tolist())
    if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
        raise PromptError(f"object {oid}: box {box.tolist()} is outside the frame (width {width}, height {height})", oid, box.tolist())
    return box


def _check_mask(prompt: Prompt, height: int, width: int) -> torch.Tensor | None:
    oid = prompt.object_id
    if prompt.mask is None:
        return None
    mask = prompt.mask if torch.is_tensor(prompt.mask) else torch.from_numpy(np.asarray(prompt.mask))
    if tuple(mask.shape) != (height, width):
        raise PromptError(f"object {oid}: mask of shape {tuple(mask.shape)} does not match the "
                          f"frame's ({height}, {width})", oid, tuple(mask.shape))
    return mask.bool()


def to_model_prompt(prompt: Prompt, height: int, width: int, image_size: int,
                    device: torch.device) -> ModelPrompt:
    """Validate `prompt` against a `height` x `width` frame and convert it to model coordinates."""
    oid = prompt.object_id
    if not isinstance(oid, (int, np.integer)) or isinstance(oid, bool):
        raise PromptError(f"object_id must be an int, got {oid!r}", oid, oid)
    points, labels = _check_points(prompt, height, width)
    box = _check_box(prompt, height, width)
    mask = _check_mask(prompt, height, width)
    if mask is not None and (box is not None or len(points)):
        raise PromptError(f"object {oid}: a mask prompt cannot be combined with points or a box", oid, None)
    if mask is None and box is None and not len(points):
        raise PromptError(f"object {oid}: the prompt has no points, box or mask", oid, None)
    if mask is not None:
        return ModelPrompt(int(oid), None, None, _mask_to_model(mask, image_size, device), prompt.correction)
    if box is not None:  # a box is two labelled corner points, placed before any clicks
        points = np.concatenate([box.reshape(2, 2), points], axis=0)
        labels = np.concatenate([[BOX_TOP_LEFT, BOX_BOTTOM_RIGHT], labels])
    scale = torch.tensor([image_size / width, image_size / height], dtype=torch.float32)
    coords = torch.as_tensor(points, dtype=torch.float32) * scale  # (P, 2)
    return ModelPrompt(int(oid), coords.to(device), torch.as_tensor(labels, dtype=torch.int32).to(device),
                       None, prompt.correction)


def _mask_to_model(mask: torch.Tensor, image_size: int, device: torch.device) -> torch.Tensor:
    m = mask.to(device=device, dtype=torch.float32)[None, None]  # (1, 1, H, W)
    if m.shape[-2:] != (image_size, image_size):
        m = F.interpolate(m, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True)
        m = (m >= 0.5).float()
    return m[0]  # (1, S, S)


def check_frame(frame, height: int, width: int) -> torch.Tensor:
    """A uint8 (H, W, 3) RGB frame of the stream's size, as a tensor (no copy when possible)."""
    tensor = frame if torch.is_tensor(frame) else torch.from_numpy(np.ascontiguousarray(frame))
    if tensor.dtype != torch.uint8:
        raise FrameError(f"frame must be uint8 RGB, got dtype {tensor.dtype}", tensor.dtype)
    if tensor.ndim != 3 or tensor.shape[2] != 3 or tuple(tensor.shape[:2]) != (height, width):
        raise FrameError(f"frame must have shape ({height}, {width}, 3), got {tuple(tensor.shape)}",
                         tuple(tensor.shape))
    return tensor
