"""SAM heads (prompt encoder, two-way transformer, mask decoder) against the reference modules.

Our modules load the reference's randomly initialised weights strictly and must give the same
outputs on random inputs.
"""

import pytest
import torch

from jobs.benchmark.reference import build_reference
from model.mask_decoder import MaskDecoder
from model.prompt_encoder import PromptEncoder
from model.two_way_transformer import TwoWayTransformer

ATOL = 1e-5
B = 6


def build_ours(ref):
    """Our heads with the arguments SAM2Base._build_sam_heads gives the reference's, weights loaded."""
    C, emb = ref.sam_prompt_embed_dim, ref.sam_image_embedding_size
    pe = PromptEncoder(embed_dim=C, image_embedding_size=(emb, emb), input_image_size=(ref.image_size,) * 2,
                       mask_in_chans=16)
    dec = MaskDecoder(num_multimask_outputs=3, transformer=TwoWayTransformer(depth=2, embedding_dim=C, mlp_dim=2048,
                                                                             num_heads=8),
                      transformer_dim=C, iou_head_depth=3, iou_head_hidden_dim=256,
                      use_high_res_features=ref.use_high_res_features_in_sam,
                      iou_prediction_use_sigmoid=ref.iou_prediction_use_sigmoid, pred_obj_scores=ref.pred_obj_scores,
                      pred_obj_scores_mlp=ref.pred_obj_scores_mlp,
                      use_multimask_token_for_obj_ptr=ref.use_multimask_token_for_obj_ptr,
                      **(ref.sam_mask_decoder_extra_args or {}))
    pe.load_state_dict(ref.sam_prompt_encoder.state_dict(), strict=True)
    dec.load_state_dict(ref.sam_mask_decoder.state_dict(), strict=True)
    return pe.eval(), dec.eval()


@pytest.fixture(scope="module", params=["sam2.1-tiny", "sam2-tiny"])
def heads(request):
    ref = build_reference(request.param, image_size=256, seed=0)
    pe, dec = build_ours(ref)
    return ref.sam_prompt_encoder.eval(), ref.sam_mask_decoder.eval(), pe, dec


def random_points(seed: int, n: int = 5):
    g = torch.Generator().manual_seed(seed)
    coords = torch.rand(B, n, 2, generator=g) * 256  # pixels of the 256 x 256 input
    labels = torch.randint(-1, 4, (B, n), generator=g, dtype=torch.int32)
    labels[0] = torch.tensor([-1, 0, 1, 2, 3])[:n]  # every label kind at least once
    return coords, labels


