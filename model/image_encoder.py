"""SAM 2's image encoder: the Hiera trunk, an FPN neck, and the scalp that drops the coarsest levels.

`ImageEncoder(images)` maps normalised (B, 3, S, S) images to `(features, pos)`, two lists of
(B, d_model, h, w) maps, highest resolution first (strides 4, 8, 16 for the official models).

Parameter names and shapes are those of the official checkpoints (`image_encoder.*`).
"""

import torch
import torch.nn.functional as F
from torch import nn

from .config import HieraConfig
from .hiera import Hiera
from .position_encoding import SinePositionEncoding


class Lateral(nn.Module):
    """A 1x1 projection of one trunk level to d_model (a module of its own for the `convs.{i}.conv` names)."""

    def __init__(self, in_dim: int, out_dim: int, kernel_size: int = 1, stride: int = 1, padding: int = 0):
        super().__init__()
        self.conv = nn.Conv2d(in_dim, out_dim, kernel_size=kernel_size, stride=stride, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv
        if c.kernel_size != (1, 1) or c.stride != (1, 1) or c.padding != (0, 0):
            return c(x)
        # A 1x1 convolution is a matmul over channels: as one, 4x faster under bf16 on CPU (oneDNN's bf16 conv
        # path reorders the stride-4 map), the same in float32; the output stays channels-last in memory.
        y = F.linear(x.permute(0, 2, 3, 1), c.weight.flatten(1), c.bias)  # (B, H, W, out)
        return y.permute(0, 3, 1, 2)  # (B, out, H, W)


class FpnNeck(nn.Module):
    """Feature pyramid without output convs: lateral projections, plus top-down upsampled features on
    `fpn_top_down_levels` only, and a sine position encoding per level.

    `backbone_channel_list` is the trunk's channels lowest resolution first, so `convs[0]` projects the
    coarsest level (as in the checkpoints). Levels are numbered highest resolution first (level 0 = stride 4).
    """

    def __init__(self, d_model: int, backbone_channel_list: list[int], kernel_size: int = 1, stride: int = 1,
                 padding: int = 0, fpn_interp_model: str = "bilinear", fuse_type: str = "sum",
                 fpn_top_down_levels: list[int] | None = None, position_encoding: nn.Module | None = None):
        super().__init__()
        assert fuse_type in ("sum", "avg")
        self.d_model = d_model
        self.backbone_channel_list = list(backbone_channel_list)
        self.convs = nn.ModuleList(Lateral(c, d_model, kernel_size, stride, padding)
                                   for c in self.backbone_channel_list)
        self.fpn_interp_model = fpn_interp_model
        self.fuse_type = fuse_type
        levels = len(backbone_channel_list)
        self.fpn_top_down_levels = list(range(levels) if fpn_top_down_levels is None else fpn_top_down_levels)
        self.position_encoding = SinePositionEncoding(d_model) if position_encoding is None else position_encoding

    def forward(self, xs: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """xs: trunk outputs highest resolution first -> (features, pos), both highest resolution first."""
        n = len(xs)
        assert n == len(self.convs)
        out: list[torch.Tensor] = [None] * n
        coarser = None  # the output of the level below in resolution, walking from the coarsest up
        for i in reversed(range(n)):
            x = self.convs[n - 1 - i](xs[i])  # (B, d_model, h_i, w_i)
            if coarser is not None and i in self.fpn_top_down_levels:
                # upsampled in float32, as the official model does: under autocast this level's sum is float32
                up = F.interpolate(coarser.float(), scale_factor=2.0, mode=self.fpn_interp_model,
                                   align_corners=None if self.fpn_interp_model == "nearest" else False)
                x = x + up
                if self.fuse_type == "avg":
                    x = x / 2
            out[i] = coarser = x
        pos = [self.position_encoding(x) for x in out]  # each (B, d_model, h_i, w_i), in x's dtype
        return out, pos


class ImageEncoder(nn.Module):
    """Trunk + neck; `scalp` lowest-resolution levels are computed (they feed the top-down path) but dropped."""

    def __init__(self, trunk: nn.Module, neck: nn.Module, scalp: int = 0):
        super().__init__()
        assert list(trunk.channel_list) == list(neck.backbone_channel_list), (
            f"trunk channels {trunk.channel_list} do not match neck channels {neck.backbone_channel_list}")
        self.trunk = trunk
        self.neck = neck
        self.scalp = scalp

    def forward(self, images: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(B, 3, S, S) normalised images -> (features, pos): lists of (B, d_model, h, w), finest first."""
        features, pos = self.neck(self.trunk(images))
        keep = len(features) - self.scalp
        return features[:keep], pos[:keep]


def build_image_encoder(trunk: HieraConfig | None = None, d_model: int = 256, scalp: int = 1) -> ImageEncoder:
    """The image encoder of SAM 2 / 2.1 (a preset's `cfg.trunk`, `cfg.d_model`): nearest-neighbour top-down
    features on the two coarsest levels only, coarsest level dropped."""
    t = trunk or HieraConfig()
    hiera = Hiera(embed_dim=t.embed_dim, num_heads=t.num_heads, stages=t.stages,
                  global_att_blocks=t.global_att_blocks, window_spec=t.window_spec,
                  window_pos_embed_bkg_spatial_size=t.window_pos_embed_bkg_spatial_size)
    neck = FpnNeck(d_model=d_model, backbone_channel_list=hiera.channel_list, fpn_top_down_levels=[2, 3],
                   fpn_interp_model="nearest")
    return ImageEncoder(hiera, neck, scalp=scalp)
