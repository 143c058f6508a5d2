"""Shared fixtures: the reference model (PyPI `sam2`) built from its own configs, as a test oracle."""

import pytest
import torch

# Reference config file for each of our preset names.
REFERENCE_CONFIGS = {
    "sam2-tiny": "configs/sam2/sam2_hiera_t.yaml",
    "sam2-small": "configs/sam2/sam2_hiera_s.yaml",
    "sam2-base-plus": "configs/sam2/sam2_hiera_b+.yaml",
    "sam2-large": "configs/sam2/sam2_hiera_l.yaml",
    "sam2.1-tiny": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "sam2.1-small": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "sam2.1-base-plus": "configs/sam2.1/sam2.1_hiera_b+.yaml",
    "sam2.1-large": "configs/sam2.1/sam2.1_hiera_l.yaml",
}


def build_reference(preset: str, image_size: int = 256, seed: int = 0):
    """The reference video predictor with random weights (its own init, seeded), on CPU, eval mode."""
    from sam2.build_sam import build_sam2_video_predictor

    torch.manual_seed(seed)
    return build_sam2_video_predictor(
        REFERENCE_CONFIGS[preset], ckpt_path=None, device="cpu",
        hydra_overrides_extra=[f"++model.image_size={image_size}", "++model.fill_hole_area=0"],
    )


@pytest.fixture(scope="session")
def reference_tiny():
    return build_reference("sam2.1-tiny", image_size=256)
