"""Memory encoder and memory attention against the reference modules.

Our modules load the reference's randomly initialised weights strictly (perturbed so that nothing is
trivially small, e.g. the 1e-6 layer-scale gammas) and must give the same outputs on random inputs.
The reference's memory attention takes sequence-first tensors (N, B, C); ours batch-first (B, N, C).
"""

import pytest
import torch

from jobs.benchmark.reference import build_reference
from model.memory_attention import MemoryAttention, MemoryAttentionLayer, RoPEAttention
from model.memory_encoder import CXBlock, Fuser, MaskDownSampler, MemoryEncoder
from model.position_encoding import SinePositionEncoding
from model.rope import apply_rope, axial_rope_rotations

ATOL, RTOL = 1e-4, 1e-4
B, C, CM = 2, 256, 64


def build_ours():
    """Our modules with the arguments of the sam2.1_hiera_t config (feat_sizes for image size 1024)."""
    rope = dict(rope_theta=10000.0, feat_sizes=(64, 64), embedding_dim=C, num_heads=1, downsample_rate=1,
                dropout=0.1)
    layer = MemoryAttentionLayer(
        activation="relu", cross_attention=RoPEAttention(**rope, rope_k_repeat=True, kv_in_dim=CM), d_model=C,
        dim_feedforward=2048, dropout=0.1, pos_enc_at_attn=False, pos_enc_at_cross_attn_keys=True,
        pos_enc_at_cross_attn_queries=False, self_attention=RoPEAttention(**rope))
    attention = MemoryAttention(d_model=C, pos_enc_at_input=True, layer=layer, num_layers=4)
    fuser = Fuser(CXBlock(dim=C, kernel_size=7, padding=3, layer_scale_init_value=1e-6, use_dwconv=True),
                  num_layers=2)
    encoder = MemoryEncoder(out_dim=CM, mask_downsampler=MaskDownSampler(kernel_size=3, stride=2, padding=1),
                            fuser=fuser, position_encoding=SinePositionEncoding(CM))
    return encoder, attention


@pytest.fixture(scope="module")
def modules():
    ref = build_reference("sam2.1-tiny", image_size=256, seed=0)
    ref_enc, ref_att = ref.memory_encoder.eval(), ref.memory_attention.eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in list(ref_enc.parameters()) + list(ref_att.parameters()):
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    enc, att = build_ours()
    enc.load_state_dict(ref_enc.state_dict(), strict=True)
    att.load_state_dict(ref_att.state_dict(), strict=True)
    return ref_enc, ref_att, enc.eval(), att.eval()


def test_parameter_names_and_shapes(modules):
    ref_enc, ref_att, enc, att = modules
    for ref, ours in ((ref_enc, enc), (ref_att, att)):
        assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}


