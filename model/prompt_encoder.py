"""Prompt encoder of the SAM heads: clicks and a coarse mask -> sparse tokens and a dense map.

Points carry a label: -1 padding, 0 negative click, 1 positive click, 2 / 3 top-left / bottom-right
box corner (SAM 2 always passes boxes as two such points, so there is no separate box path).
"""

import math

import torch
from torch import nn

from .layers import LayerNorm2d


class PositionEmbeddingRandom(nn.Module):
    """Random Fourier features of 2-D positions: a fixed Gaussian projection, then sin and cos."""

    def __init__(self, num_pos_feats: int = 64, scale: float | None = None):
        super().__init__()
        scale = scale if scale is not None and scale > 0.0 else 1.0
        # A buffer, not a parameter: it is never trained but it is saved in the checkpoints.
        self.register_buffer("positional_encoding_gaussian_matrix", scale * torch.randn(2, num_pos_feats))

    def encode(self, xy: torch.Tensor) -> torch.Tensor:
        """(..., 2) positions (x, y) in [0, 1] -> (..., 2 * num_pos_feats), sines first then cosines."""
        angles = (2 * xy - 1) @ self.positional_encoding_gaussian_matrix  # (..., F)
        angles = 2 * math.pi * angles
        return torch.cat([angles.sin(), angles.cos()], dim=-1)

    def forward(self, size: tuple[int, int]) -> torch.Tensor:
        """Encoding of the centres of an (h, w) grid of cells: -> (C, h, w)."""
        h, w = size
        device = self.positional_encoding_gaussian_matrix.device
        ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h
        xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w
        xy = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # (h, w, 2), x first
        return self.encode(xy).permute(2, 0, 1)  # (C, h, w)

    def forward_with_coords(self, coords: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """(B, N, 2) pixel positions (x, y) in an image of image_size = (H, W) -> (B, N, C)."""
        h, w = image_size
        xy = coords.float()  # scaled per axis by Python numbers: a (2,) scale tensor would be a host copy
        return self.encode(torch.stack([xy[..., 0] * (1.0 / w), xy[..., 1] * (1.0 / h)], dim=-1))


class PromptEncoder(nn.Module):
    def __init__(self, embed_dim: int, image_embedding_size: tuple[int, int],
                 input_image_size: tuple[int, int], mask_in_chans: int,
                 activation: type[nn.Module] = nn.GELU):
        super().__init__()
        self.embed_dim = embed_dim
        self.input_image_size = input_image_size
        self.image_embedding_size = image_embedding_size
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)

        # One learned offset per label 0..3 (negative, positive, box top-left, box bottom-right).
        self.num_point_embeddings = 4
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)  # label -1 replaces the position entirely

        # A mask prompt is given at 4x the embedding resolution and brought down by two stride-2 convs.
        self.mask_input_size = (4 * image_embedding_size[0], 4 * image_embedding_size[1])
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            activation(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            activation(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def get_dense_pe(self) -> torch.Tensor:
        """Position encoding of every image-embedding cell, as seen by the decoder: (1, C, h, w)."""
        return self.pe_layer(self.image_embedding_size).unsqueeze(0)

    def _embed_points(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(B, N, 2) pixel coords, (B, N) labels -> (B, N + 1, C): SAM appends one padding point."""
        pe = self.pe_layer.forward_with_coords(coords + 0.5, self.input_image_size)  # +0.5: pixel centre
        labels = labels.long()
        table = torch.cat([e.weight for e in self.point_embeddings])  # (4, C)
        known = ((labels >= 0) & (labels <= 3)).unsqueeze(-1)  # (B, N, 1); other labels keep the bare PE
        pe = torch.where(known, pe + table[labels.clamp(0, 3)], pe)  # (B, N, C)
        pad = self.not_a_point_embed.weight
        pe = torch.where((labels == -1).unsqueeze(-1), pad, pe)
        # The padding point stands in for the absent box: it is always appended.
        pad = pad.expand(pe.shape[0], 1, -1)  # (B, 1, C)
        return torch.cat([pe, pad], dim=1)

    def forward(self, points: tuple[torch.Tensor, torch.Tensor] | None,
                masks: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """points = (coords (B, N, 2) in input pixels, labels (B, N)); masks (B, 1, 4h, 4w) logits.

        Returns sparse (B, N + 1, C) and dense (B, C, h, w) embeddings.
        """
        if points is not None:
            sparse = self._embed_points(*points)
            bs = sparse.shape[0]
        else:
            bs = masks.shape[0] if masks is not None else 1
            sparse = self.no_mask_embed.weight.new_empty(bs, 0, self.embed_dim)
        if masks is not None:
            dense = self.mask_downscaling(masks)  # (B, C, h, w)
        else:
            h, w = self.image_embedding_size
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(bs, -1, h, w)  # (B, C, h, w)
        return sparse, dense
