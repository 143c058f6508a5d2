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

from .memory_bank import MemoryPolicy, ObjectMemory
from .memory_batch import memory_layout
from .memory_view import MemoryView
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
    (n, L, 2, H, h*w, d). A memory of half the model's grid (a coarse one) gets the full grid's encodings
    pooled alike: its 2x2-averaged spatial encoding and rotations at its cells' centres."""
    # float32 sums, as the reference adds memories and encodings before its (autocast) projections
    x = feats.flatten(2).transpose(1, 2).float()  # (n, hw', Cm)
    hw, pool = model.cfg.feat_size ** 2, _pool(model, feats.shape[-1])
    spatial_pos = _spatial_pos(model, x.device, pool)  # (hw', Cm)
    out = []
    for layer in model.memory_attention.layers:
        attn = layer.cross_attn_image
        k = F.linear(x + spatial_pos if layer.pos_enc_at_cross_attn_keys else x, attn.k_proj.weight)  # (n, hw', Ck)
        k = apply_rope(attn.split_heads(k), attn.rotations(hw, 1, x.device, pool))  # (n, H, hw', d)
        v = attn.split_heads(attn.v_proj(x))  # (n, H, hw', d)
        out.append(torch.stack([k.to(dtype), v.to(dtype)], dim=1))  # (n, 2, H, hw', d)
    return torch.stack(out, dim=1)  # (n, L, 2, H, hw', d)


def _pool(model, width: int) -> int:
    """1 for a memory on the model's grid, 2 for a coarse one."""
    pool = model.cfg.feat_size // width
    assert pool in (1, 2) and pool * width == model.cfg.feat_size, f"memory width {width} for a {model.cfg.feat_size} grid"
    return pool


def _spatial_pos(model, device: torch.device, pool: int) -> torch.Tensor:
    """The memories' spatial encoding (hw / pool**2, Cm): the full grid's, pool x pool averaged."""
    pos = model.memory_pos(device)  # (hw, Cm)
    if pool == 1:
        return pos
    fs = model.cfg.feat_size
    grid = pos.T.reshape(1, -1, fs, fs)  # (1, Cm, fs, fs)
    return F.avg_pool2d(grid, pool)[0].flatten(1).T  # (hw / pool**2, Cm)


