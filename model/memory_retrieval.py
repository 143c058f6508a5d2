"""Relevance retrieval: which memories of an object's pool its current frame attends to.

Content-based addressing in memory attention's own space, kept cheap: each pooled memory is summarised by
its mean over the grid (stored with it, Cm values), projected by the first layer's cross-attention keys;
the frame by its tokens' first-layer queries. A memory's relevance is its best cosine similarity to any
query token (the object may be anywhere in the frame); the top k are attended, ties broken by recency.
One host read of the similarities per frame decides the layout (which is host metadata).
"""

import torch
import torch.nn.functional as F

from .memory_bank import MemoryPolicy, ObjectMemory
from .memory_view import retrieval_candidates


def frame_queries(model, feat: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """(N, C, h, w) frame features and their position encoding -> unit first-layer queries (N, hw, Ck)."""
    layer = model.memory_attention.layers[0]
    x = feat.flatten(2).transpose(1, 2).float()  # (N, hw, C)
    p = pos.flatten(2).transpose(1, 2).float()  # (N, hw, C)
    if model.memory_attention.pos_enc_at_input:
        x = x + 0.1 * p
    h = F.layer_norm(x, layer.norm2.normalized_shape, layer.norm2.weight.float(), layer.norm2.bias.float())
    q = h + p if layer.pos_enc_at_cross_attn_queries else h
    attn = layer.cross_attn_image
    return F.normalize(F.linear(q, attn.q_proj.weight.float(), attn.q_proj.bias.float()), dim=-1)


def memory_keys(model, desc: torch.Tensor) -> torch.Tensor:
    """(P, Cm) memory summaries -> unit first-layer keys (P, Ck)."""
    k_proj = model.memory_attention.layers[0].cross_attn_image.k_proj
    return F.normalize(F.linear(desc.float(), k_proj.weight.float()), dim=-1)


def relevance(queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """(hw, Ck) unit queries, (P, Ck) unit keys -> (P,) each key's best cosine similarity to a query."""
    return (queries @ keys.T).amax(dim=0)


def top_k(scores: list[float], ages: list[int], k: int) -> list[int]:
    """Indices of the k highest scores, ties broken by recency (the smaller age first)."""
    return sorted(range(len(scores)), key=lambda i: (-scores[i], ages[i]))[:k]


def retrieve(model, policy: MemoryPolicy, banks: list[ObjectMemory], frames: list[int],
             queries: torch.Tensor) -> list[list[int]]:
    """Per object, the pool slots it attends to at its frame; queries (N, hw, Ck) from `frame_queries`."""
    selective = policy.store_threshold is not None
    cands = [retrieval_candidates(b, f, selective) for b, f in zip(banks, frames)]
    if not any(cands):
        return [[] for _ in banks]
    scores = torch.cat([relevance(queries[i], memory_keys(model, torch.stack(
        [b.read("pool_desc", s) for s in c]))) for i, (b, c) in enumerate(zip(banks, cands)) if c])
    flat = scores.tolist()  # the one host read
    out, at = [], 0
    for b, f, c in zip(banks, frames, cands):
        mine, at = flat[at:at + len(c)], at + len(c)
        ages = [f - b.frames("pool")[s] for s in c]
        out.append([c[j] for j in top_k(mine, ages, policy.retrieval_topk)])
    return out
