"""Fixed 2-D sine position encodings of feature maps (image features and memories)."""

import math

import torch
from torch import nn


def sine_encoding_2d(height: int, width: int, channels: int, device: torch.device,
                     temperature: float = 10000.0) -> torch.Tensor:
    """Normalised sine/cosine encoding of a (height, width) grid: -> (channels, height, width).

    The first half of the channels encodes y, the second x; within each half sines and cosines
    alternate pairwise.
    """
    half = channels // 2
    eps = 1e-6
    ys = torch.arange(1, height + 1, dtype=torch.float32, device=device) / (height + eps) * 2 * math.pi
    xs = torch.arange(1, width + 1, dtype=torch.float32, device=device) / (width + eps) * 2 * math.pi
    freqs = torch.arange(half, dtype=torch.float32, device=device)
    freqs = temperature ** (2 * (freqs // 2) / half)

    def encode(coords: torch.Tensor) -> torch.Tensor:
        angles = coords[:, None] / freqs  # (L, half)
        return torch.stack((angles[:, 0::2].sin(), angles[:, 1::2].cos()), dim=2).flatten(1)

    pos_y = encode(ys)[:, None, :].expand(height, width, half)  # (H, W, half)
    pos_x = encode(xs)[None, :, :].expand(height, width, half)  # (H, W, half)
    return torch.cat((pos_y, pos_x), dim=2).permute(2, 0, 1).contiguous()  # (C, H, W)


class SinePositionEncoding(nn.Module):
    """Module form of `sine_encoding_2d` for a batch of maps; cached per (H, W, device)."""

    def __init__(self, channels: int, temperature: float = 10000.0):
        super().__init__()
        self.channels = channels
        self.temperature = temperature
        self._cache: dict[tuple, torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        key = (x.shape[-2], x.shape[-1], x.device)
        if key not in self._cache:
            with torch.inference_mode(False):  # a normal tensor: the cache serves inference and training alike
                self._cache[key] = sine_encoding_2d(key[0], key[1], self.channels, x.device, self.temperature)
        pos = self._cache[key].to(x.dtype)
        return pos.unsqueeze(0).expand(x.shape[0], -1, -1, -1)  # (B, C, H, W)
