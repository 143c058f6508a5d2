"""Hiera: the hierarchical vision transformer trunk of SAM 2's image encoder.

A 7x7 stride-4 convolution embeds the image, then stages of transformer blocks run on (B, H, W, C)
token maps. Most blocks attend inside non-overlapping windows, a few attend globally. The first block
of each later stage max-pools its queries 2x2, halving the map and (usually) doubling channels and
heads. The trunk returns every stage's output, highest resolution first.

Parameter names and shapes are those of the official checkpoints (`image_encoder.trunk.*`).
"""

import itertools

import torch
import torch.nn.functional as F
from torch import nn

from .layers import MLP
from .weight_keys import weights_key


def pool_hw(x: torch.Tensor, stride: tuple[int, int] | None) -> torch.Tensor:
    """Max-pool a (B, H, W, C) map by `stride` (no-op when None)."""
    if stride is None:
        return x
    x = F.max_pool2d(x.permute(0, 3, 1, 2), kernel_size=stride, stride=stride)  # (B, C, H', W')
    return x.permute(0, 2, 3, 1)  # (B, H', W', C)


def window_partition(x: torch.Tensor, size: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """(B, H, W, C) -> (B * nh * nw, size, size, C) windows, zero-padding H and W up to multiples of size.

    Also returns the window grid (nh, nw), which `window_unpartition` needs to put them back.
    """
    B, H, W, C = x.shape
    pad_h, pad_w = -H % size, -W % size
    x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))  # (B, Hp, Wp, C)
    nh, nw = (H + pad_h) // size, (W + pad_w) // size
    x = x.view(B, nh, size, nw, size, C).permute(0, 1, 3, 2, 4, 5)  # (B, nh, nw, size, size, C)
    return x.reshape(-1, size, size, C), (nh, nw)


def window_unpartition(windows: torch.Tensor, grid: tuple[int, int], hw: tuple[int, int]) -> torch.Tensor:
    """Inverse of `window_partition`, for windows of any (possibly pooled) size: -> (B, H, W, C), padding cut."""
    nh, nw = grid
    _, size, _, C = windows.shape
    x = windows.view(-1, nh, nw, size, size, C).permute(0, 1, 3, 2, 4, 5)  # (B, nh, size, nw, size, C)
    x = x.reshape(x.shape[0], nh * size, nw * size, C)  # (B, Hp, Wp, C)
    return x[:, :hw[0], :hw[1]]


class PatchEmbed(nn.Module):
    """Strided convolution from pixels to tokens: (B, 3, S, S) -> (B, S/4, S/4, C)."""

    def __init__(self, kernel_size=(7, 7), stride=(4, 4), padding=(3, 3), in_chans: int = 3,
                 embed_dim: int = 768):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=kernel_size, stride=stride, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)  # (B, H, W, C)


