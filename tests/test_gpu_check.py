"""benchmarks/gpu_check.sh --dry-run: the GPU check's every step on this CPU at tiny sizes, so the one script a
lent GPU machine runs is known to work before the machine's minutes are spent on it."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
PRESETS = ("sam2.1-tiny", "sam2.1-base-plus")
STEPS = ("a. env", "b. tests", *(f"c. bench {p}" for p in PRESETS), "d. train")
FILES = {"summary.md", "env.log", "tests.log", "bench.log", "bench.md", "bench.parquet", "train.log", "train.jsonl"}


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    env = dict(os.environ, OUT=str(out), PYTHON=sys.executable)
    env.pop("SAMSTREAM_TEST_DEVICE", None)  # the script sets it for its own test step
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--dry-run"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    return proc, out


def summary_rows(text: str) -> dict[str, list[str]]:
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines() if line.startswith("| ")]
    return {r[0]: r[1:] for r in rows[1:]}  # without the header row


def test_every_step_passes_and_the_summary_says_so(dry_run):
    proc, out = dry_run
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert {p.name for p in out.iterdir()} == FILES  # what the device tool brings back: 8 files, no folders
    text = (out / "summary.md").read_text()
    assert "result: all steps passed" in text
    rows = summary_rows(text)
    assert list(rows) == list(STEPS)
    for step, (status, seconds, _detail) in rows.items():
        assert status == "passed", (step, status)
        assert int(seconds) >= 0
    assert "5 passed" in rows["b. tests"][2]  # every test of tests/test_cuda.py ran (on the CPU), none skipped


def test_the_benchmark_measured_the_reference_ours_and_batched(dry_run):
    out = dry_run[1]
    df = pd.read_parquet(out / "bench.parquet")
    got = sorted((r.preset, r.system, r.mode, int(r.streams)) for r in df.itertuples())
    assert got == sorted((p, *row) for p in PRESETS for row in [
        ("reference", "single", 1), ("samstream", "single", 1), ("samstream", "batched", 1),
        ("samstream", "batched", 2)])
    assert (df.device == "cpu").all() and (df.image_size == 128).all()
    assert all(math.isfinite(v) and v > 0 for v in df.frames_per_s)
    ours = df[df.system == "samstream"]
    assert all(math.isfinite(v) and v > 0 for v in ours.speedup_vs_reference)  # against the same run's reference
    text = (out / "bench.md").read_text()
    assert text.count("| reference single |") == 2 and "## Problems" not in text


def test_the_training_run_logged_finite_losses(dry_run):
    out = dry_run[1]
    records = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2]
    assert all(math.isfinite(r["loss"]) and r["loss"] > 0 for r in steps)
    assert "done: step 2" in (out / "train.log").read_text()


def test_a_failed_step_is_reported_and_the_next_ones_still_run(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path), PYTHON=sys.executable, PRESETS="no-such-model", T_TESTS="1")
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--dry-run"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stdout[-4000:]
    text = (tmp_path / "summary.md").read_text()
    assert "result: FAILED: b. tests, c. bench no-such-model" in text
    rows = summary_rows(text)
    assert [s[0] for s in rows.values()] == ["passed", "timed out", "failed (exit 1)", "passed"]
    assert "unknown preset 'no-such-model'" in (tmp_path / "bench.log").read_text()
    assert (tmp_path / "train.jsonl").exists()  # the step after the failed ones ran
