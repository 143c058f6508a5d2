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
    predictor = build_sam2_video_predictor(
        REFERENCE_CONFIGS[preset], ckpt_path=None, device="cpu",
        hydra_overrides_extra=[f"++model.image_size={image_size}"],
    )
    predictor.fill_hole_area = 0  # its hole filling needs its CUDA extension; without one it only warns
    return predictor


@pytest.fixture(scope="session")
def reference_tiny():
    return build_reference("sam2.1-tiny", image_size=256)


@pytest.fixture(scope="session")
def s3_server():
    """An S3 endpoint on loopback (moto's server), with credentials in the environment for s3fs."""
    import os

    import s3fs
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        yield env["AWS_ENDPOINT_URL"]
    finally:
        server.stop()
        s3fs.S3FileSystem.clear_instance_cache()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
