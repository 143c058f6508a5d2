"""Gather the memories N objects attend to at their current frame into one padded batch.

Layout per object (the memory attention's contract): [spatial memories, hw tokens each (hw/4 for a memory
kept coarse)][P pointers x k tokens], padded to the batch's largest spatial token count and P (or to at least
`min_tokens` and `min_ptrs`: a compiled step wants the same shapes on every frame); padding gets an
attention bias of -inf, and with a decay policy the tokens of a memory of age dt get -decay * dt.
"""

import math
from dataclasses import dataclass

import torch

from .memory_bank import MemoryPolicy, ObjectMemory
from .memory_view import MemoryView, select_memories
from .transfer import to_device


@dataclass
class MemoryBatch:
    memory: torch.Tensor  # (N, T + P*k, Cm)
    memory_pos: torch.Tensor  # (N, T + P*k, Cm)
    num_ptr_tokens: int  # P*k, the tail that gets no rotary encoding
    bias: torch.Tensor | None  # (N, T + P*k) additive attention bias; None when all zero


@dataclass
class MemoryLayout:
    """Everything about a batch but its spatial memories themselves (memory_kv.py projects those from a cache)."""

    views: list[MemoryView]  # which memories each object attends to
    spatial_tokens: int  # T, spatial memory tokens per object after padding
    hw: int  # tokens of a full-resolution spatial memory
    frame_tokens: list[list[int]]  # (N, S_i) tokens of each attended spatial memory (hw, or hw/4 when coarse)
    tpos: list[list[int]]  # (N, S_i) temporal slot of each attended spatial memory
    ptrs: torch.Tensor  # (N, P, C) object pointers, zero padded
    ptr_tokens: torch.Tensor  # (N, P*k, Cm) the pointers split into memory tokens
    ptr_pos: torch.Tensor  # (N, P*k, Cm) their temporal encoding
    bias: torch.Tensor | None  # (N, T + P*k) or None when all zero


def memory_layout(model, banks: list[ObjectMemory], frames: list[int], policy: MemoryPolicy, dtype: torch.dtype,
                  min_tokens: int = 0, min_ptrs: int = 0, retrieved: list[list[int]] | None = None) -> MemoryLayout:
    cfg, decay = model.cfg, policy.decay
    retrieved = retrieved or [[] for _ in banks]
    views = [select_memories(b, f, policy.store_threshold is not None, r) for b, f, r in zip(banks, frames, retrieved)]
    N, hw = len(banks), cfg.feat_size ** 2
    counts = [[b.tokens(r.store) for r in v.spatial] for b, v in zip(banks, views)]
    T = max(min_tokens, *(sum(c) for c in counts))
    P = max(min_ptrs, *(v.num_ptrs for v in views))
    Cm, C = cfg.mem_dim, cfg.d_model
    k = C // Cm  # a pointer of width C is split into k memory tokens of width Cm
    device = banks[0].stores["ptrs"].data.device
    ptrs = torch.zeros(N, P, C, dtype=dtype, device=device)
    # Host metadata for every object first, then one copy per kind: no per-object host-to-device transfers.
    last_slot = cfg.num_maskmem - 1  # temporal slot of prompted frames; the others use 0..num_maskmem-2
    tpos = [[last_slot if r.store == "cond" else min(r.order, last_slot) - 1 for r in v.spatial] for v in views]
    bias_s = [[0.0 if r.store == "cond" else -decay * r.age for r in v.spatial] for v in views]
    offsets, bias_p = [[0.0] * P for _ in range(N)], [[-math.inf] * P for _ in range(N)]
    for i, (bank, view) in enumerate(zip(banks, views)):
        p = view.num_ptrs
        if p:  # rows by int: a list index would copy the slots to the device, waiting for it
            ptrs[i, :p] = torch.stack([bank.read(r.store, r.slot) for r in view.ptrs])
        offsets[i][:p] = [float(r.age) for r in view.ptrs]
        bias_p[i][:p] = [0.0 if r.store == "cond_ptrs" else -decay * r.age for r in view.ptrs]
    pos_p = model.pointer_pos(to_device(offsets, device, torch.float32).flatten()).view(N, P, Cm)  # (N, P, Cm)
    bias = None
    if decay > 0 or any(sum(c) < T for c in counts) or any(v.num_ptrs < P for v in views):
        bias = torch.cat([_spatial_bias(bias_s, counts, T, hw, device),
                          to_device(bias_p, device, torch.float32).repeat_interleave(k, dim=1)], dim=1)
    return MemoryLayout(views, T, hw, counts, tpos, ptrs, ptrs.view(N, P * k, Cm),
                        pos_p.repeat_interleave(k, dim=1).to(dtype), bias)


