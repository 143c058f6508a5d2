"""SAM2Model: the network's modules under the official checkpoints' names, and its per-frame operations.

State-free: every method maps tensors to tensors. Memory bookkeeping lives in memory_bank.py and the
frame loop in tracker.py.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .hiera import Hiera
from .image_encoder import FpnNeck, ImageEncoder
from .layers import MLP, resize, sine_encoding_1d
from .mask_decoder import MaskDecoder
from .memory_attention import MemoryAttention, MemoryAttentionLayer, RoPEAttention
from .memory_encoder import CXBlock, Fuser, MaskDownSampler, MemoryEncoder
from .position_encoding import SinePositionEncoding
from .prompt_encoder import PromptEncoder
from .transfer import to_device
from .two_way_transformer import TwoWayTransformer

NO_OBJECT_LOGIT = -1024.0  # mask logits of an object predicted absent
PIXEL_MEAN = (0.485, 0.456, 0.406)
PIXEL_STD = (0.229, 0.224, 0.225)


@dataclass
class FrameFeatures:
    """Image encoder output for a batch of frames."""

    feat: torch.Tensor  # (B, C, h, w) lowest-resolution features
    pos: torch.Tensor  # (B, C, h, w) their position encoding
    high_res: list[torch.Tensor]  # [(B, C/8, 4h, 4w), (B, C/4, 2h, 2w)], already projected for the decoder

    def select(self, index: torch.Tensor) -> "FrameFeatures":
        """Features per object: row i is frame index[i]."""
        return FrameFeatures(self.feat[index], self.pos[index], [x[index] for x in self.high_res])


@dataclass
class Decoded:
    """Decoder output for N objects (the best of the candidate masks when several were asked for)."""

    low_res: torch.Tensor  # (N, 1, S/4, S/4) mask logits
    high_res: torch.Tensor  # (N, 1, S, S) mask logits
    iou: torch.Tensor  # (N,) predicted IoU of the chosen mask
    obj_ptr: torch.Tensor  # (N, C) object pointer
    object_score_logits: torch.Tensor  # (N, 1) > 0: the object is present
    # Every candidate (training supervises all of them: SAM's min-over-candidates loss); None where not kept.
    candidates: torch.Tensor | None = None  # (N, M, S/4, S/4) mask logits, M = 3 when multimask, else 1
    candidate_ious: torch.Tensor | None = None  # (N, M) their predicted IoUs


def _build_memory_attention(cfg: ModelConfig) -> MemoryAttention:
    fs = cfg.feat_size
    rope = dict(rope_theta=10000.0, feat_sizes=(fs, fs), embedding_dim=cfg.d_model, num_heads=1,
                downsample_rate=1, dropout=0.1)
    layer = MemoryAttentionLayer(
        activation="relu", cross_attention=RoPEAttention(**rope, rope_k_repeat=True, kv_in_dim=cfg.mem_dim),
        d_model=cfg.d_model, dim_feedforward=cfg.memory_attention_ffn, dropout=0.1, pos_enc_at_attn=False,
        pos_enc_at_cross_attn_keys=True, pos_enc_at_cross_attn_queries=False, self_attention=RoPEAttention(**rope))
    return MemoryAttention(d_model=cfg.d_model, pos_enc_at_input=True, layer=layer,
                           num_layers=cfg.memory_attention_layers)


def _build_memory_encoder(cfg: ModelConfig) -> MemoryEncoder:
    fuser = Fuser(CXBlock(dim=cfg.d_model, kernel_size=7, padding=3, layer_scale_init_value=1e-6,
                          use_dwconv=True), num_layers=2)
    downsampler = MaskDownSampler(embed_dim=cfg.d_model, kernel_size=3, stride=2, padding=1)
    return MemoryEncoder(out_dim=cfg.mem_dim, mask_downsampler=downsampler, fuser=fuser,
                         position_encoding=SinePositionEncoding(cfg.mem_dim), in_dim=cfg.d_model)


class SAM2Model(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        C, Cm, t = cfg.d_model, cfg.mem_dim, cfg.trunk
        trunk = Hiera(embed_dim=t.embed_dim, num_heads=t.num_heads, stages=t.stages,
                      global_att_blocks=t.global_att_blocks, window_spec=t.window_spec,
                      window_pos_embed_bkg_spatial_size=t.window_pos_embed_bkg_spatial_size)
        neck = FpnNeck(d_model=C, backbone_channel_list=list(t.channel_list), fpn_top_down_levels=[2, 3],
                       fpn_interp_model="nearest")
        self.image_encoder = ImageEncoder(trunk=trunk, neck=neck, scalp=1)
        self.memory_attention = _build_memory_attention(cfg)
        self.memory_encoder = _build_memory_encoder(cfg)
        emb = cfg.image_size // cfg.backbone_stride
        self.sam_prompt_encoder = PromptEncoder(embed_dim=C, image_embedding_size=(emb, emb),
                                                input_image_size=(cfg.image_size, cfg.image_size), mask_in_chans=16)
        self.sam_mask_decoder = MaskDecoder(
            num_multimask_outputs=3, transformer=TwoWayTransformer(depth=2, embedding_dim=C,
                                                                  mlp_dim=cfg.decoder_mlp_dim, num_heads=8),
            transformer_dim=C, iou_head_depth=3, iou_head_hidden_dim=256, use_high_res_features=True,
            iou_prediction_use_sigmoid=True, pred_obj_scores=True, pred_obj_scores_mlp=True,
            use_multimask_token_for_obj_ptr=True,
            dynamic_multimask_via_stability=cfg.dynamic_multimask_via_stability,
            dynamic_multimask_stability_delta=cfg.dynamic_multimask_stability_delta,
            dynamic_multimask_stability_thresh=cfg.dynamic_multimask_stability_thresh)
        # Learned embeddings of the memory pathway (names as in the official checkpoints).
        self.maskmem_tpos_enc = nn.Parameter(torch.zeros(cfg.num_maskmem, 1, 1, Cm))  # temporal slot encodings
        self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, C))  # added to features of prompted frames
        self.no_mem_pos_enc = nn.Parameter(torch.zeros(1, 1, C))
        self.no_obj_ptr = nn.Parameter(torch.zeros(1, C))  # the pointer of an absent object
        self.mask_downsample = nn.Conv2d(1, 1, kernel_size=4, stride=4)  # mask prompt -> decoder mask input
        self.obj_ptr_proj = MLP(C, C, C, 3)  # decoder output token -> object pointer
        if cfg.sam21:
            self.no_obj_embed_spatial = nn.Parameter(torch.zeros(1, Cm))  # added to memories of absent objects
            self.obj_ptr_tpos_proj = nn.Linear(C, Cm)  # pointer time encoding, kept apart from spatial ones
        for p in (self.maskmem_tpos_enc, self.no_mem_embed, self.no_mem_pos_enc, self.no_obj_ptr):
            nn.init.trunc_normal_(p, std=0.02)
        if cfg.sam21:
            nn.init.trunc_normal_(self.no_obj_embed_spatial, std=0.02)
        self.register_buffer("pixel_mean", torch.tensor(PIXEL_MEAN).view(3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(PIXEL_STD).view(3, 1, 1), persistent=False)

    # ---- frames -------------------------------------------------------------------------------------
    def preprocess(self, frame: torch.Tensor) -> torch.Tensor:
        """uint8 (H, W, 3) -> normalised float (3, S, S). Resized like PIL's bicubic, rounded to uint8 levels."""
        S = self.cfg.image_size
        x = to_device(frame, self.pixel_mean.device).permute(2, 0, 1).float()  # (3, H, W), uint8 on the way
        if x.shape[-2:] != (S, S):
            x = F.interpolate(x[None], size=(S, S), mode="bicubic", align_corners=False, antialias=True)[0]
            x = x.round().clamp(0, 255)
        return (x / 255.0 - self.pixel_mean) / self.pixel_std

    def encode_frames(self, images: torch.Tensor) -> FrameFeatures:
        """(B, 3, S, S) normalised images -> features at strides 4, 8, 16."""
        features, pos = self.image_encoder(images)
        dec = self.sam_mask_decoder
        high_res = [dec.conv_s0(features[0]), dec.conv_s1(features[1])]
        return FrameFeatures(features[-1], pos[-1], high_res)

    # ---- decoding -----------------------------------------------------------------------------------
    def decode(self, feat: torch.Tensor, high_res: list[torch.Tensor], points: torch.Tensor | None,
               labels: torch.Tensor | None, mask_input: torch.Tensor | None, multimask: bool) -> Decoded:
        """Prompt encoder + mask decoder for N objects; feat (N, C, h, w) already fused with memory."""
        N = feat.shape[0]
        if points is None:  # an empty prompt is a single padding point
            points = feat.new_zeros(N, 1, 2, dtype=torch.float32)
            labels = -torch.ones(N, 1, dtype=torch.int32, device=feat.device)
        if mask_input is not None and mask_input.shape[-2:] != self.sam_prompt_encoder.mask_input_size:
            mask_input = resize(mask_input.float(), self.sam_prompt_encoder.mask_input_size, antialias=True)
        sparse, dense = self.sam_prompt_encoder(points=(points, labels), masks=mask_input)
        masks, ious, tokens, obj_logits = self.sam_mask_decoder(
            image_embeddings=feat, image_pe=self.sam_prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=multimask,
            high_res_features=high_res)
        present = obj_logits > 0  # (N, 1)
        masks = torch.where(present[:, :, None, None], masks, NO_OBJECT_LOGIT).float()  # (N, M, S/4, S/4)
        best = ious.argmax(dim=-1) if multimask else torch.zeros(N, dtype=torch.long, device=feat.device)
        rows = torch.arange(N, device=feat.device)
        low_res = masks[rows, best].unsqueeze(1)  # (N, 1, S/4, S/4)
        token = tokens[rows, best] if multimask and tokens.shape[1] > 1 else tokens[:, 0]  # (N, C)
        obj_ptr = self._absent_to_no_obj_ptr(self.obj_ptr_proj(token), present.float())
        return Decoded(low_res, self.upsample(low_res), ious[rows, best], obj_ptr, obj_logits, masks, ious.float())

    def decode_mask_prompt(self, feat: torch.Tensor, high_res: list[torch.Tensor], mask: torch.Tensor) -> Decoded:
        """A mask prompt is taken as the output itself; the decoder only supplies its object pointer."""
        high = mask.float() * 20.0 - 10.0  # (N, 1, S, S) logits of +-10
        S4 = self.cfg.image_size // 4
        low = F.interpolate(high, size=(S4, S4), mode="bilinear", align_corners=False, antialias=True)
        ptr = self.decode(feat, high_res, None, None, self.mask_downsample(mask.float()), False).obj_ptr
        present = mask.flatten(1).any(dim=1, keepdim=True).float()  # (N, 1)
        obj_ptr = self._absent_to_no_obj_ptr(ptr, present)
        iou = torch.ones_like(present[:, 0])
        return Decoded(low, high, iou, obj_ptr, present * 20.0 - 10.0, low, iou[:, None])

    def _absent_to_no_obj_ptr(self, ptr: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        return present * ptr + (1 - present) * self.no_obj_ptr

    def upsample(self, low_res: torch.Tensor) -> torch.Tensor:
        S = self.cfg.image_size
        return F.interpolate(low_res, size=(S, S), mode="bilinear", align_corners=False)

    # ---- memory -------------------------------------------------------------------------------------
    def fuse_with_memory(self, feat: torch.Tensor, pos: torch.Tensor, memory: torch.Tensor,
                         memory_pos: torch.Tensor, num_ptr_tokens: int, bias: torch.Tensor | None) -> torch.Tensor:
        """Memory attention: (N, C, h, w) features attend to (N, M, Cm) memories -> (N, C, h, w)."""
        grid_tokens = feat.shape[-2] * feat.shape[-1]
        kv = self.memory_attention.memory_kv(memory, memory_pos, grid_tokens, num_ptr_tokens)
        return self.fuse_with_memory_kv(feat, pos, kv, bias)

    def fuse_with_memory_kv(self, feat: torch.Tensor, pos: torch.Tensor,
                            kv: list[tuple[torch.Tensor, torch.Tensor]], bias: torch.Tensor | None) -> torch.Tensor:
        """`fuse_with_memory` from the memories' keys and values per layer, (N, H, M, d) each -> (N, C, h, w)."""
        N, C, h, w = feat.shape
        curr = feat.flatten(2).transpose(1, 2)  # (N, hw, C)
        curr_pos = pos.flatten(2).transpose(1, 2)  # (N, hw, C)
        out = self.memory_attention.attend(curr, curr_pos, kv, bias)  # (N, hw, C)
        return out.transpose(1, 2).reshape(N, C, h, w)

    def without_memory(self, feat: torch.Tensor) -> torch.Tensor:
        """Features of a prompted frame: no memory to attend to, only the learned no-memory embedding."""
        return feat + self.no_mem_embed.view(1, -1, 1, 1)

    def encode_memory(self, feat: torch.Tensor, high_res_mask: torch.Tensor, object_score_logits: torch.Tensor,
                      binarize: torch.Tensor) -> torch.Tensor:
        """Memory of N objects: raw features + mask logits (N, 1, S, S) -> (N, Cm, h, w)."""
        prob = torch.where(binarize[:, None, None, None], (high_res_mask > 0).float(), torch.sigmoid(high_res_mask))
        mask_in = prob * self.cfg.sigmoid_scale_for_mem_enc + self.cfg.sigmoid_bias_for_mem_enc
        mem, _ = self.memory_encoder(feat, mask_in)
        if self.cfg.sam21:  # mark memories of frames where the object is predicted absent
            absent = (object_score_logits <= 0).float()[:, :, None, None]  # (N, 1, 1, 1)
            mem = mem + absent * self.no_obj_embed_spatial.view(1, -1, 1, 1)
        return mem

    def memory_pos(self, device: torch.device) -> torch.Tensor:
        """Spatial position encoding of one memory frame: (hw, Cm)."""
        fs = self.cfg.feat_size
        probe = torch.zeros(1, self.cfg.mem_dim, fs, fs, device=device)
        return self.memory_encoder.position_encoding(probe)[0].flatten(1).T  # (hw, Cm)

    def pointer_pos(self, offsets: torch.Tensor) -> torch.Tensor:
        """Temporal encoding of object pointers `offsets` frames away: (K,) -> (K, Cm)."""
        if not self.cfg.sam21:
            return offsets.new_zeros(offsets.shape[0], self.cfg.mem_dim, dtype=torch.float32)
        t_max = self.cfg.max_obj_ptrs - 1
        return self.obj_ptr_tpos_proj(sine_encoding_1d(offsets.float() / t_max, self.cfg.d_model))
