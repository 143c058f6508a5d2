"""The segment job under the faults users meet, on real components: an object store that answers 5xx (a fault
proxy of our own in front of moto), a full disk (a small tmpfs), a blocked path, parts lost during and after a
run, two drivers on one output, a killed driver, SIGINT / SIGTERM, bad checkpoints. Every case ends with every
(video, object, frame) row exactly once, or with the failure recorded; never _SUCCESS over missing rows."""

import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.dataset as ds
import pytest
import s3fs

from model import MemoryPolicy, StreamingTracker, embedded_checkpoint, load_model
from tests.corpus import H, REPO, W, make_corpus, sorted_table
from tests.corpus import run as run_any
from tests.fault_proxy import FaultProxy, FaultRule
from workers.output import RunOutput


def run(manifest, out: str, **kw):
    """An in-process run, streams stepped alone: bit-identical whatever the schedule (README, Determinism)."""
    return run_any(manifest, out, streams_per_actor=1, **kw)


def job(manifest, out, address: str, *extra: str, wait: bool = True, timeout: float = 600):
    cmd = [sys.executable, "-m", "jobs.segment", "--manifest", str(manifest), "--out", str(out), "--no-progress",
           "--address", address, "--retry-backoff", "0.2", "--streams-per-actor", "1", *extra]
    if not wait:
        return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def videos(out: Path | str, fs=None) -> dict:
    table = ds.dataset(str(out), filesystem=fs, format="parquet").to_table().to_pylist()
    return {r["video_id"]: r for r in table}


