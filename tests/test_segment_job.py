"""The segment job end to end on real components: PyAV-encoded videos, a Ray cluster, Parquet read back by
independent readers, S3 on loopback, killed actors and drivers, bad input."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.dataset as ds
import s3fs
import torch

from model import Prompt, StreamingTracker, embedded_checkpoint, load_model
from tests.corpus import H, REPO, W, make_corpus, prompts_json, run, run_killing_an_actor, sorted_table
from tests.encoded_videos import truncate_file, write_video, write_video_without_frames
from tests.videos import moving_shapes
from workers.masklets import MASKLET_PARTITIONING, decode_rle
from workers.video_source import VideoSource, probe_video

def direct_masks(url: str, prompts: list[dict]) -> dict:
    """(frame, object) -> mask from the StreamingTracker run directly on the decoded video."""
    torch.manual_seed(0)  # the workers seed their random weights the same way
    tracker = StreamingTracker(load_model("synthetic-tiny", embedded_checkpoint("synthetic-tiny")))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the actors run it: CPU kernels round differently per thread count
    try:
        return _track(tracker, url, prompts)
    finally:
        torch.set_num_threads(threads)


def _track(tracker, url: str, prompts: list[dict]) -> dict:
    info = probe_video(url)
    state = tracker.new_stream(info.height, info.width)
    out = {}
    first = [Prompt(p["object_id"], points=p.get("points"), labels=p.get("labels"), box=p.get("box"))
             for p in prompts]
    for t, frame in enumerate(VideoSource(info).frames(0, info.num_frames)):
        result = tracker.step(state, frame, first if t == 0 else ())
        for oid in result.object_ids:
            out[(t, oid)] = result[oid].mask.numpy()
    return out


def assert_matches_direct(table, video_id: str, url: str, prompts: list[dict]) -> None:
    expected = direct_masks(url, prompts)
    rows = table[table.video_id == video_id]
    assert len(rows) == len(expected) and not rows.duplicated(["object_id", "frame_index"]).any()
    for r in rows.itertuples():
        mask = decode_rle(r.mask_rle, r.height, r.width)
        assert np.array_equal(mask, expected[(r.frame_index, r.object_id)]), (r.frame_index, r.object_id)


def test_chunk_size_does_not_change_the_result(tmp_path, ray_cluster):
    manifest = make_corpus(tmp_path, [150])
    tables = {}
    for chunk in (7, 64, 150):
        summary = run(manifest, str(tmp_path / f"out{chunk}"), chunk_frames=chunk, actors=1)
        assert summary.videos_failed == 0 and summary.chunks_total == -(-150 // chunk)
        tables[chunk] = sorted_table(str(tmp_path / f"out{chunk}"))
    assert len(tables[7]) == 3 * 150
    for chunk in (64, 150):
        assert tables[chunk].equals(tables[7]), f"chunk size {chunk} differs from chunk size 7"
    assert_matches_direct(tables[7], "v0", str(tmp_path / "v0.mp4"), prompts_json(0))
    assert not (tmp_path / "out7" / "_state").exists() and (tmp_path / "out7" / "_SUCCESS").exists()


def test_actor_count_does_not_change_the_result(tmp_path, ray_cluster):
    manifest = make_corpus(tmp_path, [40, 25, 33, 18, 47, 29])
    # Streams stepped alone (the CPU default): batching different streams together changes float
    # rounding, so only unbatched runs are bit-identical across actor counts.
    one = run(manifest, str(tmp_path / "one"), chunk_frames=16, actors=1, streams_per_actor=1)
    three = run(manifest, str(tmp_path / "three"), chunk_frames=16, streams_per_actor=1)  # 3 logical GPUs
    assert one.videos_ok == three.videos_ok == 6
    a, b = sorted_table(str(tmp_path / "one")), sorted_table(str(tmp_path / "three"))
    assert len(a) == 3 * sum([40, 25, 33, 18, 47, 29]) and a.equals(b)


def _submit(cmd: list[str], client, job_id: str, attempts: int = 3):
    """Run `ray job submit`; (its process, the job's final status). A submission the dashboard never recorded
    (seen twice in full-suite runs on a loaded 2-core machine: the job then "does not exist") is sent again,
    up to `attempts` times; a job that was created is never resubmitted, so its outcome is what is tested."""
    for attempt in range(1, attempts + 1):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        try:
            return proc, client.get_job_status(job_id)
        except RuntimeError as e:
            if "does not exist" not in str(e) or attempt == attempts:
                raise AssertionError(f"ray job submit (attempt {attempt}) created no job {job_id}: exit "
                                     f"{proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}") from e
            print(f"ray job submit attempt {attempt} created no job (exit {proc.returncode}): "
                  f"{proc.stderr.strip()[-1500:]}")


def test_ray_job_submit(tmp_path, ray_cluster):
    from ray.job_submission import JobStatus, JobSubmissionClient

    manifest = make_corpus(tmp_path, [30, 20])
    out = tmp_path / "out"
    cmd = [str(Path(sys.executable).parent / "ray"), "job", "submit", "--address", ray_cluster["dashboard"],
           "--submission-id", f"segment-{os.getpid()}", "--working-dir", str(REPO),
           "--runtime-env-json", json.dumps({"excludes": [".venv", ".git", "*.pt", "out"]}), "--",
           sys.executable, "-m", "jobs.segment", "--manifest", str(manifest), "--out", str(out),
           "--chunk-frames", "8", "--no-progress"]
    proc, status = _submit(cmd, JobSubmissionClient(ray_cluster["dashboard"]), f"segment-{os.getpid()}")
    assert status == JobStatus.SUCCEEDED, proc.stdout[-3000:] + proc.stderr[-3000:]
    dataset = ds.dataset(str(out / "masklets"), format="parquet", partitioning=MASKLET_PARTITIONING)
    table = dataset.to_table().to_pandas().sort_values(["video_id", "object_id", "frame_index"])
    assert len(table) == 3 * (30 + 20) and not table.duplicated(["video_id", "object_id", "frame_index"]).any()
    counts = duckdb.sql(f"SELECT video_id, count(*) AS n FROM read_parquet('{out}/masklets/*/*.parquet', "
                        "hive_partitioning=true) GROUP BY video_id ORDER BY video_id").fetchall()
    assert counts == [("v0", 90), ("v1", 60)]
    assert_matches_direct(table, "v1", str(tmp_path / "v1.mp4"), prompts_json(1))
    videos = ds.dataset(str(out / "videos.parquet")).to_table().to_pandas()
    assert list(videos.status) == ["ok", "ok"] and (videos.seconds > 0).all()


def test_s3_input_and_output(tmp_path, ray_cluster, s3_server):
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    fs.mkdir("corpus")
    manifest = make_corpus(tmp_path, [24, 17])
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    for r in rows:
        fs.put(r["url"], f"corpus/{Path(r['url']).name}")
        r["url"] = f"s3://corpus/{Path(r['url']).name}"
    fs.pipe("corpus/manifest.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode())
    # The actors do not share this process's environment: credentials travel as storage options.
    options = {"key": "testing", "secret": "s3cr3t-value", "client_kwargs": {"endpoint_url": s3_server}}
    summary = run("s3://corpus/manifest.jsonl", "s3://corpus/out", chunk_frames=10, storage_options=options)
    assert summary.videos_ok == 2
    table = sorted_table("s3://corpus/out", options)
    assert len(table) == 3 * (24 + 17)
    assert_matches_direct(table, "v1", str(tmp_path / "v1.mp4"), prompts_json(1))
    assert fs.exists("corpus/out/_SUCCESS") and not fs.exists("corpus/out/_state")
    assert b"s3cr3t-value" not in fs.cat("corpus/out/_run.json")


def test_killed_actor_is_replaced_and_output_unchanged(tmp_path, ray_cluster):
    manifest = make_corpus(tmp_path, [120, 90])
    baseline = run(manifest, str(tmp_path / "calm"), chunk_frames=8, actors=1)
    out = tmp_path / "chaos"
    summary = run_killing_an_actor(lambda: run(manifest, str(out), chunk_frames=8, actors=1), out)
    assert summary.videos_ok == 2 and summary.actor_replacements >= 1
    assert baseline.actor_replacements == 0
    assert sorted_table(str(out)).equals(sorted_table(str(tmp_path / "calm")))


def test_killed_driver_resumes_only_missing_chunks(tmp_path, ray_cluster):
    manifest = make_corpus(tmp_path, [96, 64])
    calm = run(manifest, str(tmp_path / "calm"), chunk_frames=8, actors=1)
    out = tmp_path / "resumed"
    cmd = [sys.executable, "-m", "jobs.segment", "--manifest", str(manifest), "--out", str(out),
           "--chunk-frames", "8", "--actors", "1", "--no-progress", "--address", ray_cluster["address"]]
    driver = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while len(list(out.glob("masklets/*/part-*.parquet"))) < 4 and time.time() < deadline:
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    assert not (out / "_SUCCESS").exists()
    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    record = json.loads((out / "_run.json").read_text())
    assert record["chunks_skipped"] >= 3 and record["chunks_computed"] < record["chunks_total"] == 20
    assert record["chunks_skipped"] + record["chunks_computed"] == 20
    assert sorted_table(str(out)).equals(sorted_table(str(tmp_path / "calm")))
    assert calm.chunks_computed == 20


def test_bad_videos_fail_alone(tmp_path, ray_cluster):
    manifest = make_corpus(tmp_path, [20, 12])
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    truncated = truncate_file(write_video(tmp_path / "cut.mp4", moving_shapes(60, H, W, seed=3)), 0.5)
    (tmp_path / "text.mp4").write_text("this is not a video\n")
    empty = write_video_without_frames(tmp_path / "empty.mp4")
    good_prompts = prompts_json(0)
    rows += [
        {"url": str(truncated), "video_id": "truncated", "prompts": good_prompts},
        {"url": str(tmp_path / "text.mp4"), "video_id": "text", "prompts": good_prompts},
        {"url": str(tmp_path / "missing.mp4"), "video_id": "missing", "prompts": good_prompts},
        {"url": str(empty), "video_id": "empty", "prompts": good_prompts},
        {"url": rows[0]["url"], "video_id": "outside", "prompts": [{"object_id": 1, "points": [[500, 5]], "labels": [1]}]},
        {"url": rows[1]["url"], "video_id": "late", "prompts": [{"object_id": 1, "frame_index": 12, "box": [1, 1, 9, 9]}]},
    ]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "jobs.segment", "--manifest", str(manifest), "--out", str(out),
                           "--chunk-frames", "8", "--no-progress", "--address", ray_cluster["address"]],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr[-3000:]
    videos = ds.dataset(str(out / "videos.parquet")).to_table().to_pandas().set_index("video_id")
    assert list(videos.status[["v0", "v1"]]) == ["ok", "ok"]
    expected = {"truncated": "cut.mp4", "text": "text.mp4", "missing": "missing.mp4", "empty": "empty.mp4",
                "outside": "outside the frame", "late": "frame_index 12"}
    for vid, words in expected.items():
        assert videos.status[vid] == "failed" and words in videos.error[vid], (vid, videos.error[vid])
    table = sorted_table(str(out))
    assert set(table.video_id) == {"v0", "v1"}  # failed videos leave no partial masklets
    assert len(table[table.video_id.isin(["v0", "v1"])]) == 3 * (20 + 12)
    assert (out / "_SUCCESS").exists()


def test_malformed_manifest_exits_1_naming_the_row(tmp_path):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"url": "a.mp4"}) + "\n" + '{"url": "b.mp4", "prompts": [{"object_id": "x"}]}\n')
    proc = subprocess.run([sys.executable, "-m", "jobs.segment", "--manifest", str(manifest), "--out",
                           str(tmp_path / "out")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "row 1" in proc.stderr and "object_id" in proc.stderr, proc.stderr
    assert not (tmp_path / "out").exists()
    for bad in (["--chunk-frames", "0"], ["--preset", "sam3-huge"], ["--bogus"]):
        proc = subprocess.run([sys.executable, "-m", "jobs.segment", "--manifest", str(manifest), "--out",
                               str(tmp_path / "out"), *bad], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 1 and (bad[0] != "--preset" or "sam3-huge" in proc.stderr), (bad, proc.stderr)


def test_resuming_with_another_chunk_size_model_or_memory_policy_is_refused(tmp_path, ray_cluster):
    """Parts are named by chunk; and all of an output's masks (and the snapshots a resume starts from) must come
    from one model and memory policy. A refused rerun leaves the output as it was."""
    manifest = make_corpus(tmp_path, [10])
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "jobs.segment", "--manifest", str(manifest), "--out", str(out),
           "--no-progress", "--address", ray_cluster["address"], "--chunk-frames", "4"]
    assert subprocess.run(cmd, cwd=REPO, capture_output=True, timeout=300).returncode == 0
    before = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file() and "_claim" not in p.parts}
    sha = json.loads((out / "_run.json").read_text())["checkpoint_sha256"]
    for extra, words in ((["--chunk-frames", "5"], "started with --chunk-frames 4, not 5"),
                         (["--num-recent", "8"], "memory policy default, not num_recent=8: resume with --memory-policy default"),
                         (["--int8-memory"], "started with memory policy default, not int8=true"),
                         (["--checkpoint", "random"], f"started with weights of sha256 {sha}, not random")):
        again = subprocess.run(cmd + extra, cwd=REPO, capture_output=True, text=True, timeout=300)
        assert again.returncode == 1 and words in again.stderr, (extra, again.stderr)
    after = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file() and "_claim" not in p.parts}
    assert after == before and (out / "_SUCCESS").exists()
    same = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert same.returncode == 0 and '"chunks_skipped": 3' in same.stdout, same.stdout + same.stderr


def test_times_are_presentation_times_and_prompts_are_checked_once(tmp_path, ray_cluster):
    """A variable-frame-rate video gets its pts as time_s (also in chunks read after a seek); a video without
    prompts is ok with 0 objects and no model run; a box reaching past the frame is clipped and noted; one
    entirely outside fails its video."""
    from tests.encoded_videos import write_variable_rate_video

    gaps = np.resize([40, 40, 33, 100, 40, 250, 20, 1000, 67, 40], 19)  # ms, irregular, with a pause
    pts_ms = np.concatenate([[0], np.cumsum(gaps)])
    vfr = write_variable_rate_video(tmp_path / "vfr.mp4", moving_shapes(20, H, W, seed=4), pts_ms)
    rows = [{"url": vfr, "video_id": "vfr", "prompts": prompts_json(0)},
            {"url": vfr, "video_id": "unprompted", "prompts": []},
            {"url": vfr, "video_id": "clipped", "prompts": [{"object_id": 1, "box": [-10, 20, 40, H + 30]}]},
            {"url": vfr, "video_id": "outside", "prompts": [{"object_id": 1, "box": [W + 1, 1, W + 9, 9]}]}]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = run(manifest, str(tmp_path / "out"), chunk_frames=6)
    table = sorted_table(str(tmp_path / "out"))
    vfr_rows = table[table.video_id == "vfr"]
    np.testing.assert_allclose(vfr_rows.groupby("frame_index").time_s.first().to_numpy(), pts_ms / 1000, atol=1e-9)
    videos = ds.dataset(str(tmp_path / "out" / "videos.parquet")).to_table().to_pandas().set_index("video_id")
    assert videos.status["unprompted"] == "ok" and videos.objects["unprompted"] == 0
    assert "no prompts" in videos.note["unprompted"] and "unprompted" not in set(table.video_id)
    assert videos.status["clipped"] == "ok" and "clipped to [0, 20, 40, 72]" in videos.note["clipped"]
    assert len(table[table.video_id == "clipped"]) == 20
    assert videos.status["outside"] == "failed" and "outside" in videos.error["outside"]
    assert summary.videos_failed == 1 and summary.notes.keys() == {"unprompted", "clipped"}
