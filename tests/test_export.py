"""Exports (jobs/export.py): SA-V per-video JSON and YouTube-VIS JSON of a hand-built masklet output (no Ray),
read back with json.load and pycocotools and compared with the table's masks; bad input exits 1 with one line.

The output: video "cam 1/a" (an id that needs escaping), 10 frames in two parts, object 1 visible on frames
0-2 and 6-9 (it disappears and reappears) and object 2 on all; video "vid_b", 7 frames, object 5 on all,
object 9 joining at frame 3, object 4 tracked but never visible; video "vid_c" failed (no masklets).
"""

from __future__ import annotations

import json
import os
import uuid

import fsspec
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from jobs.export import main
from workers.export_sav import size_bucket, visibility_changes
from workers.masklets import ChunkRows, decode_rle, escape_video_id
from workers.output import RunOutput, read_masklets

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")

A, B, C = "cam 1/a", "vid_b", "vid_c"
SIZES = {A: (6, 8), B: (5, 7)}
FRAMES = {A: 10, B: 7}
HIDDEN_A1 = {3, 4, 5}  # object 1 of A is not visible on these frames


def _mask(obj: int, frame: int, h: int, w: int) -> np.ndarray:
    m = np.zeros((h, w), bool)
    y, x = (obj + frame) % (h - 2), (2 * obj + frame) % (w - 3)
    m[y:y + 2 + frame % 2, x:x + 3] = True
    return m


def _objects(video: str, frame: int) -> dict[int, np.ndarray]:
    """object id -> mask of a frame (empty masks: tracked, not visible)."""
    h, w = SIZES[video]
    if video == A:
        return {1: _mask(1, frame, h, w) & (frame not in HIDDEN_A1), 2: _mask(2, frame, h, w)}
    objs = {4: np.zeros((h, w), bool), 5: _mask(5, frame, h, w)}
    if frame >= 3:
        objs[9] = _mask(9, frame, h, w)
    return objs


def _part(video: str, frames: range) -> ChunkRows:
    rows = ChunkRows(video)
    for f in frames:
        objs = _objects(video, f)
        ids = sorted(objs)
        scores = [0.5 + 0.1 * i for i in range(len(ids))]
        scores[0] = 1.3  # a predicted IoU above 1: SA-V's stability score must be clipped to [0, 1]
        rows.add(f, f / 24.0, ids, np.stack([objs[i] for i in ids]), scores, [0.9] * len(ids))
    return rows


def build_output(url: str, success: bool = True) -> str:
    out = RunOutput(url)
    out.write_part(A, 0, 0, _part(A, range(0, 5)).to_table())
    out.write_part(A, 0, 1, _part(A, range(5, 10)).to_table())
    out.write_part(B, 1, 0, _part(B, range(0, 7)).to_table())
    video = {"url": "x", "error": None, "objects": 2, "seconds": 1.0, "note": None}
    out.write_videos([
        {**video, "video_id": A, "status": "ok", "frames": 10, "fps": 24.0, "width": 8, "height": 6},
        {**video, "video_id": B, "status": "ok", "frames": 7, "fps": 30.0, "width": 7, "height": 5},
        {**video, "video_id": C, "status": "failed", "error": "decode error", "frames": None, "fps": None,
         "width": None, "height": None},
    ])
    if success:
        out.write_success()
    return url


@pytest.fixture(scope="module")
def pred(tmp_path_factory) -> str:
    return build_output(str(tmp_path_factory.mktemp("run") / "out"))


@pytest.fixture(scope="module")
def table_masks(pred) -> dict:
    """(video, object, frame) -> mask, decoded from the table with workers.masklets.decode_rle."""
    masks = {}
    for video in (A, B):
        t = read_masklets(pred, video_id=video).to_pydict()
        for o, f, rle, h, w in zip(t["object_id"], t["frame_index"], t["mask_rle"], t["height"], t["width"]):
            masks[(video, o, f)] = decode_rle(rle, h, w)
    return masks


def run(capsys, *argv) -> tuple[int, str, str]:
    try:
        rc = main([*argv, "--no-progress"])
    except SystemExit as e:  # argparse's way out, for bad arguments
        rc = e.code
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def _visible(table_masks, video, obj, frame) -> bool:
    m = table_masks.get((video, obj, frame))
    return m is not None and m.any()


