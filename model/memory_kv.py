"""Memory keys and values, projected once per stored memory instead of once per frame that attends to it.

Memory attention's cross-attention keys of a spatial memory m are rope(Wk (m + p_spatial + p_time) + bk),
its values Wv m + bv, in every layer. A memory is attended to by up to N later frames, and only its temporal
encoding p_time changes as it ages. Projection and rotation are linear, so

    keys = rope(Wk (m + p_spatial))  +  rope(Wk p_time + bk)
           per memory, cached           per temporal slot, one table shared by all memories

and values do not age at all. Each bank caches its memories' projections per layer (keyed by slot and the
frame in it, so an overwritten slot is recomputed, and a restored snapshot rebuilds them on first use);
a frame then only copies them into the batch and adds the temporal table. Pointer tokens are few: they are
projected every frame. The sum is the reference's arithmetic reassociated: equal up to rounding.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .memory_bank import MemoryPolicy, MemoryView, ObjectMemory
from .memory_batch import memory_layout
from .rope import apply_rope
from .weight_keys import weights_key


@dataclass
class MemoryKV:
    """Per layer, the memory keys (rotated) and values of N objects, and the attention bias."""

    keys: torch.Tensor  # (L, N, H, M, d), M = S*hw + P*k tokens as memory_batch lays them out
    values: torch.Tensor  # (L, N, H, M, d)
    bias: torch.Tensor | None  # (N, M) additive attention bias; None when all zero

    def per_layer(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return list(zip(self.keys.unbind(0), self.values.unbind(0)))


def project_memories(model, feats: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Spatial memories (n, Cm, h, w) -> their keys without temporal encoding and their values, per layer:
    (n, L, 2, H, hw, d)."""
    # float32 sums, as the reference adds memories and encodings before its (autocast) projections
    x = feats.flatten(2).transpose(1, 2).float()  # (n, hw, Cm)
    hw = x.shape[1]
    spatial_pos = model.memory_pos(x.device)  # (hw, Cm)
    out = []
    for layer in model.memory_attention.layers:
        attn = layer.cross_attn_image
        k = F.linear(x + spatial_pos if layer.pos_enc_at_cross_attn_keys else x, attn.k_proj.weight)  # (n, hw, Ck)
        k = apply_rope(attn.split_heads(k), attn.rotations(hw, 1, x.device))  # (n, H, hw, d)
        v = attn.split_heads(attn.v_proj(x))  # (n, H, hw, d)
        out.append(torch.stack([k.to(dtype), v.to(dtype)], dim=1))  # (n, 2, H, hw, d)
    return torch.stack(out, dim=1)  # (n, L, 2, H, hw, d)


