"""Shared fixtures. Nothing the GPU image lacks (ray, s3fs, moto, av, pycocotools, sam2) is imported at module
level: `pytest -m cuda tests/test_cuda.py` runs there."""

import os

import pytest

# Keep every Ray process of the tests on loopback: with this off, Ray on Linux swaps 127.0.0.1 for the
# machine's interface address.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


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


# Modules that start or join a Ray cluster run in one pytest-xdist worker, in file order (`-n 2 --dist
# loadgroup`): one cluster at a time, and test_demo's private Ray before the session cluster exists.
RAY_MODULES = {"test_benchmark_job", "test_connect", "test_demo", "test_output_claim", "test_pseudo_label_job",
               "test_schedule", "test_segment_faults", "test_segment_job"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.module.__name__.rsplit(".", 1)[-1] in RAY_MODULES:
            item.add_marker(pytest.mark.xdist_group("ray"))