# ---------------------------------------------------------------------------------------------- YouTube-VIS


def _check_ytvis(data: dict, table_masks: dict, every: int) -> None:
    assert data["categories"] == [{"id": 1, "name": "object", "supercategory": "object"}]
    videos = {v["name"]: v for v in data["videos"]}
    assert sorted(videos) == [A, B]  # the failed video is not there
    for name, v in videos.items():
        frames = list(range(0, FRAMES[name], every))
        assert (v["height"], v["width"]) == SIZES[name] and v["length"] == len(frames)
        assert v["file_names"] == [f"{escape_video_id(name)}/{f:05d}.jpg" for f in frames]
    by_video = {v["id"]: v["name"] for v in data["videos"]}
    objects = sorted((by_video[a["video_id"]], a["object_id"]) for a in data["annotations"])
    assert objects == [(A, 1), (A, 2), (B, 5), (B, 9)]  # object 4 of B is never visible: left out
    assert len({a["id"] for a in data["annotations"]}) == 4
    for ann in data["annotations"]:
        video = by_video[ann["video_id"]]
        frames = range(0, FRAMES[video], every)
        assert ann["category_id"] == 1 and ann["iscrowd"] == 0 and ann["length"] == len(frames)
        assert (ann["height"], ann["width"]) == SIZES[video]
        for i, f in enumerate(frames):
            seg, area, box = ann["segmentations"][i], ann["areas"][i], ann["bboxes"][i]
            if not _visible(table_masks, video, ann["object_id"], f):
                assert seg is None and area is None and box is None
                continue
            expected = table_masks[(video, ann["object_id"], f)]
            rle = {"size": seg["size"], "counts": seg["counts"].encode()}
            np.testing.assert_array_equal(mask_utils.decode(rle).astype(bool), expected)
            assert isinstance(area, int) and area == int(expected.sum())
            assert box == pytest.approx(mask_utils.toBbox(rle).tolist())


def test_ytvis_matches_table_on_every_frame(pred, table_masks, tmp_path, capsys):
    rc, out, err = run(capsys, "--format", "ytvis", "--pred", pred, "--out", str(tmp_path / "yt"))
    assert rc == 0, err
    with open(tmp_path / "yt" / "ytvis.json") as f:
        data = json.load(f)
    _check_ytvis(data, table_masks, every=1)
    ann9 = next(a for a in data["annotations"] if a["object_id"] == 9)
    assert ann9["segmentations"][:3] == [None] * 3 and ann9["segmentations"][3] is not None  # joins at 3
    ann1 = next(a for a in data["annotations"] if a["object_id"] == 1)
    assert [s is None for s in ann1["segmentations"]] == [f in HIDDEN_A1 for f in range(10)]
    assert os.listdir(tmp_path / "yt") == ["ytvis.json"]  # no temporary left behind
    summary = out.strip().splitlines()
    assert "skipped 'vid_c': status failed" in out
    assert "2 videos, 4 objects" in summary[-1] and "ytvis.json" in summary[-1] and "1 videos skipped" in summary[-1]


def test_ytvis_every_n_lists_those_frames(pred, table_masks, tmp_path, capsys):
    rc, _, err = run(capsys, "--format", "ytvis", "--pred", pred, "--out", str(tmp_path), "--every", "3")
    assert rc == 0, err
    with open(tmp_path / "ytvis.json") as f:
        _check_ytvis(json.load(f), table_masks, every=3)


def test_ytvis_error_leaves_no_file(pred, tmp_path, capsys, monkeypatch):
    from workers import export_ytvis

    def boom(*args):
        raise OSError("disk full")

    monkeypatch.setattr(export_ytvis, "annotation", boom)
    rc, _, err = run(capsys, "--format", "ytvis", "--pred", pred, "--out", str(tmp_path))
    assert rc == 1 and "disk full" in err and len(err.strip().splitlines()) == 1
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------------------------- SA-V


def _load_sav(out_dir, video) -> dict:
    with open(os.path.join(out_dir, f"{escape_video_id(video)}_auto.json")) as f:
        return json.load(f)


