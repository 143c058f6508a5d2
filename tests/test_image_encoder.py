"""Image encoder (Hiera trunk + FPN neck) against the reference's, built from its own yaml configs.

The reference modules are instantiated from the `image_encoder` node of each official config; ours
from our presets (the path the model takes) and from the same yaml arguments (constructor parity).
"""

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from jobs.benchmark.reference import REFERENCE_CONFIGS, reference_config_path
from model.config import get_config
from model.hiera import Hiera
from model.image_encoder import FpnNeck, ImageEncoder, build_image_encoder


def reference_node(preset: str):
    return OmegaConf.load(reference_config_path(preset)).model.image_encoder


def ours_from_yaml(node) -> ImageEncoder:
    """Our classes given the reference yaml's arguments verbatim (our neck makes its own position encoding)."""
    trunk = OmegaConf.to_container(node.trunk)
    neck = OmegaConf.to_container(node.neck)
    for d in (trunk, neck):
        d.pop("_target_")
    neck.pop("position_encoding")
    return ImageEncoder(Hiera(**trunk), FpnNeck(**neck), scalp=node.scalp)


def shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


@pytest.mark.parametrize("preset", sorted(REFERENCE_CONFIGS))
def test_state_dict_names_and_shapes(preset, monkeypatch):
    # Shapes only: skip the random init of the big weight matrices (seconds for the large model).
    monkeypatch.setattr(torch.nn.init, "kaiming_uniform_", lambda t, *a, **k: t)
    monkeypatch.setattr(torch.nn.init, "uniform_", lambda t, *a, **k: t)
    node = reference_node(preset)
    expected = shapes(instantiate(node))
    assert shapes(build_image_encoder(get_config(preset).trunk)) == expected
    assert shapes(ours_from_yaml(node)) == expected


def randomised_reference(preset: str) -> torch.nn.Module:
    """The reference encoder with every parameter distinct from its init: the init leaves LayerNorms at
    ones/zeros and the position embeddings at zero, where swapped or unused weights would go unnoticed."""
    torch.manual_seed(0)
    ref = instantiate(reference_node(preset)).eval()
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if "pos_embed" in name:
                p.copy_(0.5 * torch.randn_like(p))
            elif p.ndim == 1:
                p.add_(0.1 * torch.randn_like(p))
    return ref


@pytest.mark.parametrize("preset,size", [("sam2.1-tiny", 256), ("sam2-base-plus", 256), ("sam2.1-small", 512)])
def test_matches_reference(preset, size):
    ref = randomised_reference(preset)
    ours = build_image_encoder(get_config(preset).trunk).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        expected = ref(x)
        features, pos = ours(x)
    assert [tuple(f.shape) for f in features] == [(2, 256, size // s, size // s) for s in (4, 8, 16)]
    assert len(pos) == 3
    for got, want in zip(features + pos, expected["backbone_fpn"] + expected["vision_pos_enc"]):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_matches_reference_under_bf16_autocast():
    """Same dtype per level as the reference under autocast (the top-down sum is float32), same values."""
    ref = randomised_reference("sam2.1-tiny")
    ours = build_image_encoder(get_config("sam2.1-tiny").trunk).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = ref(x)
        features, pos = ours(x)
    for got, want in zip(features + pos, expected["backbone_fpn"] + expected["vision_pos_enc"]):
        assert got.dtype == want.dtype
        torch.testing.assert_close(got, want, atol=0.05, rtol=0.05)


def test_synthetic_preset_runs():
    cfg = get_config("synthetic-tiny")
    encoder = build_image_encoder(cfg.trunk, d_model=cfg.d_model).eval()
    with torch.no_grad():
        features, pos = encoder(torch.randn(1, 3, cfg.image_size, cfg.image_size))
    sizes = [cfg.image_size // s for s in (4, 8, 16)]
    assert [tuple(f.shape) for f in features] == [(1, cfg.d_model, s, s) for s in sizes]
    assert [tuple(p.shape) for p in pos] == [(1, cfg.d_model, s, s) for s in sizes]


def test_kept_position_embedding_follows_new_weights():
    """Outside training the trunk keeps its resized position embedding; loading weights in place renews it."""
    torch.manual_seed(0)
    trunk = Hiera(embed_dim=8, num_heads=1, stages=(1, 1), window_spec=(4, 4), global_att_blocks=(),
                  window_pos_embed_bkg_spatial_size=(4, 4), q_pool=1).eval()
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        before = trunk(images)
        state = {k: v + torch.randn_like(v) if k.startswith("pos_embed") else v for k, v in trunk.state_dict().items()}
        trunk.load_state_dict(state)
        after = trunk(images)
        fresh = trunk._pos_embed_at(16, 16)
    assert not torch.equal(before[0], after[0])
    torch.testing.assert_close(trunk.pos_embed_at(16, 16), fresh, rtol=0, atol=0)
    out = trunk(images)  # with gradients: computed afresh, so they reach the parameters
    out[0].sum().backward()
    assert trunk.pos_embed.grad is not None and trunk.pos_embed.grad.abs().sum() > 0