def random_decoder_inputs(ref_pe, seed: int, with_mask: bool):
    g = torch.Generator().manual_seed(seed)
    C, (h, w) = ref_pe.embed_dim, ref_pe.image_embedding_size
    masks = torch.randn(B, 1, 4 * h, 4 * w, generator=g) * 5 if with_mask else None
    feat = torch.randn(B, C, h, w, generator=g)
    high_res = [torch.randn(B, C // 8, 4 * h, 4 * w, generator=g), torch.randn(B, C // 4, 2 * h, 2 * w, generator=g)]
    return random_points(seed + 1), masks, feat, high_res


def assert_same(ours, theirs):
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape and a.dtype == b.dtype
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0)


def run_both(heads, points, masks, feat, high_res, multimask):
    ref_pe, ref_dec, pe, dec = heads
    with torch.no_grad():
        sparse, dense = ref_pe(points=points, boxes=None, masks=masks)
        ref_out = ref_dec(image_embeddings=feat, image_pe=ref_pe.get_dense_pe(), sparse_prompt_embeddings=sparse,
                          dense_prompt_embeddings=dense, multimask_output=multimask, repeat_image=False,
                          high_res_features=high_res)
        sparse, dense = pe(points=points, masks=masks)
        out = dec(image_embeddings=feat, image_pe=pe.get_dense_pe(), sparse_prompt_embeddings=sparse,
                  dense_prompt_embeddings=dense, multimask_output=multimask, high_res_features=high_res)
    return out, ref_out


@pytest.mark.parametrize("with_mask", [False, True])
def test_prompt_encoder(heads, with_mask):
    ref_pe, _, pe, _ = heads
    _, masks, _, _ = random_decoder_inputs(ref_pe, 0, with_mask)
    with torch.no_grad():
        for points in (random_points(1), random_points(2, n=1)):
            ours = pe(points=points, masks=masks)
            assert ours[0].shape == (B, points[1].shape[1] + 1, pe.embed_dim)  # + the padding point
            assert_same(ours, ref_pe(points=points, boxes=None, masks=masks))
        assert_same([pe.get_dense_pe()], [ref_pe.get_dense_pe()])
        # No points at all: an empty sparse set, batch size from the mask.
        if with_mask:
            assert_same(pe(points=None, masks=masks), ref_pe(points=None, boxes=None, masks=masks))


@pytest.mark.parametrize("multimask", [False, True])
@pytest.mark.parametrize("with_mask", [False, True])
def test_mask_decoder(heads, multimask, with_mask):
    points, masks, feat, high_res = random_decoder_inputs(heads[0], 3, with_mask)
    out, ref_out = run_both(heads, points, masks, feat, high_res, multimask)
    assert_same(out, ref_out)
    M = 3 if multimask else 1
    assert out[0].shape == (B, M, 64, 64) and out[1].shape == (B, M)
    assert out[2].shape == (B, M if heads[3].use_multimask_token_for_obj_ptr else 1, 256)
    assert out[3].shape == (B, 1)


def test_stability_fallback_threshold(heads):
    """Threshold set between the rows' stability scores: some rows fall back, the others do not."""
    ref_pe, ref_dec, pe, dec = heads
    assert dec.dynamic_multimask_via_stability and dec.dynamic_multimask_stability_delta == 0.05
    points, masks, feat, high_res = random_decoder_inputs(ref_pe, 5, False)
    with torch.no_grad():
        sparse, dense = pe(points=points)
        all_masks, all_ious, _, _ = dec.predict_masks(feat, pe.get_dense_pe(), sparse, dense, high_res)
        scores = dec._get_stability_scores(all_masks[:, :1])[:, 0]  # (B,)
    thresh = scores.sort().values[B // 2 - 1:B // 2 + 1].mean().item()  # halfway between the middle two
    stable = scores >= thresh
    assert 0 < stable.sum() < B
    saved = dec.dynamic_multimask_stability_thresh
    try:
        dec.dynamic_multimask_stability_thresh = ref_dec.dynamic_multimask_stability_thresh = thresh
        out, ref_out = run_both(heads, points, masks, feat, high_res, multimask=False)
    finally:
        dec.dynamic_multimask_stability_thresh = ref_dec.dynamic_multimask_stability_thresh = saved
    assert_same(out, ref_out)
    best = all_ious[:, 1:].argmax(-1) + 1
    for i in range(B):
        j = 0 if stable[i] else best[i]
        torch.testing.assert_close(out[0][i, 0], all_masks[i, j], atol=0, rtol=0)
        torch.testing.assert_close(out[1][i, 0], all_ious[i, j], atol=0, rtol=0)
    assert not torch.equal(out[0][~stable], all_masks[~stable, :1])  # the fallback changed the output


@pytest.mark.parametrize("scale", [1e-4, 20.0])
def test_stability_fallback_weights(heads, scale):
    """Tiny single-mask logits are all unstable (every row falls back), huge ones all stable."""
    ref_pe, ref_dec, pe, dec = heads
    points, masks, feat, high_res = random_decoder_inputs(ref_pe, 7, False)
    saved = {k: v.clone() for k, v in dec.state_dict().items()}
    try:
        for d in (dec, ref_dec):
            with torch.no_grad():
                d.output_hypernetworks_mlps[0].layers[-1].weight.mul_(scale)
                d.output_hypernetworks_mlps[0].layers[-1].bias.mul_(scale)
        out, ref_out = run_both(heads, points, masks, feat, high_res, multimask=False)
        with torch.no_grad():
            sparse, dense = pe(points=points)
            all_masks, all_ious, _, _ = dec.predict_masks(feat, pe.get_dense_pe(), sparse, dense, high_res)
    finally:
        dec.load_state_dict(saved)
        ref_dec.load_state_dict(saved)
    assert_same(out, ref_out)
    if scale < 1:
        best = all_ious[:, 1:].argmax(-1) + 1
        rows = torch.arange(B)
        assert torch.equal(out[0][:, 0], all_masks[rows, best])
        assert not torch.equal(out[0], all_masks[:, :1])
    else:
        assert torch.equal(out[0], all_masks[:, :1])


def test_training_mode_has_no_fallback(heads):
    ref_pe, ref_dec, pe, dec = heads
    points, masks, feat, high_res = random_decoder_inputs(ref_pe, 9, True)
    try:
        dec.train(), ref_dec.train()
        out, ref_out = run_both(heads, points, masks, feat, high_res, multimask=False)
    finally:
        dec.eval(), ref_dec.eval()
    assert_same(out, ref_out)


@pytest.mark.parametrize("multimask", [False, True])
def test_default_flags(multimask):
    """The constructor defaults (no high-res features, no object score head, raw IoU) match too."""
    from sam2.modeling.sam.mask_decoder import MaskDecoder as RefMaskDecoder
    from sam2.modeling.sam.transformer import TwoWayTransformer as RefTwoWayTransformer

    torch.manual_seed(0)
    ref = RefMaskDecoder(transformer_dim=64, transformer=RefTwoWayTransformer(depth=2, embedding_dim=64,
                                                                              num_heads=4, mlp_dim=128)).eval()
    ours = MaskDecoder(transformer_dim=64, transformer=TwoWayTransformer(depth=2, embedding_dim=64, num_heads=4,
                                                                          mlp_dim=128)).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    g = torch.Generator().manual_seed(0)
    args = (torch.randn(3, 64, 8, 8, generator=g), torch.randn(1, 64, 8, 8, generator=g),
            torch.randn(3, 4, 64, generator=g), torch.randn(3, 64, 8, 8, generator=g), multimask)
    with torch.no_grad():
        assert_same(ours(*args), ref(*args, repeat_image=False))


def test_bf16_autocast(heads):
    """Runs under bf16 autocast with the same code path; close to the reference under autocast."""
    points, masks, feat, high_res = random_decoder_inputs(heads[0], 11, True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, ref_out = run_both(heads, points, masks, feat, high_res, multimask=True)
    for a, b in zip(out, ref_out):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a.float(), b.float(), atol=0.1, rtol=0.05)
