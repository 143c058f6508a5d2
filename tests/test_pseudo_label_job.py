"""The pseudo-label job end to end on real components: synthetic videos encoded with PyAV and no prompts, a
Ray cluster, long videos cut into segments on several actors and stitched, tracks.parquet and masklets read
back by independent readers, a killed actor and a killed driver, bad input."""

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pytest

from cluster.config import PseudoLabelConfig
from tests.corpus import REPO, run, run_killing_an_actor
from tests.encoded_videos import truncate_file
from workers.masklets import decode_rle
from workers.output import read_masklets
from model.synthetic import SyntheticConfig
from workers.synthetic_corpus import write_corpus

SEGMENTS = PseudoLabelConfig(segment_frames=40, overlap=8)  # 96 frames -> 3 segments of 38 / 38 / 36
CHUNK = 16


# An easy scene on purpose, for the test that follows one true object through every segment: large objects
# always in view, of the families the shipped weights were trained on (the generator's first four shapes and
# five textures, scenery, wandering), no look-alikes, lighting or blur. That test is about ids through
# stitching; how well the model segments harder scenes is for the benchmarks (benchmarks/pseudo_label_recall.py).
EASY = dict(object_radius=(0.12, 0.2), distractor_prob=0.0, max_clutter=0, gain_drift=0.0, light_prob=0.0,
            blur_prob=0.0, families=("shape:ellipse", "shape:polygon", "shape:star", "shape:blob", "texture:flat",
                                     "texture:stripes", "texture:checker", "texture:dots", "texture:noise",
                                     "background:scenery", "motion:wander"))


def unprompted_corpus(folder: Path, lengths: list[int], prompted: int | None = None, **scene) -> Path:
    """Synthetic test-split videos (128 x 128) without disappearances, prompts dropped except those of video
    `prompted`; `scene`: further SyntheticConfig fields."""
    rows = []
    for i, n in enumerate(lengths):
        cfg = SyntheticConfig(height=128, width=128, num_frames=n, event_prob=0.0, cross_prob=0.0, **scene)
        manifest = write_corpus(folder / f"c{i}", "test", 1, cfg, prompt_kind="mask", start=i)
        row = json.loads(manifest.read_text().splitlines()[0])
        row["video_id"] = f"v{i}"
        if i != prompted:
            row.pop("prompts")
        rows.append(row)
    path = folder / "manifest.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def label(manifest, out, **kw):
    return run(manifest, str(out), chunk_frames=CHUNK, pseudo_label=SEGMENTS, streams_per_actor=1, **kw)


def table(out) -> pd.DataFrame:
    t = read_masklets(str(out)).to_pandas()
    return t.sort_values(["video_id", "object_id", "frame_index"]).reset_index(drop=True)