def _spatial_bias(bias_s: list[list[float]], counts: list[list[int]], T: int, hw: int,
                  device: torch.device) -> torch.Tensor:
    """Per-memory biases spread over their tokens, -inf on padding -> (N, T)."""
    S = max(len(b) for b in bias_s)
    if all(c == hw for row in counts for c in row) and T % hw == 0:  # full-resolution memories only
        S = T // hw
        rows = [b + [-math.inf] * (S - len(b)) for b in bias_s]
        return to_device(rows, device, torch.float32).repeat_interleave(hw, dim=1)  # (N, T)
    # Mixed resolutions: a padding "memory" takes each row's remaining tokens.
    rows = [b + [-math.inf] * (S + 1 - len(b)) for b in bias_s]
    sizes = [c + [T - sum(c)] + [0] * (S - len(c)) for c in counts]
    values, reps = to_device(rows, device, torch.float32), to_device(sizes, device, torch.long)
    return torch.stack([v.repeat_interleave(r, output_size=T) for v, r in zip(values, reps)])  # (N, T)


def build_memory_batch(model, banks: list[ObjectMemory], frames: list[int], policy: MemoryPolicy,
                       dtype: torch.dtype, min_tokens: int = 0, min_ptrs: int = 0,
                       retrieved: list[list[int]] | None = None) -> MemoryBatch:
    """The memories themselves laid out for `SAM2Model.fuse_with_memory` (training, and the tracker without
    its key/value cache); full-resolution memories only: coarse ones need memory_kv.py's rotations."""
    if policy.coarse_after:
        raise ValueError(f"coarse_after={policy.coarse_after} needs the memory key/value cache "
                         "(StreamingTracker(cache_memory_kv=True)); the plain memory batch has full-size grids only")
    lay = memory_layout(model, banks, frames, policy, dtype, min_tokens, min_ptrs, retrieved)
    N, T, hw, Cm = len(banks), lay.spatial_tokens, lay.hw, model.cfg.mem_dim
    spatial = torch.zeros(N, T // hw, hw, Cm, dtype=dtype, device=lay.ptrs.device)
    for i, (bank, view) in enumerate(zip(banks, lay.views)):
        feats = [bank.read(r.store, r.slot) for r in view.spatial]  # slots by int, as the pointers above
        if feats:
            spatial[i, :len(feats)] = torch.stack(feats).flatten(2).transpose(1, 2).to(dtype)  # (s, hw, Cm)
    memory = torch.cat([spatial.flatten(1, 2), lay.ptr_tokens], dim=1)  # (N, T + P*k, Cm)
    cfg, device = model.cfg, lay.ptrs.device
    tpos = [t + [0] * (T // hw - len(t)) for t in lay.tpos]
    tpos_enc = model.maskmem_tpos_enc.view(cfg.num_maskmem, Cm)[to_device(tpos, device, torch.long)]  # (N, S, Cm)
    pos_s = model.memory_pos(device)[None, None] + tpos_enc[:, :, None, :]  # (N, S, hw, Cm)
    memory_pos = torch.cat([pos_s.flatten(1, 2).to(dtype), lay.ptr_pos], dim=1)  # (N, T + P*k, Cm)
    return MemoryBatch(memory, memory_pos, lay.ptr_tokens.shape[1], lay.bias)