def temporal_keys(model, hw: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """rope(Wk p_time + bk) for every temporal slot and layer, over an hw-token grid: (L, T, H, hw, d)."""
    cfg = model.cfg
    tpos = model.maskmem_tpos_enc.view(cfg.num_maskmem, cfg.mem_dim).float()  # (T, Cm)
    out = []
    for layer in model.memory_attention.layers:
        attn = layer.cross_attn_image
        u = F.linear(tpos if layer.pos_enc_at_cross_attn_keys else torch.zeros_like(tpos),
                     attn.k_proj.weight.float(), attn.k_proj.bias.float())  # (T, Ck)
        u = attn.split_heads(u[:, None, :].expand(-1, hw, -1))  # (T, H, hw, d)
        out.append(apply_rope(u, attn.rotations(hw, 1, device)).to(dtype))
    return torch.stack(out)  # (L, T, H, hw, d)


class TemporalKeyTable:
    """`temporal_keys`, kept until the weights it was computed from change (see weight_keys) or another
    grid, dtype or device is asked for."""

    def __init__(self):
        self._key, self._table = None, None

    def get(self, model, hw: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        projections = [layer.cross_attn_image.k_proj for layer in model.memory_attention.layers]
        params = [model.maskmem_tpos_enc] + [p for k_proj in projections for p in k_proj.parameters()]
        key = (hw, dtype, device, weights_key([model, *projections], params))
        if key != self._key:
            self._key, self._table = key, temporal_keys(model, hw, dtype, device)
        return self._table


class MemoryKVBuffer:
    """Room for one frame's memory keys and values, allocated once and reused by every frame.

    A frame's batch is tens of MB (2 x 44 MB for 3 objects at 512 px): above glibc's largest mmap threshold
    (32 MiB), so a fresh one would be mapped, page-faulted in and unmapped again on every frame. The room
    grows (by at least a quarter, as a bank fills frame by frame) to the largest batch asked for; what `take`
    returns is valid until the next `take`."""

    def __init__(self):
        self._room: torch.Tensor | None = None  # (2, capacity) flat

    def take(self, shape: tuple[int, ...], dtype: torch.dtype,
             device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        n = math.prod(shape)
        room = self._room
        if room is None or room.dtype != dtype or room.device != device:
            room = self._room = torch.empty(2, n, dtype=dtype, device=device)
        elif room.shape[1] < n:
            room = self._room = torch.empty(2, max(n, room.shape[1] * 5 // 4), dtype=dtype, device=device)
        return room[0, :n].view(shape), room[1, :n].view(shape)


def build_memory_kv(model, banks: list[ObjectMemory], frames: list[int], policy: MemoryPolicy, dtype: torch.dtype,
                    table: TemporalKeyTable, min_frames: int = 0, min_ptrs: int = 0,
                    buffer: MemoryKVBuffer | None = None) -> MemoryKV:
    """What `build_memory_batch` lays out, projected for every layer, from the banks' caches (written into
    `buffer` when one is given)."""
    lay = memory_layout(model, banks, frames, policy, dtype, min_frames, min_ptrs)
    entries = _cached_projections(model, banks, lay.views, dtype)  # per object, (L, 2, H, hw, d) per frame
    L, N, hw = model.cfg.memory_attention_layers, len(banks), lay.hw
    tpos_table = table.get(model, hw, dtype, lay.ptrs.device)  # (L, T, H, hw, d)
    H, d = tpos_table.shape[2], tpos_table.shape[4]
    S_hw, Pk = lay.num_frames * hw, lay.ptr_tokens.shape[1]
    shape = (L, N, H, S_hw + Pk, d)
    keys, values = (buffer or MemoryKVBuffer()).take(shape, dtype, lay.ptrs.device)
    for i, (cached, tpos) in enumerate(zip(entries, lay.tpos)):
        for j, e in enumerate(cached):
            rows = slice(j * hw, (j + 1) * hw)
            torch.add(e[:, 0], tpos_table[:, tpos[j]], out=keys[:, i, :, rows])  # (L, H, hw, d)
            values[:, i, :, rows] = e[:, 1]
        pad = slice(len(cached) * hw, S_hw)  # padding frames: masked by the bias, but must be finite
        keys[:, i, :, pad], values[:, i, :, pad] = 0.0, 0.0
    for n, layer in enumerate(model.memory_attention.layers):  # pointers: no rotation, projected every frame
        k, v = layer.memory_kv(lay.ptr_tokens, lay.ptr_pos, hw, Pk)  # (N, H, Pk, d) each
        keys[n, :, :, S_hw:], values[n, :, :, S_hw:] = k, v
    return MemoryKV(keys, values, lay.bias)


def _cached_projections(model, banks: list[ObjectMemory], views: list[MemoryView],
                        dtype: torch.dtype) -> list[list[torch.Tensor]]:
    """Each object's attended spatial memories, projected: from its bank's cache, the missing ones
    projected together in one batch and cached."""
    wanted = [_spatial_slots(b, v) for b, v in zip(banks, views)]
    missing = [(bank, key, frame, feat) for bank, slots in zip(banks, wanted) for key, frame, feat in slots
               if not _fresh(bank.kv_cache.get(key), frame, dtype)]
    if missing:
        projected = project_memories(model, torch.stack([m[3] for m in missing]), dtype)  # (n, L, 2, H, hw, d)
        for (bank, key, frame, _), p in zip(missing, projected):
            bank.kv_cache[key] = (frame, p)
    return [[bank.kv_cache[key][1] for key, _, _ in slots] for bank, slots in zip(banks, wanted)]


def _spatial_slots(bank: ObjectMemory, view: MemoryView) -> list[tuple[tuple[str, int], int, torch.Tensor]]:
    """(cache key, frame, memory) of each attended spatial slot, in the layout's order: prompted, keyframes,
    recent."""
    return ([(("cond", s), bank.cond_frames[s], bank.cond_feats[s]) for s in view.cond_slots]
            + [(("key", s), bank.key_frames[s], bank.key_feats[s]) for s in view.key_slots]
            + [(("recent", s), bank.recent_frames[s], bank.recent_feats[s]) for s in view.recent_slots])


def _fresh(entry: tuple[int, torch.Tensor] | None, frame: int, dtype: torch.dtype) -> bool:
    return entry is not None and entry[0] == frame and entry[1].dtype == dtype
