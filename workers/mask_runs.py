"""COCO RLE of a frame's masks without the host transpose: change bits where the masks are, runs on the host.

pycocotools wants every mask column-major (COCO counts runs down each column, column after column); the
model's (O, H, W) masks are row-major, and turning them round is a transpose that costs two thirds of
`encode_masks` at 1080p (about 11 of 17 ms for 10 objects on one core), while on CUDA the bool masks are
O x H x W bytes (21 MB at 1080p, 10 objects) to copy to the host each frame. Here instead:

- `change_bits(masks)`, where the masks are (GPU or CPU), fixed shapes only, so nothing waits for the device:
  bit x of byte row (o, y) is set where pixel (y, x) of object o differs from the pixel before it in
  column-major order: (y - 1, x), or (H - 1, x - 1) at the top of a column, 0 before the very first. Packed 8
  pixels a byte, little bit order, rows padded with 0 bits: (O, H, ceil(W / 8)) uint8, 8x fewer bytes.
- `encode_change_bits(bits, height, width)`, on the host: the set bits are the runs' starts; ordered by
  column-major position they give COCO's uncompressed counts, which pycocotools compresses (frPyObjects)
  and boxes (toBbox); areas are the sums of the runs of ones.

The strings, boxes and areas are byte-identical to `workers.masklets.encode_masks` (tests/test_mask_runs.py).
"""

from __future__ import annotations

import numpy as np
import torch
from pycocotools import mask as mask_utils

from .masklets import EncodedMasks, MaskletValueError


def change_bits(masks: torch.Tensor) -> torch.Tensor:
    """(O, H, W) bool masks -> (O, H, ceil(W / 8)) uint8 change bits, on the masks' device."""
    if masks.ndim != 3 or masks.dtype != torch.bool or masks.shape[1] < 1 or masks.shape[2] < 1:
        raise MaskletValueError(f"masks must be (objects, height, width) bool with height, width >= 1, got "
                                f"{tuple(masks.shape)} {masks.dtype}", (tuple(masks.shape), masks.dtype))
    if masks.device.type == "cpu":  # numpy's packbits is ~40x faster than the torch expression on a CPU
        return torch.from_numpy(change_bits_np(masks.numpy()))
    return change_bits_torch(masks)


def change_bits_np(masks: np.ndarray) -> np.ndarray:
    """`change_bits` for a numpy (O, H, W) bool array."""
    before_top = np.zeros_like(masks[:, -1])  # (O, W): the pixel before each column's top, the previous one's end
    before_top[:, 1:] = masks[:, -1, :-1]
    packed = np.packbits(masks, axis=-1, bitorder="little")  # (O, H, Wp)
    out = np.empty_like(packed)
    out[:, 0] = np.packbits(masks[:, 0] ^ before_top, axis=-1, bitorder="little")
    np.bitwise_xor(packed[:, 1:], packed[:, :-1], out=out[:, 1:])  # below the top: vs the pixel above
    return out


def change_bits_torch(masks: torch.Tensor) -> torch.Tensor:
    """`change_bits` in torch ops only (any device): what runs on CUDA. Written with narrow/select/cat, not
    Python indexing, which a CPU-only torch cannot trace on fake CUDA tensors (tests' FakeTensorMode)."""
    o, h, w = masks.shape
    bottom = masks.select(1, h - 1)  # (O, W)
    before_top = torch.cat([bottom.new_zeros(o, 1), bottom.narrow(1, 0, w - 1)], dim=1)  # previous column's end
    top = _pack_rows((masks.select(1, 0) ^ before_top).unsqueeze(1))  # (O, 1, Wp)
    packed = _pack_rows(masks)  # (O, H, Wp)
    below = torch.bitwise_xor(packed.narrow(1, 1, h - 1), packed.narrow(1, 0, h - 1))  # vs the pixel above
    return torch.cat([top, below], dim=1)


def _pack_rows(masks: torch.Tensor) -> torch.Tensor:
    """(O, H, W) bool -> (O, H, ceil(W / 8)) uint8, pixel x at bit x % 8 of byte x // 8 (np.packbits, little)."""
    o, h, w = masks.shape
    wp = -(-w // 8)
    m = masks.to(torch.uint8)
    if w % 8:
        m = torch.cat([m, m.new_zeros(o, h, wp * 8 - w)], dim=-1)
    shifts = torch.arange(8, dtype=torch.uint8, device=masks.device)
    return (m.view(o, h, wp, 8) << shifts).sum(-1, dtype=torch.uint8)  # (O, H, Wp, 8) -> (O, H, Wp)


def encode_change_bits(bits: np.ndarray, height: int, width: int) -> EncodedMasks:
    """Host side: `change_bits` output (a numpy array) -> the frame's COCO RLE, as encode_masks gives it."""
    n = bits.shape[0] if bits.ndim == 3 else -1
    if bits.dtype != np.uint8 or bits.shape != (n, height, -(-width // 8)) or height < 1 or width < 1:
        raise MaskletValueError(f"change bits must be (objects, {height}, {-(-width // 8)}) uint8 for "
                                f"{height}x{width} masks, got {bits.shape} {bits.dtype}", bits.shape)
    if n == 0:
        return EncodedMasks([], np.zeros((0, 4), np.float32), np.zeros(0, np.int64), height, width)
    size = height * width
    starts = _run_starts(bits, height, width)  # sorted o * size + column-major position
    bounds = np.searchsorted(starts, np.arange(n + 1) * size)
    counts = [np.diff(starts[a:b] - o * size, prepend=0, append=size).astype(np.uint32)
              for o, (a, b) in enumerate(zip(bounds[:-1], bounds[1:]))]
    rles = mask_utils.frPyObjects([{"size": [height, width], "counts": c} for c in counts], height, width)
    boxes = np.asarray(mask_utils.toBbox(rles), np.float32).reshape(n, 4)
    areas = np.asarray([c[1::2].sum(dtype=np.int64) for c in counts], np.int64)  # runs alternate 0s, 1s
    return EncodedMasks([r["counts"].decode("ascii") for r in rles], boxes, areas, height, width)


def _run_starts(bits: np.ndarray, height: int, width: int) -> np.ndarray:
    """Positions of the set bits as sorted int64 keys o * H * W + x * H + y (column-major within a mask).

    Scans 64 bits a word (a frame's change bits are mostly 0), then unpacks only the words that hold a bit.
    """
    flat = np.ascontiguousarray(bits).reshape(-1)
    if flat.size % 8:
        flat = np.concatenate([flat, np.zeros(8 - flat.size % 8, np.uint8)])
    words = np.flatnonzero(flat.view(np.uint64) != 0)  # nonzero() is ~7x faster on bool than on uint64
    set_bits = np.flatnonzero(np.unpackbits(flat.reshape(-1, 8)[words], axis=-1, bitorder="little").view(bool))
    byte = words[set_bits // 64] * 8 + set_bits % 64 // 8  # index into the flat (O, H, Wp) bytes
    wp = bits.shape[2]
    o, rest = np.divmod(byte, height * wp)
    y, xb = np.divmod(rest, wp)
    x = xb * 8 + set_bits % 8
    return np.sort(o * (height * width) + x * height + y)