def tracks(out) -> pd.DataFrame:
    return pd.read_parquet(Path(out) / "tracks.parquet").sort_values(["video_id", "object_id"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def calm(tmp_path_factory, ray_cluster):
    folder = tmp_path_factory.mktemp("pseudo")
    manifest = unprompted_corpus(folder, [96, 40])
    summary = label(manifest, folder / "calm", actors=1)
    return manifest, folder / "calm", summary


def test_every_row_once_and_tracks_agree_with_masklets(calm):
    manifest, out, summary = calm
    assert summary.videos_ok == 2 and (out / "_SUCCESS").exists()
    rows = table(out)
    assert len(rows) and not rows.duplicated(["video_id", "object_id", "frame_index"]).any()
    tr = tracks(out)
    per_id = duckdb.sql(f"""select video_id, object_id, min(frame_index) first, max(frame_index) last,
                                   count(*) n, sum(visible::int) vis
                            from read_parquet('{out}/masklets/*/*.parquet', hive_partitioning=true)
                            group by 1, 2 order by 1, 2""").df()
    assert list(zip(tr.video_id, tr.object_id)) == list(zip(per_id.video_id, per_id.object_id))
    assert (tr.first_frame.values == per_id["first"].values).all() and (tr.last_frame.values == per_id["last"].values).all()
    assert (tr.frames.values == per_id.n.values).all() and (tr.frames_visible.values == per_id.vis.values).all()
    long = tr[tr.video_id == "v0"]
    assert {s for segs in long.segments for s in segs} <= {0, 1, 2}
    assert (tr[tr.video_id == "v1"].segments.map(list) == pd.Series([[0]] * (tr.video_id == "v1").sum(),
                                                                    index=tr.index[tr.video_id == "v1"])).all()
    assert not (out / "_state").exists()
    videos = ds.dataset(str(out / "videos.parquet")).to_table().to_pandas().set_index("video_id")
    assert videos.loc["v0", "objects"] == len(long)


def test_the_same_ids_whatever_the_actor_count(calm, tmp_path):
    manifest, out, _ = calm
    again = label(manifest, tmp_path / "two", actors=2)
    assert again.videos_ok == 2
    assert table(tmp_path / "two").equals(table(out))
    assert tracks(tmp_path / "two").equals(tracks(out))


def test_a_killed_actor_leaves_the_same_output(calm, tmp_path):
    manifest, out, _ = calm
    chaos = tmp_path / "chaos"
    summary = run_killing_an_actor(lambda: label(manifest, chaos, actors=1), chaos)
    assert summary.videos_ok == 2 and summary.actor_replacements >= 1
    assert table(chaos).equals(table(out)) and tracks(chaos).equals(tracks(out))


def job(manifest, out, address, *extra, wait=True):
    cmd = [sys.executable, "-m", "jobs.pseudo_label", "--manifest", str(manifest), "--out", str(out),
           "--no-progress", "--address", address, "--chunk-frames", str(CHUNK), "--segment-frames",
           str(SEGMENTS.segment_frames), "--overlap", str(SEGMENTS.overlap), "--streams-per-actor", "1", *extra]
    if not wait:
        return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)


def test_a_killed_driver_resumes_to_the_same_output(calm, tmp_path, ray_cluster):
    manifest, out, _ = calm
    resumed = tmp_path / "resumed"
    driver = job(manifest, resumed, ray_cluster["address"], "--actors", "1", wait=False)
    deadline = time.time() + 300
    while len(list(resumed.glob("masklets/*/part-*.parquet"))) < 4 and time.time() < deadline:
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    assert not (resumed / "_SUCCESS").exists()
    again = job(manifest, resumed, ray_cluster["address"])
    assert again.returncode == 0, again.stderr[-3000:]
    assert "samstream pseudo-label: 2 videos ok" in again.stdout
    record = json.loads((resumed / "_run.json").read_text())
    assert record["chunks_skipped"] >= 3
    assert table(resumed).equals(table(out)) and tracks(resumed).equals(tracks(out))


def test_given_objects_keep_their_ids_and_discoveries_follow(tmp_path):
    """Mask prompts on the first segment only: later segments discover the objects anew, and stitching carries
    the user's id on. The object followed is the truth's largest one visible on every frame: it crosses all 3
    segments."""
    manifest = unprompted_corpus(tmp_path, [96], prompted=0, **EASY)
    prompts = json.loads(manifest.read_text())["prompts"]
    given = {p["object_id"] for p in prompts}
    summary = label(manifest, tmp_path / "out", actors=1)
    assert summary.videos_ok == 1
    tr = tracks(tmp_path / "out")
    assert set(tr.object_id[tr.given]) == given
    assert (tr.object_id[~tr.given] > max(given)).all()
    rows = table(tmp_path / "out").set_index(["object_id", "frame_index"])
    truth = read_masklets(str(tmp_path / "c0" / "truth")).to_pandas().set_index(["object_id", "frame_index"])
    for p in prompts:  # a mask prompt gives the object's mask on its frame (through the 32 x 32 decoder grid)
        key = (p["object_id"], p["frame_index"])
        assert rows.loc[key, "is_prompt"]
        ours, true = (decode_rle(t.loc[key, "mask_rle"], 128, 128) for t in (rows, truth))
        assert (ours & true).sum() / (ours | true).sum() > 0.8, key
    areas = truth.assign(area=truth.mask_rle.map(lambda r: decode_rle(r, 128, 128).sum())).area.unstack(0)
    always = areas.columns[(areas > 0).all()]
    assert len(always), areas.min()
    followed = int(areas[always].min().idxmax())
    crossing = tr.set_index("object_id").loc[followed]
    assert list(crossing.segments) == [0, 1, 2] and crossing.first_frame == 0 and crossing.last_frame == 95
    ious = []
    for f in range(96):  # the one id follows the true object through every segment
        ours, true = (decode_rle(t.loc[(followed, f), "mask_rle"], 128, 128) for t in (rows, truth))
        ious.append((ours & true).sum() / max((ours | true).sum(), 1))
    assert min(ious) > 0.5, np.round(ious, 2)


def test_a_broken_long_video_fails_alone(calm, tmp_path, ray_cluster):
    """A video cut short mid-file: the segment that reaches the cut fails, so the whole video is recorded
    failed and leaves no part of any segment; the other video is as in an undisturbed run."""
    manifest, out, _ = calm
    rows = [json.loads(line) for line in Path(manifest).read_text().splitlines()]
    cut = truncate_file(shutil.copy(rows[0]["url"], tmp_path / "cut.mp4"), 0.6)
    bad = tmp_path / "m.jsonl"
    bad.write_text(json.dumps({"url": str(cut), "video_id": "cut"}) + "\n" + json.dumps(rows[1]) + "\n")
    proc = job(bad, tmp_path / "out", ray_cluster["address"])
    assert proc.returncode == 2, proc.stderr[-3000:]
    videos = ds.dataset(str(tmp_path / "out" / "videos.parquet")).to_table().to_pandas().set_index("video_id")
    assert videos.status["cut"] == "failed" and "cut.mp4" in videos.error["cut"], videos.error["cut"]
    assert videos.status["v1"] == "ok" and (tmp_path / "out" / "_SUCCESS").exists()
    assert not (tmp_path / "out" / "masklets" / "video_id=cut").exists()
    ours, calm_rows = table(tmp_path / "out"), table(out)
    assert ours.equals(calm_rows[calm_rows.video_id == "v1"].reset_index(drop=True))
    assert set(tracks(tmp_path / "out").video_id) == {"v1"}


@pytest.mark.parametrize("args, named", [
    (["--segment-frames", "40", "--overlap", "40"], "overlap"), (["--stitch-iou", "1.5"], "stitch_iou"), (["--keyframe-every", "0"], "keyframe_every"),
    (["--pred-iou-thresh", "2"], "pred_iou_thresh"), (["--max-objects", "0"], "max_objects")])
def test_bad_arguments_exit_1_with_one_line(tmp_path, args, named):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"url": str(tmp_path / "x.mp4"), "video_id": "x"}) + "\n")
    proc = subprocess.run([sys.executable, "-m", "jobs.pseudo_label", "--manifest", str(manifest), "--out",
                           str(tmp_path / "out"), *args], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0], proc.stderr
    assert not (tmp_path / "out").exists()


