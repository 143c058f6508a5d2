"""Model configuration: frozen dataclasses and the named presets (eight official models + ours)."""

from dataclasses import dataclass, field, replace

from .errors import UnknownPresetError


@dataclass(frozen=True)
class HieraConfig:
    embed_dim: int = 96  # channels of the first stage (doubled at each stage shift)
    num_heads: int = 1  # heads of the first stage (doubled at each stage shift)
    stages: tuple[int, ...] = (1, 2, 7, 2)  # blocks per stage
    global_att_blocks: tuple[int, ...] = (5, 7, 9)  # blocks that attend globally instead of in windows
    window_pos_embed_bkg_spatial_size: tuple[int, int] = (7, 7)  # size of the interpolated background pos-embed
    window_spec: tuple[int, ...] = (8, 4, 14, 7)  # attention window per stage

    @property
    def channel_list(self) -> tuple[int, ...]:
        """Output channels per stage, lowest resolution first (the FPN neck's order)."""
        return tuple(self.embed_dim * 2**i for i in reversed(range(len(self.stages))))


@dataclass(frozen=True)
class ModelConfig:
    name: str  # preset name
    trunk: HieraConfig = field(default_factory=HieraConfig)  # the Hiera image trunk
    image_size: int = 1024  # square input resolution of the model
    d_model: int = 256  # width of the FPN neck, memory attention and SAM heads
    mem_dim: int = 64  # width of a stored memory token
    num_maskmem: int = 7  # memories with a temporal encoding: 1 conditioning slot + 6 recent frames
    memory_attention_layers: int = 4  # layers of memory attention
    memory_attention_ffn: int = 2048  # FFN width of memory attention
    decoder_mlp_dim: int = 2048  # FFN width of the two-way transformer in the mask decoder
    max_obj_ptrs: int = 16  # object pointers attended to (conditioning + recent frames)
    sam21: bool = True  # SAM 2.1 differences: no-object spatial embedding, signed projected pointer time encoding
    sigmoid_scale_for_mem_enc: float = 20.0  # mask logits -> memory encoder input: sigmoid * scale + bias
    sigmoid_bias_for_mem_enc: float = -10.0
    binarize_mask_from_pts_for_mem_enc: bool = True  # prompted frames are stored exactly as the user saw them
    multimask_max_pt_num: int = 1  # clicks up to this count get 3 candidate masks
    # Tracked frames (no clicks) get 3 candidates and keep the one with the best predicted IoU (SAM 2.1). Off for
    # our small model: trained from scratch, the min-over-candidates loss lets its candidates cover the scene's
    # objects whatever the memory says, and it learns to ignore the memory.
    multimask_for_tracking: bool = True
    dynamic_multimask_via_stability: bool = True  # fall back to the best multimask output when unstable
    dynamic_multimask_stability_delta: float = 0.05
    dynamic_multimask_stability_thresh: float = 0.98
    fill_hole_area: int = 8  # fill background holes up to this area (low-res pixels) in output masks; 0 = off
    # Automatic mask generation's defaults (predicted IoU above, stability at least, stability offset): SAM 2's.
    auto_mask_thresholds: tuple[float, float, float] = (0.8, 0.95, 1.0)

    @property
    def backbone_stride(self) -> int:
        return 16

    @property
    def feat_size(self) -> int:
        """Side of the lowest-resolution feature map (the memory's resolution)."""
        return self.image_size // self.backbone_stride


_TINY = HieraConfig(96, 1, (1, 2, 7, 2), (5, 7, 9), (7, 7))
_SMALL = HieraConfig(96, 1, (1, 2, 11, 2), (7, 10, 13), (7, 7))
_BASE_PLUS = HieraConfig(112, 2, (2, 3, 16, 3), (12, 16, 20), (14, 14))
_LARGE = HieraConfig(144, 2, (2, 6, 36, 4), (23, 33, 43), (7, 7), (8, 4, 16, 8))

PRESETS: dict[str, ModelConfig] = {}
for _size, _trunk in (("tiny", _TINY), ("small", _SMALL), ("base-plus", _BASE_PLUS), ("large", _LARGE)):
    PRESETS[f"sam2-{_size}"] = ModelConfig(f"sam2-{_size}", _trunk, sam21=False)
    PRESETS[f"sam2.1-{_size}"] = ModelConfig(f"sam2.1-{_size}", _trunk, sam21=True)

# Our own small model: 3.1M parameters at 128 px (the size it was trained at on a 2-core CPU), trained on
# synthetic videos; its weights ship in model/weights/ (MODEL_CARD.md).
PRESETS["synthetic-tiny"] = ModelConfig(
    "synthetic-tiny", HieraConfig(32, 1, (1, 1, 2, 1), (2, 3, 4), (4, 4), (8, 4, 4, 2)),
    image_size=128, d_model=128, mem_dim=32, memory_attention_layers=2, memory_attention_ffn=512,
    decoder_mlp_dim=512, multimask_max_pt_num=0, multimask_for_tracking=False, dynamic_multimask_via_stability=False,
    # Its IoU head reads low and its logits are weak (median foreground ~1-2.6), so at SAM 2's thresholds it
    # finds no object; these were chosen on 8 validation videos (MODEL_CARD.md, "Automatic masks").
    auto_mask_thresholds=(0.6, 0.8, 0.4),
)


def get_config(preset: str, image_size: int | None = None) -> ModelConfig:
    """The preset's config, optionally at another (multiple of 16) image size."""
    if preset not in PRESETS:
        raise UnknownPresetError(preset, sorted(PRESETS))
    config = PRESETS[preset]
    if image_size is not None:
        if image_size <= 0 or image_size % 32 != 0:
            raise ValueError(f"image_size must be a positive multiple of 32, got {image_size}")
        config = replace(config, image_size=image_size)
    return config