def _check_sav_types(d: dict) -> None:
    assert isinstance(d["video_id"], str) and isinstance(d["video_duration"], float)
    for k in ("video_frame_count", "video_height", "video_width", "video_resolution"):
        assert isinstance(d[k], float), k  # SA-V writes these as float64
    assert isinstance(d["masklet_num"], int)
    n = d["masklet_num"]
    typed = {"masklet_id": int, "masklet_size_rel": float, "masklet_size_abs": float, "masklet_size_bucket": str,
             "masklet_visibility_changes": int, "masklet_first_appeared_frame": int, "masklet_frame_count": int,
             "masklet_edited_frame_count": int, "masklet_type": str}
    for key, kind in typed.items():
        assert isinstance(d[key], list) and len(d[key]) == n, key
        assert all(type(v) is kind for v in d[key]), key
    assert all(len(row) == n and all(isinstance(s, float) and 0 <= s <= 1 for s in row)
               for row in d["masklet_stability_score"])
    assert len(d["masklet_stability_score"]) == len(d["masklet"])
    assert d["masklet_type"] == ["auto"] * n and d["masklet_edited_frame_count"] == [0] * n


def _check_sav_masks(d: dict, video: str, table_masks: dict, every: int) -> None:
    frames = list(range(0, FRAMES[video], every))
    h, w = SIZES[video]
    assert len(d["masklet"]) == len(frames) and all(len(row) == d["masklet_num"] for row in d["masklet"])
    for i, f in enumerate(frames):
        for j, obj in enumerate(d["masklet_id"]):
            rle = d["masklet"][i][j]
            assert rle["size"] == [h, w] and isinstance(rle["counts"], str)
            mask = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)
            expected = table_masks.get((video, obj, f), np.zeros((h, w), bool))
            np.testing.assert_array_equal(mask, expected)  # empty RLE: all zero
            if not expected.any():
                assert d["masklet_stability_score"][i][j] == 1.0


def test_sav_fields_types_and_masks_every_2(pred, table_masks, tmp_path, capsys):
    rc, out, err = run(capsys, "--format", "sav", "--pred", pred, "--out", str(tmp_path), "--every", "2")
    assert rc == 0, err
    assert sorted(os.listdir(tmp_path)) == sorted(f"{escape_video_id(v)}_auto.json" for v in (A, B))
    a, b = _load_sav(tmp_path, A), _load_sav(tmp_path, B)
    for d, video in ((a, A), (b, B)):
        _check_sav_types(d)
        _check_sav_masks(d, video, table_masks, every=2)
    assert a["video_id"] == A and a["video_frame_count"] == 10.0 and a["video_duration"] == pytest.approx(10 / 24)
    assert (a["video_height"], a["video_width"], a["video_resolution"]) == (6.0, 8.0, 48.0)
    assert a["masklet_id"] == [1, 2] and b["masklet_id"] == [5, 9]  # 4 of B never visible: left out
    assert a["masklet_frame_count"] == [5, 5] and b["masklet_frame_count"] == [4, 4]  # frames 0,2,4,6,8 / 0..6
    # object 1 of A on frames 0,2,4,6,8: visible, visible, hidden, visible, visible -> 2 changes
    assert a["masklet_visibility_changes"] == [2, 0]
    assert b["masklet_first_appeared_frame"] == [0, 2]  # object 9 joins at frame 3: annotated entry 2 (frame 4)
    areas = [table_masks[(A, 1, f)].sum() for f in (0, 2, 6, 8)]
    assert a["masklet_size_abs"][0] == pytest.approx(np.mean(areas))
    assert a["masklet_size_rel"][0] == pytest.approx(np.mean(areas) / 48)
    assert a["masklet_size_bucket"] == ["small", "small"]
    assert a["masklet_stability_score"][0][0] == 1.0  # predicted IoU 1.3 clipped
    assert a["masklet_stability_score"][0][1] == pytest.approx(0.6)
    assert "2 videos, 4 objects" in out and "1 objects never visible" in out


def test_sav_default_every_4(pred, table_masks, tmp_path, capsys):
    rc, _, err = run(capsys, "--format", "sav", "--pred", pred, "--out", str(tmp_path))
    assert rc == 0, err
    a = _load_sav(tmp_path, A)
    _check_sav_masks(a, A, table_masks, every=4)  # frames 0, 4, 8
    assert a["masklet_visibility_changes"] == [2, 0]  # object 1: visible, hidden (4), visible
    assert _load_sav(tmp_path, B)["masklet_first_appeared_frame"] == [0, 1]  # object 9: entry 1 = frame 4


