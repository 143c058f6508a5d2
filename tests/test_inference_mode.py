"""The model loads and tracks inside torch.inference_mode() and torch.no_grad(), and its kept position
embedding and temporal key table still follow new weights (model/weight_keys.py)."""

import contextlib

import pytest
import torch

from model import Prompt, StreamingTracker, embedded_checkpoint, load_model
from model.memory_kv import TemporalKeyTable, temporal_keys
from tests.videos import moving_shapes

H, W, FRAMES = 64, 80, 5
CPU = torch.device("cpu")


def track(context) -> list[torch.Tensor]:
    """Load the embedded model and track one clicked object, all inside `context`."""
    frames = moving_shapes(FRAMES, H, W, seed=3)
    with context:
        tracker = StreamingTracker(load_model("synthetic-tiny", embedded_checkpoint("synthetic-tiny")))
        state = tracker.new_stream(H, W)
        click = [Prompt(1, points=[[0.3 * W, 0.35 * H]], labels=[1])]
        return [tracker.step(state, f, click if t == 0 else ()).masks.clone() for t, f in enumerate(frames)]


@pytest.fixture(scope="module")
def normal_masks() -> list[torch.Tensor]:
    return track(contextlib.nullcontext())


@pytest.mark.parametrize("context", [torch.inference_mode, torch.no_grad])
def test_loaded_and_tracked_under_context_gives_the_normal_masks(normal_masks, context):
    masks = track(context())
    assert len(masks) == FRAMES and normal_masks[0].any()
    for t, (a, b) in enumerate(zip(masks, normal_masks)):
        assert torch.equal(a, b), f"frame {t} differs under {context.__name__}"


def kept_values(model) -> tuple[torch.Tensor, torch.Tensor, TemporalKeyTable]:
    """The trunk's kept position embedding and a filled temporal key table of `model`."""
    side = model.cfg.image_size // 4  # the patch embedding's token map
    table = TemporalKeyTable()
    return model.image_encoder.trunk.pos_embed_at(side, side), table.get(model, 16, torch.float32, CPU), table


def assert_fresh(model, table: TemporalKeyTable, pos_before: torch.Tensor, keys_before: torch.Tensor) -> None:
    """What is served now is what the current weights give, and not what was kept before."""
    side = model.cfg.image_size // 4
    trunk = model.image_encoder.trunk
    pos, keys = trunk.pos_embed_at(side, side), table.get(model, 16, torch.float32, CPU)
    torch.testing.assert_close(pos, trunk._pos_embed_at(side, side), rtol=0, atol=0)
    torch.testing.assert_close(keys, temporal_keys(model, 16, torch.float32, CPU), rtol=0, atol=0)
    assert not torch.equal(pos, pos_before) and not torch.equal(keys, keys_before)


def perturbed(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    cached = ("image_encoder.trunk.pos_embed", "maskmem_tpos_enc", "memory_attention")
    return {k: v + 0.1 * torch.randn_like(v) if k.startswith(cached) else v for k, v in state.items()}


def test_weights_made_under_inference_mode_and_loaded_again_renew_the_kept_values():
    """Inference tensors have no version counter: a second load in place must still be seen."""
    torch.manual_seed(0)
    with torch.inference_mode():
        model = load_model("synthetic-tiny")
        assert model.image_encoder.trunk.pos_embed.is_inference()
        pos, keys, table = kept_values(model)
        pos, keys = pos.clone(), keys.clone()
        model.load_state_dict(perturbed(model.state_dict()))
        assert_fresh(model, table, pos, keys)


def test_in_place_updates_of_normal_weights_renew_the_kept_values():
    """An optimizer step writes the parameters in place without a load: their versions tell."""
    torch.manual_seed(0)
    model = load_model("synthetic-tiny")
    with torch.inference_mode():  # filled as the tracker fills them
        pos, keys, table = kept_values(model)
        pos, keys = pos.clone(), keys.clone()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith(("image_encoder.trunk.pos_embed", "maskmem_tpos_enc", "memory_attention")):
                p.add_(0.1 * torch.randn_like(p))
    with torch.inference_mode():
        assert_fresh(model, table, pos, keys)