def wait_for_parts(out: Path, n: int, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while len(list(out.glob("masklets/*/part-*.parquet"))) < n:
        assert time.time() < deadline, f"fewer than {n} parts appeared in {out}"
        time.sleep(0.05)


def assert_complete(out, calm, options=None) -> None:
    """The output equals the undisturbed run's, row for row, and holds no (video, object, frame) twice."""
    table = sorted_table(str(out), options)
    assert not table.duplicated(["video_id", "object_id", "frame_index"]).any()
    assert table.equals(sorted_table(str(calm))), "output differs from the undisturbed run"


@pytest.fixture
def corpus(tmp_path, ray_cluster):
    """Two short videos and their undisturbed output (chunks of 6 frames)."""
    manifest = make_corpus(tmp_path, [24, 17])
    calm = tmp_path / "calm"
    assert run(manifest, str(calm), chunk_frames=6).videos_ok == 2
    return manifest, calm


def test_flaky_object_store_gives_the_undisturbed_output(tmp_path, corpus, s3_server):
    manifest, calm = corpus
    s3fs.S3FileSystem(skip_instance_cache=True).mkdir("flaky")
    with FaultProxy(s3_server, error_rate=0.2, seed=3, max_seconds=500) as proxy:
        options = {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": proxy.url}}
        summary = run(manifest, "s3://flaky/out", chunk_frames=6, storage_options=options, retry_backoff_s=0.1)
        faults = proxy.faults_injected
    assert faults > 10 and summary.videos_ok == 2, (faults, summary.errors)
    direct = {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": s3_server}}
    assert_complete("s3://flaky/out", calm, direct)
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    assert fs.exists("flaky/out/_SUCCESS") and not fs.exists("flaky/out/_state")


def test_a_put_that_always_fails_fails_its_video_alone(tmp_path, corpus, ray_cluster, s3_server):
    manifest, calm = corpus
    s3fs.S3FileSystem(skip_instance_cache=True).mkdir("denied")
    rule = FaultRule(method="PUT", path_regex=r"video_id(=|%3D)v1/part-", status=500)
    with FaultProxy(s3_server, rules=[rule], max_seconds=500) as proxy:
        options = json.dumps({"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": proxy.url},
                              "config_kwargs": {"retries": {"max_attempts": 2}}})
        proc = job(manifest, "s3://denied/out", ray_cluster["address"], "--chunk-frames", "6", "--max-retries", "2",
                   "--storage-options", options)
    assert proc.returncode == 2, proc.stderr[-3000:]
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    rows = videos("denied/out/videos.parquet", fs)
    assert rows["v0"]["status"] == "ok" and rows["v1"]["status"] == "failed"
    assert "video_id=v1" in rows["v1"]["error"] and "gave up after 3 attempts" in rows["v1"]["error"]
    assert "Unserializable" not in proc.stdout + proc.stderr and "Traceback" not in proc.stderr
    table = sorted_table("s3://denied/out", {"client_kwargs": {"endpoint_url": s3_server}})
    assert set(table.video_id) == {"v0"}
    assert table.equals(sorted_table(str(calm)).query("video_id == 'v0'").reset_index(drop=True))


def test_a_blocked_partition_path_fails_its_video_alone(tmp_path, corpus, ray_cluster):
    manifest, calm = corpus
    out = tmp_path / "blocked"
    (out / "masklets").mkdir(parents=True)
    (out / "masklets" / "video_id=v1").write_text("a file where the partition folder should be")
    proc = job(manifest, out, ray_cluster["address"], "--chunk-frames", "6", "--max-retries", "1")
    assert proc.returncode == 2, proc.stderr[-3000:]
    rows = videos(out / "videos.parquet")
    assert rows["v0"]["status"] == "ok" and rows["v1"]["status"] == "failed"
    assert "video_id=v1" in rows["v1"]["error"] and "\n" not in rows["v1"]["error"]
    assert "Unserializable" not in proc.stdout + proc.stderr + rows["v1"]["error"]
    assert sorted_table(str(out)).equals(sorted_table(str(calm)).query("video_id == 'v0'").reset_index(drop=True))


def test_a_full_disk_is_recorded(tmp_path, ray_cluster):
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("mount is not allowed here (the worker side of ENOSPC is tested in test_errors.py)")
    try:
        manifest = make_corpus(tmp_path, [30])
        (disk / "filler").write_bytes(b"\0" * (1024 * 1024 - 96 * 1024))  # leaves room for parts, not snapshots
        proc = job(manifest, disk / "out", ray_cluster["address"], "--chunk-frames", "6", "--max-retries", "1")
        assert proc.returncode == 2, proc.stderr[-3000:]
        row = videos(disk / "out" / "videos.parquet")["v0"]
        assert row["status"] == "failed" and "No space left on device" in row["error"], row
        assert "Unserializable" not in proc.stdout + proc.stderr + row["error"]
        assert not list((disk / "out").glob("masklets/*/*")) and not (disk / "out" / "_state").exists()
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_bad_checkpoints_and_presets_fail_before_any_work(tmp_path):
    manifest = make_corpus(tmp_path, [4])
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes(Path(embedded_checkpoint("synthetic-tiny")).read_bytes()[:50_000])
    cases = {  # an unreachable Ray address: reaching for Ray would fail otherwise
        "other preset": (["--preset", "sam2.1-tiny", "--checkpoint", embedded_checkpoint("synthetic-tiny")],
                         "does not fit preset 'sam2.1-tiny'"),
        "truncated": (["--checkpoint", str(truncated)], "cut.safetensors"),
        "misspelled preset": (["--preset", "sam2.1-tinny"], "unknown preset 'sam2.1-tinny'"),
    }
    for name, (extra, words) in cases.items():
        proc = job(manifest, tmp_path / "out", "127.0.0.1:9", *extra, timeout=120)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 1 and len(lines) == 1 and words in lines[0], (name, proc.stderr)
        assert not (tmp_path / "out").exists(), name


def test_parts_lost_after_a_run_are_recomputed(tmp_path, corpus):
    manifest, calm = corpus
    out = tmp_path / "out"
    shutil.copytree(calm, out)
    (out / "_SUCCESS").unlink()
    for part in sorted(out.glob("masklets/video_id=v0/part-*.parquet"))[1:3]:
        part.unlink()  # chunks 1 and 2 of v0: no snapshot is kept, so from the stream's start
    foreign = out / "masklets" / "video_id=v1" / "part-00007-000000.parquet"  # another plan's (stream 7)
    shutil.copy(out / "masklets" / "video_id=v1" / "part-00001-000000.parquet", foreign)
    summary = run(manifest, str(out), chunk_frames=6)
    assert summary.videos_ok == 2 and summary.chunks_computed == 3 and not foreign.exists()
    assert_complete(out, calm)
    assert (out / "_SUCCESS").exists()


@pytest.mark.parametrize("bad", ["garbage", "another policy"])
def test_a_snapshot_that_cannot_be_resumed_is_recomputed_not_failed(tmp_path, corpus, bad):
    """A snapshot that reads but cannot be resumed (corrupt, of an older version, of another model or memory
    policy) is no storage error: retrying it cannot help. The stream starts from an earlier snapshot or its
    start instead, and the video completes, with a note."""
    manifest, calm = corpus
    out = tmp_path / "out"
    shutil.copytree(calm, out)
    (out / "_SUCCESS").unlink()
    parts = sorted(out.glob("masklets/video_id=v0/part-*.parquet"))
    stream = int(parts[0].name.split("-")[1])
    parts[3].unlink()  # chunk 3 of v0 goes missing; its run would start from the snapshot after chunk 2
    data = b"not a snapshot at all" if bad == "garbage" else StreamingTracker(
        load_model("synthetic-tiny"), MemoryPolicy(num_recent=2)).new_stream(H, W, 18).to_bytes()
    RunOutput(str(out)).write_snapshot(stream, 2, data)
    summary = run(manifest, str(out), chunk_frames=6, max_retries=0)  # not even one retry is needed
    assert summary.videos_ok == 2 and summary.chunks_computed == 4, summary  # v0 from its start: chunks 0-3
    assert "snapshot before chunk 3 not resumed" in summary.notes["v0"] and "StateError" in summary.notes["v0"]
    assert_complete(out, calm)
    assert "not resumed" in videos(out / "videos.parquet")["v0"]["note"]


def test_parts_lost_during_a_run_are_recomputed(tmp_path, corpus):
    manifest, calm = corpus
    out = tmp_path / "out"
    lost = []

    def lose_first_part():
        wait_for_parts(out, 3)
        first = out / "masklets" / "video_id=v0" / "part-00000-000000.parquet"
        first.unlink()
        lost.append(first)
    thief = threading.Thread(target=lose_first_part)
    thief.start()
    summary = run(manifest, str(out), chunk_frames=6, actors=1)
    thief.join()
    assert lost and summary.videos_ok == 2 and summary.chunks_recomputed >= 1
    assert_complete(out, calm)


def test_snapshots_stay_bounded_on_a_long_stream(tmp_path, ray_cluster):
    manifest = make_corpus(tmp_path, [80])
    out = tmp_path / "out"
    seen, done = [], threading.Event()

    def watch():
        while not done.is_set():
            seen.append(len(list((out / "_state" / "00000").glob("after-*.safetensors"))))
            time.sleep(0.02)
    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        summary = run(manifest, str(out), chunk_frames=2)  # 40 chunks
    finally:
        done.set()
        watcher.join()
    assert summary.chunks_total == 40 and summary.videos_ok == 1
    assert max(seen) <= 2 and max(seen) >= 1, (max(seen), len(seen))


def _interrupt(manifest, out: Path, address: str, sig: int) -> subprocess.CompletedProcess:
    # Chunks of 1 frame (42 in all): the signal lands while many are left, also on a fast or busy machine (with
    # chunks of 6, and once under load with chunks of 2, the whole run finished between the second part and the
    # signal).
    proc = job(manifest, out, address, "--chunk-frames", "1", "--actors", "1", wait=False)
    wait_for_parts(out, len(list(out.glob("masklets/*/part-*.parquet"))) + 2)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def test_sigint_and_sigterm_stop_cleanly_and_a_rerun_completes_identically(tmp_path, corpus, ray_cluster):
    manifest, calm = corpus
    out = tmp_path / "out"
    for sig, code in ((signal.SIGINT, 130), (signal.SIGTERM, 143)):
        stopped = _interrupt(manifest, out, ray_cluster["address"], sig)
        lines = stopped.stderr.strip().splitlines()
        assert stopped.returncode == code, stopped.stderr[-3000:]
        assert len(lines) == 1 and "run the same command again to resume" in lines[0], stopped.stderr
        assert not (out / "_SUCCESS").exists()
    again = job(manifest, out, ray_cluster["address"], "--chunk-frames", "1", "--actors", "1")
    assert again.returncode == 0, again.stderr[-3000:]
    assert_complete(out, calm)  # chunk size does not change the rows (test_segment_job)


@pytest.mark.parametrize("chunks", [("6", "6"), ("6", "4")])
def test_two_drivers_on_one_output_one_runs(tmp_path, corpus, ray_cluster, chunks):
    manifest, calm = corpus
    out = tmp_path / "out"
    procs = [job(manifest, out, ray_cluster["address"], "--chunk-frames", c, wait=False) for c in chunks]
    results = [p.communicate(timeout=600) + (p.returncode,) for p in procs]
    codes = sorted(r[2] for r in results)
    assert codes == [0, 1], results
    loser = next(r for r in results if r[2] == 1)
    assert "is being written by run" in loser[1], loser[1]
    winner = chunks[[r[2] for r in results].index(0)]
    table = sorted_table(str(out))
    assert not table.duplicated(["video_id", "object_id", "frame_index"]).any() and len(table) == 3 * (24 + 17)
    assert json.loads((out / "_plan.json").read_text())["chunk_frames"] == int(winner)


def test_two_drivers_on_one_s3_output_one_runs(tmp_path, corpus, ray_cluster, s3_server):
    manifest, calm = corpus
    s3fs.S3FileSystem(skip_instance_cache=True).mkdir("race")
    options = json.dumps({"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": s3_server}})
    procs = [job(manifest, "s3://race/out", ray_cluster["address"], "--chunk-frames", c, "--storage-options",
                 options, wait=False) for c in ("6", "4")]
    results = [p.communicate(timeout=600) + (p.returncode,) for p in procs]
    assert sorted(r[2] for r in results) == [0, 1], results
    table = sorted_table("s3://race/out", json.loads(options))
    assert not table.duplicated(["video_id", "object_id", "frame_index"]).any() and len(table) == 3 * (24 + 17)


def test_a_killed_drivers_claim_is_taken_over(tmp_path, corpus, ray_cluster):
    manifest, calm = corpus
    out = tmp_path / "out"
    first = job(manifest, out, ray_cluster["address"], "--chunk-frames", "6", "--actors", "1", wait=False)
    wait_for_parts(out, 2)
    first.kill()
    first.communicate()
    # The dead driver ran on this host: its claim is taken over at once (elsewhere, after --claim-timeout).
    second = job(manifest, out, ray_cluster["address"], "--chunk-frames", "6")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "took over" in second.stdout, second.stdout
    assert_complete(out, calm)