def test_resuming_a_segment_output_as_pseudo_labels_is_refused(tmp_path, ray_cluster):
    from tests.corpus import make_corpus
    manifest = make_corpus(tmp_path, [8])
    assert run(manifest, str(tmp_path / "out"), chunk_frames=CHUNK).videos_ok == 1
    proc = job(manifest, tmp_path / "out", ray_cluster["address"])
    assert proc.returncode == 1 and "was started with job segment, not pseudo_label" in proc.stderr, proc.stderr


def test_resuming_with_other_discovery_settings_is_refused(tmp_path, ray_cluster):
    """Discovery decides which tracks a segment has: an output's segments must all be discovered alike."""
    from tests.corpus import make_corpus
    manifest = make_corpus(tmp_path, [8])
    first = job(manifest, tmp_path / "out", ray_cluster["address"])
    assert first.returncode == 0, first.stderr
    for extra, words in ((["--keyframe-every", "8"], "started with --keyframe-every 16, not 8"),
                         (["--pred-iou-thresh", "0.5"], "started with --pred-iou-thresh None, not 0.5")):
        again = job(manifest, tmp_path / "out", ray_cluster["address"], *extra)
        assert again.returncode == 1 and words in again.stderr, (extra, again.stderr)
    same = job(manifest, tmp_path / "out", ray_cluster["address"], "--points-per-batch", "16")
    assert same.returncode == 0, same.stderr  # batching changes no result: resumed
