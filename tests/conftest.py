"""Shared fixtures: the reference model (PyPI `sam2`) built from its own configs, as a test oracle."""

import os

import pytest
import torch

# Keep every Ray process of the tests on loopback: with this off, Ray on Linux swaps 127.0.0.1 for the
# machine's interface address.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

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


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def ray_cluster():
    """A Ray cluster of our own on loopback (`ray start --head --block`), 2 CPUs and 3 logical GPUs; this
    process is connected to it. Terminating the blocking `ray start` stops exactly this cluster."""
    import shutil
    import subprocess
    import sys
    import tempfile
    import time
    import urllib.request
    from pathlib import Path

    import ray

    port, dashboard = _free_port(), _free_port()
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths have a length limit
    cmd = [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", f"--port={port}",
           "--node-ip-address=127.0.0.1", f"--dashboard-port={dashboard}", "--dashboard-host=127.0.0.1",
           "--num-cpus=2", "--num-gpus=3", f"--temp-dir={temp}", "--disable-usage-stats"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/version", timeout=2)
                break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"ray start did not come up (exit {proc.poll()})")
                time.sleep(0.5)
        ray.init(address=f"127.0.0.1:{port}", namespace="samstream-tests", log_to_driver=False)
        yield {"address": f"127.0.0.1:{port}", "dashboard": url}
    finally:
        ray.shutdown()
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture
def fault_proxy(s3_server, monkeypatch):
    """A fault-injecting proxy (tests/fault_proxy.py) in front of `s3_server`, injecting nothing until told
    (`set_error_rate`, `add_rule`); AWS_ENDPOINT_URL points at it for this test, so s3fs file systems
    made from the environment (new instances: the instance cache is cleared) go through it."""
    import s3fs

    from tests.fault_proxy import FaultProxy

    with FaultProxy(s3_server) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        s3fs.S3FileSystem.clear_instance_cache()
        try:
            yield proxy
        finally:
            s3fs.S3FileSystem.clear_instance_cache()
