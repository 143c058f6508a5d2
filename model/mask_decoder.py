"""Mask decoder of the SAM heads: image embedding + prompt tokens -> mask logits, IoU and object scores.

Learned output tokens (object score, IoU, one per mask) are run through the two-way transformer with
the prompt tokens; each mask token then becomes, through its own MLP, a linear classifier over the
upscaled image features (a "hypernetwork").
"""

import torch
from torch import nn

from .layers import MLP, LayerNorm2d


class MaskDecoder(nn.Module):
    def __init__(self, *, transformer_dim: int, transformer: nn.Module, num_multimask_outputs: int = 3,
                 activation: type[nn.Module] = nn.GELU, iou_head_depth: int = 3, iou_head_hidden_dim: int = 256,
                 use_high_res_features: bool = False, iou_prediction_use_sigmoid: bool = False,
                 dynamic_multimask_via_stability: bool = False, dynamic_multimask_stability_delta: float = 0.05,
                 dynamic_multimask_stability_thresh: float = 0.98, pred_obj_scores: bool = False,
                 pred_obj_scores_mlp: bool = False, use_multimask_token_for_obj_ptr: bool = False):
        super().__init__()
        C = transformer_dim
        self.transformer_dim = C
        self.transformer = transformer
        self.num_multimask_outputs = num_multimask_outputs
        self.num_mask_tokens = num_multimask_outputs + 1  # token 0: the single-mask output

        self.iou_token = nn.Embedding(1, C)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, C)
        self.pred_obj_scores = pred_obj_scores
        if pred_obj_scores:
            self.obj_score_token = nn.Embedding(1, C)
        self.use_multimask_token_for_obj_ptr = use_multimask_token_for_obj_ptr

        # Two transposed convs: stride 16 -> 4, with channels C -> C/4 -> C/8.
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(C, C // 4, kernel_size=2, stride=2),
            LayerNorm2d(C // 4),
            activation(),
            nn.ConvTranspose2d(C // 4, C // 8, kernel_size=2, stride=2),
            activation(),
        )
        self.use_high_res_features = use_high_res_features
        if use_high_res_features:
            # Projections of the stride-4 / stride-8 backbone levels. The model applies them once per
            # frame, when it encodes the image; the decoder only adds the results during upscaling.
            self.conv_s0 = nn.Conv2d(C, C // 8, kernel_size=1, stride=1)
            self.conv_s1 = nn.Conv2d(C, C // 4, kernel_size=1, stride=1)

        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(C, C, C // 8, 3) for _ in range(self.num_mask_tokens))
        self.iou_prediction_head = MLP(C, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth,
                                       sigmoid_output=iou_prediction_use_sigmoid)
        if pred_obj_scores:
            self.pred_obj_score_head = MLP(C, C, 1, 3) if pred_obj_scores_mlp else nn.Linear(C, 1)

        # Single-mask output falls back to the best multimask output when its logits are unstable.
        self.dynamic_multimask_via_stability = dynamic_multimask_via_stability
        self.dynamic_multimask_stability_delta = dynamic_multimask_stability_delta
        self.dynamic_multimask_stability_thresh = dynamic_multimask_stability_thresh

    def forward(self, image_embeddings: torch.Tensor, image_pe: torch.Tensor,
                sparse_prompt_embeddings: torch.Tensor, dense_prompt_embeddings: torch.Tensor,
                multimask_output: bool, high_res_features: list[torch.Tensor] | None = None):
        """image_embeddings (B, C, h, w), image_pe (1, C, h, w), sparse (B, N, C), dense (B, C, h, w),
        high_res_features [(B, C/8, 4h, 4w), (B, C/4, 2h, 2w)] already through conv_s0 / conv_s1.

        Returns masks (B, M, 4h, 4w) logits, iou_pred (B, M), sam_tokens_out (B, M or 1, C) and
        object_score_logits (B, 1); M = num_multimask_outputs if multimask_output else 1.
        """
        masks, iou_pred, mask_tokens_out, object_score_logits = self.predict_masks(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings, high_res_features)
        if multimask_output:
            masks, iou_pred = masks[:, 1:], iou_pred[:, 1:]
        elif self.dynamic_multimask_via_stability and not self.training:
            masks, iou_pred = self._dynamic_multimask_via_stability(masks, iou_pred)
        else:
            masks, iou_pred = masks[:, :1], iou_pred[:, :1]
        # The object pointer comes from the single-mask token (what training saw after several
        # clicks), unless the config asks for the multimask tokens when those are output.
        if multimask_output and self.use_multimask_token_for_obj_ptr:
            sam_tokens_out = mask_tokens_out[:, 1:]  # (B, M, C)
        else:
            sam_tokens_out = mask_tokens_out[:, :1]  # (B, 1, C)
        return masks, iou_pred, sam_tokens_out, object_score_logits

    def predict_masks(self, image_embeddings: torch.Tensor, image_pe: torch.Tensor,
                      sparse_prompt_embeddings: torch.Tensor, dense_prompt_embeddings: torch.Tensor,
                      high_res_features: list[torch.Tensor] | None = None):
        """All num_mask_tokens masks and IoUs, the mask tokens and the object score logits."""
        B = sparse_prompt_embeddings.shape[0]
        learned = [self.iou_token.weight, self.mask_tokens.weight]
        if self.pred_obj_scores:
            learned.insert(0, self.obj_score_token.weight)
        s = int(self.pred_obj_scores)  # index of the IoU token
        tokens = torch.cat(learned).unsqueeze(0).expand(B, -1, -1)  # (B, s + 1 + M, C)
        tokens = torch.cat([tokens, sparse_prompt_embeddings], dim=1)  # (B, T, C)

        src = image_embeddings + dense_prompt_embeddings  # (B, C, h, w)
        _, C, h, w = src.shape
        hs, src = self.transformer(src, image_pe.expand(B, -1, -1, -1), tokens)  # (B, T, C), (B, hw, C)
        iou_token_out = hs[:, s]  # (B, C)
        mask_tokens_out = hs[:, s + 1:s + 1 + self.num_mask_tokens]  # (B, M, C)

        src = src.transpose(1, 2).reshape(B, C, h, w)  # (B, C, h, w)
        upscaled = self._upscale(src, high_res_features)  # (B, C/8, 4h, 4w)
        hyper_in = torch.stack([mlp(mask_tokens_out[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)],
                               dim=1)  # (B, M, C/8)
        masks = (hyper_in @ upscaled.flatten(2)).view(B, -1, *upscaled.shape[-2:])  # (B, M, 4h, 4w)

        iou_pred = self.iou_prediction_head(iou_token_out)  # (B, M)
        if self.pred_obj_scores:
            object_score_logits = self.pred_obj_score_head(hs[:, 0])  # (B, 1)
        else:
            object_score_logits = 10.0 * iou_pred.new_ones(B, 1)  # sigmoid(10) ~ 1: always present
        return masks, iou_pred, mask_tokens_out, object_score_logits

    def _upscale(self, src: torch.Tensor, high_res_features: list[torch.Tensor] | None) -> torch.Tensor:
        if not self.use_high_res_features:
            return self.output_upscaling(src)
        assert high_res_features is not None, "this decoder was built to use high-res features"
        dc1, ln1, act1, dc2, act2 = self.output_upscaling
        feat_s0, feat_s1 = high_res_features
        x = act1(ln1(dc1(src) + feat_s1))  # (B, C/4, 2h, 2w)
        return act2(dc2(x) + feat_s0)  # (B, C/8, 4h, 4w)

    def _get_stability_scores(self, mask_logits: torch.Tensor) -> torch.Tensor:
        """IoU of the mask thresholded at +delta with the mask thresholded at -delta: (B, K, H, W) -> (B, K)."""
        logits = mask_logits.flatten(-2)  # (B, K, HW)
        delta = self.dynamic_multimask_stability_delta
        inter = (logits > delta).sum(dim=-1).float()
        union = (logits > -delta).sum(dim=-1).float()
        return torch.where(union > 0, inter / union, 1.0)  # an empty mask counts as stable

    def _dynamic_multimask_via_stability(self, masks: torch.Tensor, iou_pred: torch.Tensor):
        """Single-mask output, replaced per row by the multimask output of highest predicted IoU
        when its stability score is below threshold. Selected with torch.where: no host sync."""
        best = iou_pred[:, 1:].argmax(dim=-1, keepdim=True) + 1  # (B, 1) index among all tokens
        best_mask = masks.gather(1, best[:, :, None, None].expand(-1, -1, *masks.shape[-2:]))  # (B, 1, H, W)
        best_iou = iou_pred.gather(1, best)  # (B, 1)
        stable = self._get_stability_scores(masks[:, :1]) >= self.dynamic_multimask_stability_thresh  # (B, 1)
        masks = torch.where(stable[:, :, None, None], masks[:, :1], best_mask)  # (B, 1, H, W)
        iou_pred = torch.where(stable, iou_pred[:, :1], best_iou)  # (B, 1)
        return masks, iou_pred
