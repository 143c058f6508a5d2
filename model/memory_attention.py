"""Memory attention: the current frame's features attend to themselves and to stored memories.

Batch-first throughout. The memory of one object is laid out as
[S spatial memory frames x HW tokens each][P object-pointer tokens], M = S * HW + P tokens of width
kv_in_dim. Spatial tokens get the same 2-D RoPE as the query grid (repeated per frame); pointer
tokens have no grid position and are not rotated. An optional per-token additive bias on the
cross-attention logits lets callers pad memories (-inf) and down-weight old ones.
"""

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from .rope import apply_rope, axial_rope_rotations
from .two_way_transformer import Attention

ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu, "glu": F.glu}


class RoPEAttention(Attention):
    """Attention with 2-D rotary position encoding of queries and keys.

    Queries are the tokens of a square grid (feat_sizes = (w, h) at the model's native image size;
    other token counts are taken as a square grid, as in SAM 2). With rope_k_repeat the keys may
    hold several grids' worth of tokens, each rotated like the queries.
    """

    def __init__(self, embedding_dim: int, num_heads: int, downsample_rate: int = 1, dropout: float = 0.0,
                 kv_in_dim: int | None = None, rope_theta: float = 10000.0, rope_k_repeat: bool = False,
                 feat_sizes: tuple[int, int] = (64, 64)):
        super().__init__(embedding_dim, num_heads, downsample_rate, dropout, kv_in_dim)
        self.rope_theta = rope_theta
        self.rope_k_repeat = rope_k_repeat
        self.feat_sizes = tuple(feat_sizes)
        self._rotations: dict[tuple, torch.Tensor] = {}  # (tokens, repeats, device) -> rotations, not state

    def rotations(self, n_tokens: int, repeats: int, device: torch.device, pool: int = 1) -> torch.Tensor:
        """Rotations of an n_tokens grid, tiled `repeats` times: (repeats * n_tokens, d/2) complex. With `pool`,
        of that grid's pool x pool cells (a coarse memory): (repeats * n_tokens / pool**2, d/2)."""
        key = (n_tokens, repeats, device, pool)
        if key not in self._rotations:
            with torch.inference_mode(False):  # a normal tensor: the cache serves inference and training alike
                self._rotations[key] = self._make_rotations(n_tokens, repeats, device, pool)
        return self._rotations[key]

    def _make_rotations(self, n_tokens: int, repeats: int, device: torch.device, pool: int) -> torch.Tensor:
        w, h = self.feat_sizes
        if w * h != n_tokens:  # another image size than configured: a square grid
            w = h = math.isqrt(n_tokens)
            assert w * h == n_tokens, f"{n_tokens} query tokens do not form a square grid"
        rot = axial_rope_rotations(w, h, self.internal_dim // self.num_heads, self.rope_theta, device, pool)
        return rot.repeat(repeats, 1)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_k_exclude_rope: int = 0,
                attn_bias: torch.Tensor | None = None) -> torch.Tensor:
        """q (B, Nq, C), k and v (B, Nk, kv_in_dim); the last num_k_exclude_rope keys are not rotated.
        attn_bias (B, Nk) is added to the logits of every head and query. -> (B, Nq, C)."""
        return self.attend(q, *self.project_kv(k, v, q.shape[1], num_k_exclude_rope), attn_bias)

    def project_kv(self, k: torch.Tensor, v: torch.Tensor, grid_tokens: int,
                   num_k_exclude_rope: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values (B, Nk, kv_in_dim) -> projected (B, H, Nk, d); keys rotated as whole
        `grid_tokens`-token grids, but for the last num_k_exclude_rope."""
        k = self.split_heads(self.k_proj(k))  # (B, H, Nk, d)
        v = self.split_heads(self.v_proj(v))  # (B, H, Nk, d)
        n_rot = k.shape[-2] - num_k_exclude_rope
        repeats = n_rot // grid_tokens
        assert repeats * grid_tokens == n_rot and (repeats == 1 or self.rope_k_repeat), \
            f"{n_rot} rotated keys are not a whole number of {grid_tokens}-token grids"
        k_rot = apply_rope(k[:, :, :n_rot], self.rotations(grid_tokens, repeats, k.device))  # (B, H, n_rot, d)
        return torch.cat([k_rot, k[:, :, n_rot:]], dim=2), v  # (B, H, Nk, d) each

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               attn_bias: torch.Tensor | None = None) -> torch.Tensor:
        """q (B, Nq, C) attends to keys and values already projected (B, H, Nk, d) -> (B, Nq, C)."""
        q = self.split_heads(self.q_proj(q))  # (B, H, Nq, d)
        q = apply_rope(q, self.rotations(q.shape[-2], 1, q.device))
        mask = None
        if attn_bias is not None:  # SDPA wants a float mask in the queries' dtype (bf16 under autocast)
            mask = attn_bias[:, None, None, :].to(q.dtype)  # (B, 1, 1, Nk)
        out = F.scaled_dot_product_attention(q, k.to(q.dtype), v.to(q.dtype), attn_mask=mask,
                                             dropout_p=self.dropout_p if self.training else 0.0)
        return self.out_proj(self.merge_heads(out))  # (B, Nq, C)


class MemoryAttentionLayer(nn.Module):
    """Pre-norm block: RoPE self-attention, RoPE cross-attention to the memory, then an FFN.

    The pos_enc_at_* flags say where the sine position encodings are added: to self-attention queries
    and keys (pos_enc_at_attn), to cross-attention queries, to cross-attention keys (the memories').
    """

    def __init__(self, activation: str, cross_attention: RoPEAttention, d_model: int, dim_feedforward: int,
                 dropout: float, pos_enc_at_attn: bool, pos_enc_at_cross_attn_keys: bool,
                 pos_enc_at_cross_attn_queries: bool, self_attention: RoPEAttention):
        super().__init__()
        self.d_model = d_model
        self.dim_feedforward = dim_feedforward
        self.self_attn = self_attention
        self.cross_attn_image = cross_attention
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)  # inside the FFN
        self.dropout1 = nn.Dropout(dropout)  # on each residual branch
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)
        self.activation = ACTIVATIONS[activation]
        self.pos_enc_at_attn = pos_enc_at_attn
        self.pos_enc_at_cross_attn_keys = pos_enc_at_cross_attn_keys
        self.pos_enc_at_cross_attn_queries = pos_enc_at_cross_attn_queries

    def forward(self, x: torch.Tensor, x_pos: torch.Tensor, mem_k: torch.Tensor, mem_v: torch.Tensor,
                attn_bias: torch.Tensor | None = None) -> torch.Tensor:
        """x, x_pos (B, HW, C); mem_k, mem_v (B, H, M, d) from `memory_kv`; attn_bias (B, M) or None -> (B, HW, C)."""
        h = self.norm1(x)
        qk = h + x_pos if self.pos_enc_at_attn else h
        x = x + self.dropout1(self.self_attn(qk, qk, h))

        h = self.norm2(x)
        q = h + x_pos if self.pos_enc_at_cross_attn_queries else h
        x = x + self.dropout2(self.cross_attn_image.attend(q, mem_k, mem_v, attn_bias))

        h = self.norm3(x)
        h = self.linear2(self.dropout(self.activation(self.linear1(h))))
        return x + self.dropout3(h)

    def memory_kv(self, memory: torch.Tensor, memory_pos: torch.Tensor, grid_tokens: int,
                  num_k_exclude_rope: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """This layer's cross-attention keys and values of memories (B, M, Cm) -> (B, H, M, d) each."""
        k = memory + memory_pos if self.pos_enc_at_cross_attn_keys else memory
        return self.cross_attn_image.project_kv(k, memory, grid_tokens, num_k_exclude_rope)


class MemoryAttention(nn.Module):
    """`num_layers` copies of `layer`, then a final LayerNorm."""

    def __init__(self, d_model: int, pos_enc_at_input: bool, layer: MemoryAttentionLayer, num_layers: int,
                 batch_first: bool = True):
        super().__init__()
        # batch_first is the reference's signature; our tensors are always (B, N, C).
        self.d_model = d_model
        self.pos_enc_at_input = pos_enc_at_input
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        self.num_layers = num_layers
        self.norm = nn.LayerNorm(d_model)

    def forward(self, curr: torch.Tensor, curr_pos: torch.Tensor, memory: torch.Tensor, memory_pos: torch.Tensor,
                num_obj_ptr_tokens: int = 0, attn_bias: torch.Tensor | None = None) -> torch.Tensor:
        """curr, curr_pos (B, HW, C): current frame; memory, memory_pos (B, M, Cm) laid out as
        [S frames x HW][num_obj_ptr_tokens pointers]; attn_bias (B, M) additive logit bias or None.
        -> (B, HW, C) features conditioned on the memory."""
        return self.attend(curr, curr_pos, self.memory_kv(memory, memory_pos, curr.shape[1], num_obj_ptr_tokens),
                           attn_bias)

    def memory_kv(self, memory: torch.Tensor, memory_pos: torch.Tensor, grid_tokens: int,
                  num_obj_ptr_tokens: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Every layer's keys and values of memories (B, M, Cm) -> [(B, H, M, d) each] per layer."""
        return [layer.memory_kv(memory, memory_pos, grid_tokens, num_obj_ptr_tokens) for layer in self.layers]

    def attend(self, curr: torch.Tensor, curr_pos: torch.Tensor, kv: list[tuple[torch.Tensor, torch.Tensor]],
               attn_bias: torch.Tensor | None = None) -> torch.Tensor:
        """`forward` with each layer's memory keys and values given, (B, H, M, d) each (a tracker caches
        them per stored memory: see memory_kv.py) -> (B, HW, C)."""
        x = curr + 0.1 * curr_pos if self.pos_enc_at_input else curr  # (B, HW, C)
        for layer, (k, v) in zip(self.layers, kv):
            x = layer(x, curr_pos, k, v, attn_bias)
        return self.norm(x)
