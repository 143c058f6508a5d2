"""Memory encoder: a frame's features fused with its predicted mask into a compact memory (B, 64, h, w)."""

import copy
import math

import torch
from torch import nn

from .layers import LayerNorm2d


class MaskDownSampler(nn.Module):
    """Strided convs shrink the (B, 1, S, S) mask by total_stride; each step trades stride**2 pixels for as
    many channels (1 -> 4 -> 16 -> ...), then a 1x1 conv maps to embed_dim. LayerNorm2d + activation after
    every strided conv."""

    def __init__(self, embed_dim: int = 256, kernel_size: int = 4, stride: int = 4, padding: int = 0,
                 total_stride: int = 16, activation: type[nn.Module] = nn.GELU):
        super().__init__()
        num_layers = round(math.log(total_stride, stride))
        assert stride**num_layers == total_stride, "total_stride must be a power of stride"
        layers, c_in = [], 1
        for _ in range(num_layers):
            c_out = c_in * stride**2
            layers += [nn.Conv2d(c_in, c_out, kernel_size, stride, padding), LayerNorm2d(c_out), activation()]
            c_in = c_out
        layers.append(nn.Conv2d(c_in, embed_dim, kernel_size=1))
        self.encoder = nn.Sequential(*layers)  # indices match the checkpoints' encoder.{i}

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        return self.encoder(mask)  # (B, embed_dim, S/total_stride, S/total_stride)


class CXBlock(nn.Module):
    """ConvNeXt block: depthwise conv, channel LayerNorm, pointwise MLP, layer-scaled residual."""

    def __init__(self, dim: int, kernel_size: int = 7, padding: int = 3, drop_path: float = 0.0,
                 layer_scale_init_value: float = 1e-6, use_dwconv: bool = True):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size, padding=padding, groups=dim if use_dwconv else 1)
        self.norm = LayerNorm2d(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)  # 1x1 convs as linears over channels-last maps
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(layer_scale_init_value * torch.ones(dim)) if layer_scale_init_value > 0 else None
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(self.dwconv(x)).permute(0, 2, 3, 1)  # (B, H, W, C)
        h = self.pwconv2(self.act(self.pwconv1(h)))  # (B, H, W, C)
        if self.gamma is not None:
            h = self.gamma * h
        h = h.permute(0, 3, 1, 2)  # (B, C, H, W)
        if self.training and self.drop_path > 0:  # stochastic depth: drop the whole branch per sample
            keep = h.new_empty(h.shape[0], 1, 1, 1).bernoulli_(1 - self.drop_path)
            h = h * keep / (1 - self.drop_path)
        return x + h


class Fuser(nn.Module):
    """Optional 1x1 input projection, then `num_layers` copies of `layer` (CXBlocks)."""

    def __init__(self, layer: nn.Module, num_layers: int, dim: int | None = None, input_projection: bool = False):
        super().__init__()
        assert dim is not None or not input_projection, "input_projection needs dim"
        self.proj = nn.Conv2d(dim, dim, kernel_size=1) if input_projection else nn.Identity()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        for layer in self.layers:
            x = layer(x)
        return x


class MemoryEncoder(nn.Module):
    """(frame features, mask) -> memory features of width out_dim, and their sine position encoding."""

    def __init__(self, out_dim: int, mask_downsampler: MaskDownSampler, fuser: Fuser, position_encoding: nn.Module,
                 in_dim: int = 256):
        super().__init__()
        self.mask_downsampler = mask_downsampler
        self.pix_feat_proj = nn.Conv2d(in_dim, in_dim, kernel_size=1)
        self.fuser = fuser
        self.position_encoding = position_encoding
        self.out_proj = nn.Conv2d(in_dim, out_dim, kernel_size=1) if out_dim != in_dim else nn.Identity()

    def forward(self, pix_feat: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """pix_feat (B, in_dim, h, w); mask (B, 1, S, S) already scaled by the caller (no sigmoid here),
        S = 16 h. -> features (B, out_dim, h, w), position encoding (B, out_dim, h, w)."""
        x = self.pix_feat_proj(pix_feat) + self.mask_downsampler(mask)  # (B, in_dim, h, w)
        x = self.out_proj(self.fuser(x))  # (B, out_dim, h, w)
        return x, self.position_encoding(x).to(x.dtype)