def test_sav_helpers():
    assert [size_bucket(s) for s in (1, 1023.9, 1024, 9215.5, 9216, 1e6)] == \
        ["small", "small", "medium", "medium", "large", "large"]
    v = np.array
    assert visibility_changes(v([False, False, True, True, False, True])) == 2  # before first: not counted
    assert visibility_changes(v([True] * 4)) == 0 and visibility_changes(v([False] * 3)) == 0


# ---------------------------------------------------------------------------------------------- URLs


def test_memory_urls_both_formats(table_masks, capsys):
    root = f"memory://export-{uuid.uuid4().hex}"
    build_output(f"{root}/run", success=False)
    rc, out, err = run(capsys, "--format", "ytvis", "--pred", f"{root}/run", "--out", f"{root}/yt")
    assert rc == 0, err
    assert "no _SUCCESS" in out
    fs = fsspec.filesystem("memory")
    _check_ytvis(json.loads(fs.cat_file(f"{root}/yt/ytvis.json")), table_masks, every=1)
    rc, _, err = run(capsys, "--format", "sav", "--pred", f"{root}/run", "--out", f"{root}/sav", "--every", "2")
    assert rc == 0, err
    d = json.loads(fs.cat_file(f"{root}/sav/{escape_video_id(A)}_auto.json"))
    _check_sav_masks(d, A, table_masks, every=2)
    fs.rm(root, recursive=True)


def test_s3_both_formats(s3_server, table_masks, capsys):
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    bucket = f"export-{uuid.uuid4().hex[:8]}"
    fs.mkdir(bucket)
    build_output(f"s3://{bucket}/run")
    options = json.dumps({"endpoint_url": s3_server})
    for fmt in ("sav", "ytvis"):
        rc, out, err = run(capsys, "--format", fmt, "--pred", f"s3://{bucket}/run", "--out", f"s3://{bucket}/{fmt}",
                           "--storage-options", options)
        assert rc == 0, err
    fs.invalidate_cache()
    _check_ytvis(json.loads(fs.cat_file(f"{bucket}/ytvis/ytvis.json")), table_masks, every=1)
    assert sorted(p.rsplit("/", 1)[-1] for p in fs.ls(f"{bucket}/ytvis")) == ["ytvis.json"]
    _check_sav_masks(json.loads(fs.cat_file(f"{bucket}/sav/{escape_video_id(B)}_auto.json")), B, table_masks, 4)


# ---------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("case", ["format", "every", "not-run", "missing", "protocol", "options", "out-file",
                                  "no-videos"])
def test_bad_input_exits_1_with_one_line(case, pred, tmp_path, capsys):
    args = {"--format": "sav", "--pred": pred, "--out": str(tmp_path / "x")}
    named = {"format": "coco", "every": "0", "not-run": str(tmp_path), "missing": str(tmp_path / "nope"),
             "protocol": "nosuchproto://bucket/run", "options": "{not json", "out-file": str(tmp_path / "f.txt"),
             "no-videos": str(tmp_path / "run2")}[case]
    key = {"format": "--format", "every": "--every", "options": "--storage-options", "out-file": "--out"}.get(
        case, "--pred")
    args[key] = named
    (tmp_path / "f.txt").write_text("a file")
    if case == "no-videos":  # a run output (it has masklets/) without videos.parquet
        RunOutput(named).write_part(A, 0, 0, _part(A, range(2)).to_table())
    rc, out, err = run(capsys, *[x for kv in args.items() for x in kv])
    assert rc == 1 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    shown = {"options": "storage options are not valid JSON", "no-videos": "videos.parquet"}.get(case, named)
    assert shown in lines[0]


def test_duplicate_rows_are_an_error(tmp_path, capsys):
    url = build_output(str(tmp_path / "run"))
    RunOutput(url).write_part(B, 7, 0, _part(B, range(2, 3)).to_table())  # frame 2 of B a second time
    rc, _, err = run(capsys, "--format", "ytvis", "--pred", url, "--out", str(tmp_path / "yt"))
    assert rc == 1 and "more than one row" in err and "'vid_b'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "yt" / "ytvis.json").exists()