@pytest.mark.parametrize("side", [16, 32])
def test_memory_encoder(modules, side):
    ref_enc, _, enc, _ = modules
    g = torch.Generator().manual_seed(side)
    feat = torch.randn(B, C, side, side, generator=g)
    mask = torch.randn(B, 1, 16 * side, 16 * side, generator=g) * 10  # like sigmoid * 20 - 10 logits
    with torch.no_grad():
        expected = ref_enc(feat, mask, skip_mask_sigmoid=True)
        out, pos = enc(feat, mask)
    assert out.shape == pos.shape == (B, CM, side, side)
    torch.testing.assert_close(out, expected["vision_features"], atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(pos, expected["vision_pos_enc"][0], atol=ATOL, rtol=RTOL)


def test_rope_matches_complex_reference():
    from sam2.modeling.position_encoding import apply_rotary_enc, compute_axial_cis

    g = torch.Generator().manual_seed(0)
    q = torch.randn(B, 1, 64, 32, generator=g)
    k = torch.randn(B, 1, 3 * 64, 32, generator=g)
    cis = compute_axial_cis(dim=32, end_x=8, end_y=8)
    q_ref, k_ref = apply_rotary_enc(q, k, cis, repeat_freqs_k=True)
    rot = axial_rope_rotations(8, 8, 32)
    torch.testing.assert_close(apply_rope(q, rot), q_ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(apply_rope(k, rot.repeat(3, 1)), k_ref, atol=1e-6, rtol=0)


def random_memory(g, side, frames, ptrs):
    hw, m = side * side, frames * side * side + ptrs
    curr, curr_pos = torch.randn(B, hw, C, generator=g), torch.randn(B, hw, C, generator=g)
    memory, memory_pos = torch.randn(B, m, CM, generator=g), torch.randn(B, m, CM, generator=g)
    return curr, curr_pos, memory, memory_pos


def reference_attention(ref_att, curr, curr_pos, memory, memory_pos, ptrs):
    """The reference on our batch-first tensors."""
    t = lambda x: x.transpose(0, 1)  # (B, N, C) <-> (N, B, C)
    with torch.no_grad():
        return t(ref_att(t(curr), t(memory), t(curr_pos), t(memory_pos), num_obj_ptr_tokens=ptrs))


@pytest.mark.parametrize("side", [16, 32])
@pytest.mark.parametrize("frames,ptrs", [(1, 0), (3, 4), (7, 16), (1, 16), (7, 0)])
def test_memory_attention(modules, side, frames, ptrs):
    _, ref_att, _, att = modules
    g = torch.Generator().manual_seed(100 * side + 10 * frames + ptrs)
    curr, curr_pos, memory, memory_pos = random_memory(g, side, frames, ptrs)
    expected = reference_attention(ref_att, curr, curr_pos, memory, memory_pos, ptrs)
    with torch.no_grad():
        out = att(curr, curr_pos, memory, memory_pos, ptrs, None)
        out_zero_bias = att(curr, curr_pos, memory, memory_pos, ptrs, torch.zeros(B, memory.shape[1]))
    assert out.shape == (B, side * side, C)
    torch.testing.assert_close(out, expected, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(out_zero_bias, expected, atol=ATOL, rtol=RTOL)


def test_padding_equals_unpadded_reference(modules):
    """Object 0 has 3 frames and 4 pointers, object 1 has 2 frames and 2 pointers; both padded to 4 frames and
    6 pointers with dummy tokens masked by -inf, the padding frames placed among the real ones."""
    _, ref_att, _, att = modules
    side, hw, frames, ptrs = 16, 256, 4, 6
    g = torch.Generator().manual_seed(7)
    curr, curr_pos, memory, memory_pos = random_memory(g, side, frames, ptrs)
    real_frames, real_ptrs = [[0, 2, 3], [1, 3]], [[0, 1, 2, 4], [3, 5]]
    bias = torch.full((B, memory.shape[1]), float("-inf"))
    for b in range(B):
        keep = [torch.arange(f * hw, (f + 1) * hw) for f in real_frames[b]]
        keep.append(frames * hw + torch.tensor(real_ptrs[b], dtype=torch.long))
        keep = torch.cat(keep)
        bias[b, keep] = 0.0
        expected = reference_attention(ref_att, curr[b:b + 1], curr_pos[b:b + 1], memory[b:b + 1, keep],
                                       memory_pos[b:b + 1, keep], len(real_ptrs[b]))
        with torch.no_grad():
            out = att(curr, curr_pos, memory, memory_pos, ptrs, bias)
        torch.testing.assert_close(out[b:b + 1], expected, atol=ATOL, rtol=RTOL)


def test_decay_bias_fades_old_frames(modules):
    """A growing negative bias on the oldest 2 of 3 frames moves the output towards the output without them."""
    _, ref_att, _, att = modules
    side, hw, frames, ptrs = 16, 256, 3, 4
    g = torch.Generator().manual_seed(11)
    curr, curr_pos, memory, memory_pos = random_memory(g, side, frames, ptrs)
    keep = torch.cat([torch.arange(2 * hw, 3 * hw), torch.arange(3 * hw, 3 * hw + ptrs)])  # newest frame + pointers
    without_old = reference_attention(ref_att, curr, curr_pos, memory[:, keep], memory_pos[:, keep], ptrs)
    errors = []
    for decay in (0.5, 4.0, 40.0):
        bias = torch.zeros(B, memory.shape[1])
        bias[:, :hw] = -2 * decay  # oldest frame, age 2
        bias[:, hw:2 * hw] = -decay  # age 1
        with torch.no_grad():
            out = att(curr, curr_pos, memory, memory_pos, ptrs, bias)
        errors.append((out - without_old).abs().max().item())
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < ATOL


def test_bf16_autocast_runs(modules):
    """One code path: bf16 autocast (CPU here) must run and stay near the float32 result."""
    _, _, enc, att = modules
    g = torch.Generator().manual_seed(3)
    curr, curr_pos, memory, memory_pos = random_memory(g, 16, 2, 4)
    bias = torch.zeros(B, memory.shape[1])
    bias[1, :256] = float("-inf")
    with torch.no_grad():
        ref = att(curr, curr_pos, memory, memory_pos, 4, bias)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = att(curr, curr_pos, memory, memory_pos, 4, bias)
            mem, pos = enc(torch.randn(B, C, 16, 16, generator=g), torch.randn(B, 1, 256, 256, generator=g))
    assert torch.isfinite(out).all() and torch.isfinite(mem).all()
    assert (out.float() - ref).abs().mean() < 0.05
