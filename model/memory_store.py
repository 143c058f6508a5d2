"""SlotStore: one FIFO of same-shaped memories (spatial memories or object pointers), allocated as used.

Every part of a memory bank (prompted frames, recent frames, keyframes, the retrieval pool, pointers) is one
of these. A store starts empty and grows, doubling, to its capacity as frames arrive (an object prompted once
holds one prompted-frame slot, not 16); once full it only overwrites its oldest slot, so a long video makes
no allocation per frame. `preallocate` gives every slot up front instead (static shapes for compile).

With int8 storage each item is kept as int8 with one float32 scale per channel (its first dimension; a vector,
an object pointer, is one channel): the channel's largest magnitude maps to 127. Reading dequantises to the
store's compute dtype.
"""

from dataclasses import dataclass

import torch


@dataclass
class SlotStore:
    capacity: int  # slots this store may grow to
    frames: list[int]  # frame held by each allocated slot (-1: empty)
    data: torch.Tensor  # (allocated, *item_shape) in `dtype`, or int8 when quantised
    scales: torch.Tensor | None = None  # (allocated, item_shape[0]) float32 per-channel scales; None: not int8
    dtype: torch.dtype = torch.bfloat16  # what `read` returns (and what is stored when not int8)

    @classmethod
    def empty(cls, capacity: int, item_shape: tuple[int, ...], dtype: torch.dtype, device: torch.device,
              int8: bool = False, preallocate: bool = False) -> "SlotStore":
        n = capacity if preallocate else 0
        data = torch.zeros(n, *item_shape, dtype=torch.int8 if int8 else dtype, device=device)
        scales = torch.zeros(n, _channels(item_shape), dtype=torch.float32, device=device) if int8 else None
        return cls(capacity, [-1] * n, data, scales, dtype)

    @property
    def int8(self) -> bool:
        return self.scales is not None

    @property
    def item_shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape[1:])

    def live(self) -> list[int]:
        """Slots holding a frame."""
        return [s for s, f in enumerate(self.frames) if f >= 0]

    def slot_for(self, frame: int) -> int:
        """The slot `frame` goes to: its own when stored already, else an empty one, else a new one while the
        store is below capacity, else the oldest frame's."""
        if frame in self.frames:
            return self.frames.index(frame)
        if -1 in self.frames:
            return self.frames.index(-1)
        if len(self.frames) < self.capacity:
            return len(self.frames)
        return min(range(len(self.frames)), key=self.frames.__getitem__)

    def put(self, slot: int, frame: int, item: torch.Tensor) -> None:
        """Store `item` (item_shape) for `frame` in `slot`, growing the allocation to cover the slot."""
        if slot >= len(self.frames):
            self._grow(slot + 1)
        if self.int8:
            self.data[slot], self.scales[slot] = quantize(item)
        else:
            self.data[slot] = item
        self.frames[slot] = frame

    def read(self, slot: int) -> torch.Tensor:
        """The item in `slot`, dequantised: item_shape in `dtype`."""
        if not self.int8:
            return self.data[slot]
        return dequantize(self.data[slot], self.scales[slot], self.dtype)

    def evictee(self, slot: int) -> int:
        """The frame that storing into `slot` would drop (-1: none)."""
        return self.frames[slot] if slot < len(self.frames) else -1

    def tensors(self, name: str) -> dict[str, torch.Tensor]:
        out = {name: self.data}
        if self.int8:
            out[f"{name}.scales"] = self.scales
        return out

    def _grow(self, need: int) -> None:
        """Double the allocation (at least to `need`, at most to capacity): log2(capacity) allocations in all."""
        n = min(self.capacity, max(need, 2 * len(self.frames)))
        extra = n - len(self.frames)
        self.data = torch.cat([self.data, self.data.new_zeros(extra, *self.data.shape[1:])])
        if self.int8:
            self.scales = torch.cat([self.scales, self.scales.new_zeros(extra, self.scales.shape[1])])
        self.frames = self.frames + [-1] * extra


def _channels(item_shape: tuple[int, ...]) -> int:
    """Scales per item: one per channel (the first dimension) of a grid, one for a vector."""
    return item_shape[0] if len(item_shape) > 1 else 1


def quantize(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x (C, ...) -> int8 values (C, ...) and float32 scales (C,): symmetric, per channel (first dim); a
    vector (D,) is one channel: scales (1,)."""
    flat = x.detach().float().reshape(_channels(tuple(x.shape)), -1)  # (C, rest)
    scale = flat.abs().amax(dim=1).clamp_min(1e-12) / 127.0  # (C,)
    q = torch.round(flat / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return q.view(x.shape), scale


def dequantize(q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """int8 (C, ...) with scales (C,) -> (C, ...) in dtype."""
    return (q.float() * scale.view(-1, *([1] * (q.dim() - 1)))).to(dtype)
