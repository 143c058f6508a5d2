"""The GPU machine's image has torch, numpy, safetensors, pyarrow and pillow, but not Ray, PyAV, pycocotools or
s3fs: the model package, the tracker, training and the benchmark's model-only modes must run there. Each test
runs a fresh interpreter in which importing those packages fails."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ABSENT_ON_GPU_IMAGE = ("ray", "av", "pycocotools", "s3fs")

BLOCKER = textwrap.dedent("""
    import importlib.abc, sys
    BLOCKED = set(sys.argv[1].split(","))
    class Blocked(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"{name} is blocked by the test", name=name)
            return None
    sys.meta_path.insert(0, Blocked())
    del sys.argv[1]
""")


def run_without(blocked, code: str, *args: str) -> subprocess.CompletedProcess:
    """Run `code` (after the blocker) in a fresh interpreter at the repo root; fail with its stderr."""
    proc = subprocess.run([sys.executable, "-c", BLOCKER + textwrap.dedent(code), ",".join(blocked), *args],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def run_module_without(blocked, module: str, *args: str) -> subprocess.CompletedProcess:
    return run_without(blocked, f"import runpy, sys\nsys.argv[0] = {module!r}\n"
                                f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)", *args)


def test_the_blocker_blocks():
    proc = subprocess.run([sys.executable, "-c", BLOCKER + "import pycocotools", "pycocotools"], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "pycocotools is blocked by the test" in proc.stderr


def test_model_imports_only_torch_numpy_and_safetensors():
    """Third-party packages `import model` loads beyond what torch, numpy and safetensors load themselves."""
    proc = run_without(ABSENT_ON_GPU_IMAGE, """
        import json, sys
        def roots():
            return {m.split(".")[0] for m in sys.modules} - set(sys.stdlib_module_names)
        import numpy, safetensors.torch, torch
        before = roots()
        import model, model.tracker, model.training.step, model.auto_masks, model.discovery
        print(json.dumps(sorted(roots() - before)))
    """)
    assert json.loads(proc.stdout.splitlines()[-1]) == ["model"]


def test_tracker_runs_without_ray_pyav_pycocotools_s3fs_or_fsspec():
    proc = run_without(ABSENT_ON_GPU_IMAGE + ("fsspec",), """
        import numpy as np
        from model import Prompt, StreamingTracker, load_model
        tracker = StreamingTracker(load_model("synthetic-tiny"))  # the embedded checkpoint: a local file
        state = tracker.new_stream(96, 128)
        frames = np.random.default_rng(0).integers(0, 255, (4, 96, 128, 3), dtype=np.uint8)
        areas = [int(tracker.step(state, f, [Prompt(1, box=(20, 20, 60, 70))] if t == 0 else []).masks.sum())
                 for t, f in enumerate(frames)]
        print(len(areas), state.frame_index)
    """)
    assert proc.stdout.split()[-2:] == ["4", "4"]


def test_training_runs_without_ray_pyav_pycocotools_or_s3fs(tmp_path):
    run_module_without(ABSENT_ON_GPU_IMAGE, "jobs.train", "--out", str(tmp_path), "--steps", "2", "--batch", "1",
                       "--image-size", "64", "--curriculum", "0:2", "--val-videos", "1", "--val-frames", "2",
                       "--log-every", "1", "--device", "cpu")
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2] and any("val_JF" in r for r in log)
    assert (tmp_path / "model.safetensors").stat().st_size > 0


def test_benchmark_model_modes_run_without_ray_pyav_pycocotools_or_s3fs(tmp_path):
    out = tmp_path / "bench"
    run_module_without(ABSENT_ON_GPU_IMAGE, "jobs.benchmark", "--which", "ref,ours,batched", "--preset",
                       "sam2.1-tiny", "--image-size", "64", "--frames", "2", "--batch-sizes", "1,2", "--repeats", "1",
                       "--profile-frames", "1", "--out", str(out))
    import pyarrow.parquet as pq

    rows = pq.read_table(out / "results.parquet").to_pylist()
    assert sorted((r["system"], r["mode"], r["streams"]) for r in rows) == [
        ("reference", "single", 1), ("samstream", "batched", 1), ("samstream", "batched", 2),
        ("samstream", "single", 1)]
