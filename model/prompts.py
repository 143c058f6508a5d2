"""Prompts in native pixel coordinates, validated against their frame and converted for the model."""

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .errors import FrameError, PromptError
from .transfer import to_device

# Labels the prompt encoder understands: negative / positive click, box corners.
NEGATIVE, POSITIVE, BOX_TOP_LEFT, BOX_BOTTOM_RIGHT = 0, 1, 2, 3
# The kinds of first prompt, spelled as Prompt's fields and the job manifest's keys: everywhere (training's
# prompt mix, the synthetic corpus, the demo and benchmarks' --prompt) uses these three names.
PROMPT_KINDS = ("points", "box", "mask")


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


@dataclass(frozen=True)
class PromptGeometry:
    """A prompt's geometry once checked against its frame (`check_prompt_geometry`)."""

    points: np.ndarray  # (N, 2) float64 x, y, all inside the frame; N = 0 without points
    box: np.ndarray | None  # (4,) float64 x0, y0, x1, y1, clipped to the frame
    note: str | None  # what was clipped, e.g. "object 2 frame 0: box [-5, 3, 40, 90] clipped to [0, 3, 40, 72]"


def check_prompt_geometry(points: Any, box: Any, mask_size: Any, height: int, width: int, name: str,
                          object_id: Any = None) -> PromptGeometry:
    """Fit a prompt's points, box and mask size (each None when not given) to a `height` x `width` frame.

    The one check of prompt against frame: the planner runs it against the probed video, the tracker
    against each frame. Bounds are inclusive (coordinates are continuous; `width` is the right edge). A box
    partly outside is clipped to the frame, with a note: annotation tools draw boxes past the edge. A point
    outside, a box with no area inside, or a mask of another size is a mistake: PromptError, its message
    prefixed with `name`, naming the value."""
    def fail(detail: str, value: Any) -> PromptError:
        return PromptError(f"{name}: {detail}", object_id, value)

    outside = f"outside the frame (width {width}, height {height})"
    xy = np.zeros((0, 2)) if points is None else np.asarray(points, dtype=np.float64)
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise fail(f"points must have shape (N, 2), got {xy.shape}", xy.tolist())
    for x, y in xy.tolist():
        if not (0 <= x <= width and 0 <= y <= height):  # False for nan too
            raise fail(f"point {_coords([x, y])} is {outside}", [x, y])
    if mask_size is not None and tuple(mask_size) != (height, width):
        raise fail(f"mask size {list(mask_size)} differs from the frame's [{height}, {width}]", list(mask_size))
    if box is None:
        return PromptGeometry(xy, None, None)
    box = np.asarray(box, dtype=np.float64).reshape(-1)
    if box.shape != (4,) or not np.isfinite(box).all():
        raise fail(f"box must be 4 finite numbers x0, y0, x1, y1, got {box.tolist()}", box.tolist())
    x0, y0, x1, y1 = box.tolist()
    if x1 < x0 or y1 < y0:
        raise fail(f"box {_coords(box)} has x1 < x0 or y1 < y0", box.tolist())
    clipped = np.array([max(x0, 0.0), max(y0, 0.0), min(x1, float(width)), min(y1, float(height))])
    if np.array_equal(clipped, box):
        return PromptGeometry(xy, box, None)
    if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:  # nothing of it inside the frame
        raise fail(f"box {_coords(box)} is {outside}", box.tolist())
    return PromptGeometry(xy, clipped, f"{name}: box {_coords(box)} clipped to {_coords(clipped)}")


def _coords(values) -> str:
    """[-5, 3.5, 40, 90]: whole numbers without a fraction, as a person would write them."""
    def show(v: float) -> str:
        return str(int(v)) if v.is_integer() and abs(v) < 1e15 else repr(v)
    return "[" + ", ".join(show(float(v)) for v in values) + "]"


def _host(value: Any) -> Any:
    return value.cpu() if torch.is_tensor(value) else value


def _check_labels(prompt: Prompt, num_points: int) -> np.ndarray:
    oid = prompt.object_id
    if prompt.labels is None:
        return np.zeros((0,), dtype=np.int64)
    labels = np.asarray(_host(prompt.labels))
    if labels.ndim != 1 or labels.shape[0] != num_points:
        raise PromptError(f"object {oid}: {num_points} points but labels of shape {labels.shape}",
                          oid, labels.tolist())
    bad_labels = [v for v in labels.tolist() if v not in (NEGATIVE, POSITIVE)]
    if bad_labels:
        raise PromptError(f"object {oid}: labels must be 0 or 1, got {bad_labels}", oid, bad_labels)
    return labels.astype(np.int64)


def _as_mask(prompt: Prompt) -> torch.Tensor | None:
    if prompt.mask is None:
        return None
    return prompt.mask if torch.is_tensor(prompt.mask) else torch.from_numpy(np.asarray(prompt.mask))


def to_model_prompt(prompt: Prompt, height: int, width: int, image_size: int,
                    device: torch.device) -> ModelPrompt:
    """Validate `prompt` against a `height` x `width` frame and convert it to model coordinates. A box partly
    outside the frame is clipped to it (the planner has already noted that for manifest prompts)."""
    oid = prompt.object_id
    if not isinstance(oid, (int, np.integer)) or isinstance(oid, bool):
        raise PromptError(f"object_id must be an int, got {oid!r}", oid, oid)
    if (prompt.points is None) != (prompt.labels is None):
        raise PromptError(f"object {oid}: points and labels must be given together", oid, prompt.points)
    mask = _as_mask(prompt)
    geometry = check_prompt_geometry(_host(prompt.points), _host(prompt.box), None if mask is None else mask.shape,
                                     height, width, f"object {oid}", oid)
    points, box = geometry.points, geometry.box
    labels = _check_labels(prompt, len(points))
    if mask is not None and (box is not None or len(points)):
        raise PromptError(f"object {oid}: a mask prompt cannot be combined with points or a box", oid, None)
    if mask is None and box is None and not len(points):
        raise PromptError(f"object {oid}: the prompt has no points, box or mask", oid, None)
    if mask is not None:
        return ModelPrompt(int(oid), None, None, _mask_to_model(mask.bool(), image_size, device), prompt.correction)
    if box is not None:  # a box is two labelled corner points, placed before any clicks
        points = np.concatenate([box.reshape(2, 2), points], axis=0)
        labels = np.concatenate([[BOX_TOP_LEFT, BOX_BOTTOM_RIGHT], labels])
    scale = torch.tensor([image_size / width, image_size / height], dtype=torch.float32)
    coords = torch.as_tensor(points, dtype=torch.float32) * scale  # (P, 2), scaled on the host
    return ModelPrompt(int(oid), to_device(coords, device), to_device(labels, device, torch.int32), None,
                       prompt.correction)


def _mask_to_model(mask: torch.Tensor, image_size: int, device: torch.device) -> torch.Tensor:
    m = to_device(mask, device).float()[None, None]  # (1, 1, H, W), bool on the way: a quarter of the bytes
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
