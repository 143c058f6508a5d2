"""Gather the memories N objects attend to at their current frame into one padded batch.

Layout per object (the memory attention's contract): [S frames x hw spatial tokens][P pointers x k tokens],
padded to the batch's largest S and P (or to at least `min_frames` and `min_ptrs`: a compiled step wants the same
shapes on every frame); padding gets an attention bias of -inf, and with a decay policy the
tokens of a recent memory of age dt get -decay * dt.
"""

import math
from dataclasses import dataclass

import torch

from .memory_bank import MemoryPolicy, MemoryView, ObjectMemory, select_memories
from .transfer import to_device


@dataclass
class MemoryBatch:
    memory: torch.Tensor  # (N, S*hw + P*k, Cm)
    memory_pos: torch.Tensor  # (N, S*hw + P*k, Cm)
    num_ptr_tokens: int  # P*k, the tail that gets no rotary encoding
    bias: torch.Tensor | None  # (N, S*hw + P*k) additive attention bias; None when all zero


@dataclass
class MemoryLayout:
    """Everything about a batch but its spatial memories themselves (memory_kv.py projects those from a cache)."""

    views: list[MemoryView]  # which slots each object attends to
    num_frames: int  # S, spatial memory frames per object after padding
    hw: int  # tokens per spatial memory
    tpos: list[list[int]]  # (N, S) temporal slot of each spatial memory (padding: 0)
    ptrs: torch.Tensor  # (N, P, C) object pointers, zero padded
    ptr_tokens: torch.Tensor  # (N, P*k, Cm) the pointers split into memory tokens
    ptr_pos: torch.Tensor  # (N, P*k, Cm) their temporal encoding
    bias: torch.Tensor | None  # (N, S*hw + P*k) or None when all zero


def memory_layout(model, banks: list[ObjectMemory], frames: list[int], policy: MemoryPolicy, dtype: torch.dtype,
                  min_frames: int = 0, min_ptrs: int = 0) -> MemoryLayout:
    cfg, decay = model.cfg, policy.decay
    views = [select_memories(b, f, policy.store_threshold is not None) for b, f in zip(banks, frames)]
    N = len(banks)
    S = max(min_frames, *(v.num_spatial for v in views))
    P = max(min_ptrs, *(v.num_ptrs for v in views))
    Cm, C = cfg.mem_dim, cfg.d_model
    k = C // Cm  # a pointer of width C is split into k memory tokens of width Cm
    device = banks[0].ptrs.device
    hw = cfg.feat_size ** 2  # tokens per spatial memory
    ptrs = torch.zeros(N, P, C, dtype=dtype, device=device)
    # Host metadata for every object first, then one copy per kind: no per-object host-to-device transfers.
    tpos, offsets = [[0] * S for _ in range(N)], [[0.0] * P for _ in range(N)]
    bias_s, bias_p = [[-math.inf] * S for _ in range(N)], [[-math.inf] * P for _ in range(N)]
    last_slot = cfg.num_maskmem - 1  # temporal slot of prompted frames; recent ones use 0..num_maskmem-2
    for i, (bank, view) in enumerate(zip(banks, views)):
        s = view.num_spatial
        # Keyframes are old: they share the oldest recent encoding, as recent memories past 6 frames do.
        tpos[i][:s] = ([last_slot] * len(view.cond_slots) + [min(d, last_slot) - 1 for d in view.key_ages]
                       + [min(o, last_slot) - 1 for o in view.recent_order])
        bias_s[i][:s] = [0.0] * len(view.cond_slots) + [-decay * d for d in view.key_ages + view.recent_ages]
        p_cond, p_recent = view.ptr_cond_slots, view.ptr_recent_slots
        p = len(p_cond) + len(p_recent)
        if p:  # rows by int: a list index would copy the slots to the device, waiting for it
            ptrs[i, :p] = torch.stack([bank.cond_ptrs[c] for c in p_cond] + [bank.ptrs[r] for r in p_recent])
        offsets[i][:p] = [frames[i] - bank.cond_frames[c] for c in p_cond] + list(view.ptr_recent_ages)
        bias_p[i][:p] = [0.0] * len(p_cond) + [-decay * d for d in view.ptr_recent_ages]
    pos_p = model.pointer_pos(to_device(offsets, device, torch.float32).flatten()).view(N, P, Cm)  # (N, P, Cm)
    bias = None
    if decay > 0 or any(v.num_spatial < S or v.num_ptrs < P for v in views):
        bias_s, bias_p = to_device(bias_s, device, torch.float32), to_device(bias_p, device, torch.float32)
        bias = torch.cat([bias_s.repeat_interleave(hw, dim=1), bias_p.repeat_interleave(k, dim=1)], dim=1)
    return MemoryLayout(views, S, hw, tpos, ptrs, ptrs.view(N, P * k, Cm),
                        pos_p.repeat_interleave(k, dim=1).to(dtype), bias)


def build_memory_batch(model, banks: list[ObjectMemory], frames: list[int], policy: MemoryPolicy,
                       dtype: torch.dtype, min_frames: int = 0, min_ptrs: int = 0) -> MemoryBatch:
    lay = memory_layout(model, banks, frames, policy, dtype, min_frames, min_ptrs)
    N, S, hw, Cm = len(banks), lay.num_frames, lay.hw, model.cfg.mem_dim
    spatial = torch.zeros(N, S, hw, Cm, dtype=dtype, device=lay.ptrs.device)
    for i, (bank, view) in enumerate(zip(banks, lay.views)):
        feats = ([bank.cond_feats[s] for s in view.cond_slots] + [bank.key_feats[s] for s in view.key_slots]
                 + [bank.recent_feats[s] for s in view.recent_slots])  # slots by int, as the pointers above
        if feats:
            spatial[i, :len(feats)] = torch.stack(feats).flatten(2).transpose(1, 2).to(dtype)  # (s, hw, Cm)
    memory = torch.cat([spatial.flatten(1, 2), lay.ptr_tokens], dim=1)  # (N, S*hw + P*k, Cm)
    cfg, device = model.cfg, lay.ptrs.device
    tpos_enc = model.maskmem_tpos_enc.view(cfg.num_maskmem, Cm)[to_device(lay.tpos, device, torch.long)]  # (N, S, Cm)
    pos_s = model.memory_pos(device)[None, None] + tpos_enc[:, :, None, :]  # (N, S, hw, Cm)
    memory_pos = torch.cat([pos_s.flatten(1, 2).to(dtype), lay.ptr_pos], dim=1)  # (N, S*hw + P*k, Cm)
    return MemoryBatch(memory, memory_pos, lay.ptr_tokens.shape[1], lay.bias)