def temporal_keys(model, hw: int, dtype: torch.dtype, device: torch.device, pool: int = 1) -> torch.Tensor:
    """rope(Wk p_time + bk) for every temporal slot and layer, over an hw-token grid (pooled pool x pool):
    (L, T, H, hw / pool**2, d)."""
    cfg = model.cfg
    tpos = model.maskmem_tpos_enc.view(cfg.num_maskmem, cfg.mem_dim).float()  # (T, Cm)
    out = []
    for layer in model.memory_attention.layers:
        attn = layer.cross_attn_image
        u = F.linear(tpos if layer.pos_enc_at_cross_attn_keys else torch.zeros_like(tpos),
                     attn.k_proj.weight.float(), attn.k_proj.bias.float())  # (T, Ck)
        u = attn.split_heads(u[:, None, :].expand(-1, hw // pool ** 2, -1))  # (T, H, hw', d)
        out.append(apply_rope(u, attn.rotations(hw, 1, device, pool)).to(dtype))
    return torch.stack(out)  # (L, T, H, hw', d)


class TemporalKeyTable:
    """`temporal_keys`, kept until the weights it was computed from change (see weight_keys) or another
    grid, dtype or device is asked for."""

    def __init__(self):
        self._key, self._tables = None, {}

    def get(self, model, hw: int, dtype: torch.dtype, device: torch.device, pool: int = 1) -> torch.Tensor:
        projections = [layer.cross_attn_image.k_proj for layer in model.memory_attention.layers]
        params = [model.maskmem_tpos_enc] + [p for k_proj in projections for p in k_proj.parameters()]
        key = (hw, dtype, device, weights_key([model, *projections], params))
        if key != self._key:
            self._key, self._tables = key, {}
        if pool not in self._tables:
            self._tables[pool] = temporal_keys(model, hw, dtype, device, pool)
        return self._tables[pool]


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
                    table: TemporalKeyTable, min_tokens: int = 0, min_ptrs: int = 0,
                    buffer: MemoryKVBuffer | None = None, retrieved: list[list[int]] | None = None) -> MemoryKV:
    """What `build_memory_batch` lays out, projected for every layer, from the banks' caches (written into
    `buffer` when one is given)."""
    lay = memory_layout(model, banks, frames, policy, dtype, min_tokens, min_ptrs, retrieved)
    entries = _cached_projections(model, banks, lay.views, dtype, policy.int8)  # per object, per memory
    L, N, hw, device = model.cfg.memory_attention_layers, len(banks), lay.hw, lay.ptrs.device
    tables = {1: table.get(model, hw, dtype, device)}  # (L, T, H, hw', d) per pool
    H, d = tables[1].shape[2], tables[1].shape[4]
    T, Pk = lay.spatial_tokens, lay.ptr_tokens.shape[1]
    keys, values = (buffer or MemoryKVBuffer()).take((L, N, H, T + Pk, d), dtype, device)
    for i, (cached, tpos, counts) in enumerate(zip(entries, lay.tpos, lay.frame_tokens)):
        start = 0
        for e, t, n in zip(cached, tpos, counts):
            pool = 1 if n == hw else 2
            if pool not in tables:
                tables[pool] = table.get(model, hw, dtype, device, pool)
            rows = slice(start, start + n)
            k, v = _entry(e, dtype)  # (L, H, n, d) each
            torch.add(k, tables[pool][:, t], out=keys[:, i, :, rows])
            values[:, i, :, rows] = v
            start += n
        keys[:, i, :, start:T], values[:, i, :, start:T] = 0.0, 0.0  # padding: masked by the bias, but finite
    for n, layer in enumerate(model.memory_attention.layers):  # pointers: no rotation, projected every frame
        k, v = layer.memory_kv(lay.ptr_tokens, lay.ptr_pos, hw, Pk)  # (N, H, Pk, d) each
        keys[n, :, :, T:], values[n, :, :, T:] = k, v
    return MemoryKV(keys, values, lay.bias)


def _entry(e, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """A cached projection (L, 2, H, n, d), or its int8 form (values, scales (L, 2, H, 1, d)) -> keys, values."""
    if isinstance(e, tuple):
        e = (e[0].float() * e[1]).to(dtype)
    return e[:, 0], e[:, 1]


def _cached_projections(model, banks: list[ObjectMemory], views: list[MemoryView], dtype: torch.dtype,
                        int8: bool = False) -> list[list]:
    """Each object's attended spatial memories, projected: from its bank's cache, the missing ones projected
    together (one batch per resolution) and cached, in int8 with per-channel scales when `int8`."""
    wanted = [_spatial_slots(b, v) for b, v in zip(banks, views)]
    missing = [(bank, key, frame) for bank, slots in zip(banks, wanted) for key, frame in slots
               if not _fresh(bank.kv_cache.get(key), frame, dtype)]
    for width in sorted({b.stores[key[0]].item_shape[-1] for b, key, _ in missing}):
        group = [m for m in missing if m[0].stores[m[1][0]].item_shape[-1] == width]
        feats = torch.stack([bank.read(*key) for bank, key, _ in group])  # (n, Cm, h', w')
        projected = project_memories(model, feats, dtype)  # (n, L, 2, H, hw', d)
        for (bank, key, frame), p in zip(group, projected):
            bank.kv_cache[key] = (frame, dtype, _quantize_kv(p) if int8 else p)
    return [[bank.kv_cache[key][2] for key, _ in slots] for bank, slots in zip(banks, wanted)]


def _quantize_kv(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(L, 2, H, n, d) -> int8 values and float32 scales (L, 2, H, 1, d): one scale per channel over the tokens."""
    scale = p.float().abs().amax(dim=-2, keepdim=True).clamp_min(1e-12) / 127.0
    return torch.round(p.float() / scale).clamp_(-127, 127).to(torch.int8), scale


def _spatial_slots(bank: ObjectMemory, view: MemoryView) -> list[tuple[tuple[str, int], int]]:
    """(cache key, frame) of each attended spatial memory, in the layout's order."""
    return [((r.store, r.slot), bank.frames(r.store)[r.slot]) for r in view.spatial]


def _fresh(entry: tuple | None, frame: int, dtype: torch.dtype) -> bool:
    return entry is not None and entry[0] == frame and entry[1] == dtype


def cache_nbytes(bank: ObjectMemory) -> int:
    """Bytes of a bank's cached keys and values (derived: not in snapshots, rebuilt on first use)."""
    total = 0
    for _, _, e in bank.kv_cache.values():
        for t in (e if isinstance(e, tuple) else (e,)):
            total += t.numel() * t.element_size()
    return total
