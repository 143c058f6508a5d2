"""Official checkpoints load unchanged: the reference's own state dicts, saved as Meta publishes them."""

import io

import pytest
import s3fs
import torch
from safetensors.torch import save_file

from jobs.benchmark.reference import REFERENCE_CONFIGS, build_reference
from model import PRESETS, CheckpointError, UnknownPresetError, load_model, suggest_preset


def reference_state_dict(preset: str) -> dict[str, torch.Tensor]:
    return build_reference(preset, seed=0).state_dict()  # at the config's image size, as Meta saved them


@pytest.mark.parametrize("preset", sorted(REFERENCE_CONFIGS))
def test_official_checkpoint_loads_strictly(preset, tmp_path, s3_server):
    sd = reference_state_dict(preset)
    path = tmp_path / f"{preset}.pt"
    torch.save({"model": sd}, path)  # the official files: a dict whose "model" entry is the state dict
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    if not fs.exists("checkpoints"):
        fs.mkdir("checkpoints")
    fs.put(str(path), f"checkpoints/{preset}.pt")
    for url in (str(path), f"s3://checkpoints/{preset}.pt"):
        model = load_model(preset, checkpoint=url)
        loaded = model.state_dict()
        assert loaded.keys() == sd.keys()
        for k in ("image_encoder.trunk.patch_embed.proj.weight", "maskmem_tpos_enc", "obj_ptr_proj.layers.0.weight"):
            torch.testing.assert_close(loaded[k], sd[k], rtol=0, atol=0)
    assert suggest_preset(sd) == preset
    path.unlink()
    fs.rm(f"checkpoints/{preset}.pt")


def test_wrong_preset_names_keys_and_suggests(tmp_path):
    sd = reference_state_dict("sam2.1-tiny")
    path = tmp_path / "tiny.pt"
    torch.save({"model": sd}, path)
    with pytest.raises(CheckpointError) as err:
        load_model("sam2.1-small", checkpoint=str(path))
    msg = str(err.value)
    assert "suggest preset 'sam2.1-tiny'" in msg and "missing: image_encoder.trunk.blocks.12." in msg
    assert "image_encoder.trunk.blocks.10.proj.weight" in err.value.unexpected  # tiny's stage shift sits elsewhere
    assert any(m.startswith("image_encoder.trunk.blocks.11.norm1.weight: checkpoint (768,) vs model (384,)")
               for m in err.value.mismatched)
    with pytest.raises(CheckpointError) as err:
        load_model("sam2-tiny", checkpoint=str(path))  # SAM 2.0 lacks the 2.1 extras
    assert "no_obj_embed_spatial" in err.value.unexpected and "'sam2.1-tiny'" in str(err.value)


def test_safetensors_and_bare_state_dict(tmp_path):
    torch.manual_seed(1)
    sd = load_model("synthetic-tiny").state_dict()
    save_file(sd, tmp_path / "w.safetensors")
    torch.save(sd, tmp_path / "bare.pt")
    for name in ("w.safetensors", "bare.pt"):
        loaded = load_model("synthetic-tiny", checkpoint=str(tmp_path / name)).state_dict()
        for k in sd:
            torch.testing.assert_close(loaded[k], sd[k], rtol=0, atol=0)


def test_bad_checkpoints_fail_clearly(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    buf = io.BytesIO()
    torch.save({"model": Evil()}, buf)
    (tmp_path / "evil.pt").write_bytes(buf.getvalue())
    with pytest.raises(CheckpointError, match="not a weights-only"):
        load_model("synthetic-tiny", checkpoint=str(tmp_path / "evil.pt"))
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(CheckpointError, match="text.pt"):
        load_model("synthetic-tiny", checkpoint=str(tmp_path / "text.pt"))
    with pytest.raises(CheckpointError, match="cannot read checkpoint .*missing.pt"):
        load_model("synthetic-tiny", checkpoint=str(tmp_path / "missing.pt"))
    with pytest.raises(UnknownPresetError, match="'sam3-huge'.*sam2.1-tiny"):
        load_model("sam3-huge")


def test_random_weights_follow_torch_seed():
    torch.manual_seed(3)
    a = load_model("synthetic-tiny").state_dict()
    torch.manual_seed(3)
    b = load_model("synthetic-tiny").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert sum(v.numel() for v in a.values()) < 10_000_000, "synthetic-tiny should stay a few million parameters"
    assert set(PRESETS) >= set(REFERENCE_CONFIGS) | {"synthetic-tiny"}
