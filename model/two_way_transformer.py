"""The mask decoder's transformer: prompt tokens and image tokens attend to each other, both ways."""

import torch
import torch.nn.functional as F
from torch import nn

from .layers import MLP


class Attention(nn.Module):
    """Multi-head attention whose projections may shrink the width by `downsample_rate` (cheaper
    cross-attention over the many image tokens)."""

    def __init__(self, embedding_dim: int, num_heads: int, downsample_rate: int = 1,
                 dropout: float = 0.0, kv_in_dim: int | None = None):
        super().__init__()
        self.embedding_dim = embedding_dim
        self.kv_in_dim = kv_in_dim if kv_in_dim is not None else embedding_dim
        self.internal_dim = embedding_dim // downsample_rate
        self.num_heads = num_heads
        assert self.internal_dim % num_heads == 0, "num_heads must divide embedding_dim // downsample_rate"
        self.q_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.k_proj = nn.Linear(self.kv_in_dim, self.internal_dim)
        self.v_proj = nn.Linear(self.kv_in_dim, self.internal_dim)
        self.out_proj = nn.Linear(self.internal_dim, embedding_dim)
        self.dropout_p = dropout

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        B, N, D = x.shape
        return x.reshape(B, N, self.num_heads, D // self.num_heads).transpose(1, 2)  # (B, H, N, D/H)

    def merge_heads(self, x: torch.Tensor) -> torch.Tensor:
        B, H, N, d = x.shape
        return x.transpose(1, 2).reshape(B, N, H * d)  # (B, N, D)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q = self.split_heads(self.q_proj(q))  # (B, H, Nq, d)
        k = self.split_heads(self.k_proj(k))  # (B, H, Nk, d)
        v = self.split_heads(self.v_proj(v))  # (B, H, Nk, d)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout_p if self.training else 0.0)
        return self.out_proj(self.merge_heads(out))  # (B, Nq, C)


class TwoWayAttentionBlock(nn.Module):
    """Tokens self-attend, tokens read the image, token MLP, then the image reads the tokens.
    Post-norm throughout; position encodings are re-added to queries and keys at every attention."""

    def __init__(self, embedding_dim: int, num_heads: int, mlp_dim: int = 2048,
                 activation: type[nn.Module] = nn.ReLU, attention_downsample_rate: int = 2,
                 skip_first_layer_pe: bool = False):
        super().__init__()
        C = embedding_dim
        self.self_attn = Attention(C, num_heads)
        self.norm1 = nn.LayerNorm(C)
        self.cross_attn_token_to_image = Attention(C, num_heads, downsample_rate=attention_downsample_rate)
        self.norm2 = nn.LayerNorm(C)
        self.mlp = MLP(C, mlp_dim, C, num_layers=2, activation=activation)
        self.norm3 = nn.LayerNorm(C)
        self.norm4 = nn.LayerNorm(C)
        self.cross_attn_image_to_token = Attention(C, num_heads, downsample_rate=attention_downsample_rate)
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, query_pe: torch.Tensor,
                key_pe: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.skip_first_layer_pe:
            # First block: the tokens are their own position encoding, and (as in SAM) the
            # self-attention output replaces them -- no residual.
            queries = self.norm1(self.self_attn(queries, queries, queries))
        else:
            q = queries + query_pe
            queries = self.norm1(queries + self.self_attn(q, q, queries))
        k = keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(queries + query_pe, k, keys))
        queries = self.norm3(queries + self.mlp(queries))
        q = queries + query_pe
        keys = self.norm4(keys + self.cross_attn_image_to_token(k, q, queries))
        return queries, keys


class TwoWayTransformer(nn.Module):
    def __init__(self, depth: int, embedding_dim: int, num_heads: int, mlp_dim: int,
                 activation: type[nn.Module] = nn.ReLU, attention_downsample_rate: int = 2):
        super().__init__()
        self.depth = depth
        self.embedding_dim = embedding_dim
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(embedding_dim, num_heads, mlp_dim, activation, attention_downsample_rate,
                                 skip_first_layer_pe=(i == 0))
            for i in range(depth))
        self.final_attn_token_to_image = Attention(embedding_dim, num_heads,
                                                   downsample_rate=attention_downsample_rate)
        self.norm_final_attn = nn.LayerNorm(embedding_dim)

    def forward(self, image_embedding: torch.Tensor, image_pe: torch.Tensor,
                point_embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """image_embedding (B, C, h, w), image_pe (B or 1, C, h, w), point_embedding (B, N, C)
        -> tokens (B, N, C), image tokens (B, hw, C)."""
        keys = image_embedding.flatten(2).transpose(1, 2)  # (B, hw, C)
        key_pe = image_pe.flatten(2).transpose(1, 2)  # (B or 1, hw, C)
        queries = point_embedding  # the initial tokens double as their own position encoding
        for layer in self.layers:
            queries, keys = layer(queries, keys, query_pe=point_embedding, key_pe=key_pe)
        attn = self.final_attn_token_to_image(queries + point_embedding, keys + key_pe, keys)
        queries = self.norm_final_attn(queries + attn)
        return queries, keys