class MultiScaleAttention(nn.Module):
    """Multi-head self-attention over a (N, H, W, C) map whose queries may be pooled (stage shifts)."""

    def __init__(self, dim: int, dim_out: int, num_heads: int, q_stride: tuple[int, int] | None = None):
        super().__init__()
        self.dim, self.dim_out, self.num_heads, self.q_stride = dim, dim_out, num_heads, q_stride
        self.qkv = nn.Linear(dim, 3 * dim_out)
        self.proj = nn.Linear(dim_out, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        N, H, W, _ = x.shape
        q, k, v = self.qkv(x).view(N, H, W, 3, self.dim_out).unbind(3)  # each (N, H, W, C')
        q = pool_hw(q, self.q_stride)  # (N, H', W', C'): fewer queries, so a smaller output map
        Hq, Wq = q.shape[1:3]
        q, k, v = (t.reshape(N, -1, self.num_heads, self.dim_out // self.num_heads).transpose(1, 2)
                   for t in (q, k, v))  # each (N, heads, L, C'/heads)
        x = F.scaled_dot_product_attention(q, k, v)  # (N, heads, H'W', C'/heads)
        x = x.transpose(1, 2).reshape(N, Hq, Wq, self.dim_out)  # (N, H', W', C')
        return self.proj(x)


class MultiScaleBlock(nn.Module):
    """Pre-norm transformer block on (B, H, W, C); windowed when window_size > 0, else global.

    With q_stride it is a stage's first block: queries and the residual are pooled, and the residual is
    projected to the new width when it changes.
    """

    def __init__(self, dim: int, dim_out: int, num_heads: int, mlp_ratio: float = 4.0,
                 q_stride: tuple[int, int] | None = None, window_size: int = 0):
        super().__init__()
        self.dim, self.dim_out, self.q_stride, self.window_size = dim, dim_out, q_stride, window_size
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = MultiScaleAttention(dim, dim_out, num_heads, q_stride)
        self.norm2 = nn.LayerNorm(dim_out, eps=1e-6)
        self.mlp = MLP(dim_out, int(dim_out * mlp_ratio), dim_out, num_layers=2, activation=nn.GELU)
        if dim != dim_out:
            self.proj = nn.Linear(dim, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        # the residual must match the attention output: pooled, and projected from the *normed* input
        shortcut = pool_hw(self.proj(h), self.q_stride) if self.dim != self.dim_out else x  # (B, H', W', C')
        if self.window_size > 0:
            h, grid = window_partition(h, self.window_size)  # (B*nW, ws, ws, C)
            h = self.attn(h)  # (B*nW, ws', ws', C'): pooling shrinks each window, not the grid
            h = window_unpartition(h, grid, shortcut.shape[1:3])  # (B, H', W', C')
        else:
            h = self.attn(h)  # (B, H', W', C')
        x = shortcut + h
        return x + self.mlp(self.norm2(x))


class Hiera(nn.Module):
    """The trunk: (B, 3, S, S) images -> one (B, C_i, S/2^(i+2), S/2^(i+2)) map per stage i, finest first.

    Arguments (and their defaults) are those of the official configs; drop_path_rate is accepted for
    config compatibility and ignored (inference only).
    """

    def __init__(self, embed_dim: int = 96, num_heads: int = 1, drop_path_rate: float = 0.0, q_pool: int = 3,
                 q_stride: tuple[int, int] = (2, 2), stages: tuple[int, ...] = (2, 3, 16, 3),
                 dim_mul: float = 2.0, head_mul: float = 2.0,
                 window_pos_embed_bkg_spatial_size: tuple[int, int] = (14, 14),
                 window_spec: tuple[int, ...] = (8, 4, 14, 7), global_att_blocks: tuple[int, ...] = (12, 16, 20),
                 return_interm_layers: bool = True):
        super().__init__()
        assert len(stages) == len(window_spec), "one window size per stage"
        assert 0 <= q_pool < len(stages), "q_pool counts stage shifts"
        self.window_spec = tuple(window_spec)
        self.global_att_blocks = tuple(global_att_blocks or ())
        self.return_interm_layers = return_interm_layers
        self.stage_ends = [n - 1 for n in itertools.accumulate(stages)]  # index of each stage's last block
        q_pool_blocks = [e + 1 for e in self.stage_ends[:-1]][:q_pool]

        self.patch_embed = PatchEmbed(embed_dim=embed_dim)
        # Absolute position embedding: a coarse "background" interpolated to the token map, plus one
        # window-sized pattern tiled across it (https://arxiv.org/abs/2311.05613).
        self.pos_embed = nn.Parameter(torch.zeros(1, embed_dim, *window_pos_embed_bkg_spatial_size))
        self.pos_embed_window = nn.Parameter(torch.zeros(1, embed_dim, window_spec[0], window_spec[0]))

        self.blocks = nn.ModuleList()
        dim, stage = embed_dim, 0
        for i in range(sum(stages)):
            # A stage's first block still windows at the previous stage's size: it pools as it attends.
            window = 0 if i in self.global_att_blocks else window_spec[stage]
            dim_out = dim
            if i - 1 in self.stage_ends:
                dim_out, num_heads, stage = int(dim * dim_mul), int(num_heads * head_mul), stage + 1
            stride = tuple(q_stride) if i in q_pool_blocks else None
            self.blocks.append(MultiScaleBlock(dim, dim_out, num_heads, q_stride=stride, window_size=window))
            dim = dim_out

        outs = self.stage_ends if return_interm_layers else self.stage_ends[-1:]
        self.channel_list = [self.blocks[i].dim_out for i in reversed(outs)]  # lowest resolution first
        self._pos_cache: tuple = (None, None)  # (key, embedding) of `pos_embed_at`, not state

    def pos_embed_at(self, h: int, w: int) -> torch.Tensor:
        """Position embedding of an (h, w) token map: (1, h, w, C). h and w must be multiples of the window.

        Outside training it is kept until the weights change (see weight_keys): a bicubic resize every frame
        costs ~1.5% of a CPU frame."""
        if (torch.is_grad_enabled() and self.pos_embed.requires_grad) or torch.compiler.is_compiling():
            return self._pos_embed_at(h, w)
        key = (h, w, weights_key([self], (self.pos_embed, self.pos_embed_window)))
        if self._pos_cache[0] != key:
            self._pos_cache = (key, self._pos_embed_at(h, w).contiguous())
        return self._pos_cache[1]

    def _pos_embed_at(self, h: int, w: int) -> torch.Tensor:
        pos = F.interpolate(self.pos_embed, size=(h, w), mode="bicubic", align_corners=False)  # (1, C, h, w)
        ws = self.pos_embed_window.shape[-1]
        pos = pos + self.pos_embed_window.tile(1, 1, h // ws, w // ws)  # (1, C, h, w)
        return pos.permute(0, 2, 3, 1)  # (1, h, w, C)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = self.patch_embed(images)  # (B, H, W, C)
        x = x + self.pos_embed_at(x.shape[1], x.shape[2])
        outputs = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i == self.stage_ends[-1] or (self.return_interm_layers and i in self.stage_ends):
                outputs.append(x.permute(0, 3, 1, 2))  # (B, C, H, W)
        return outputs
