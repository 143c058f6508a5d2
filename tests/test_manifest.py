"""cluster.manifest: reading JSON lines and Parquet manifests, every validation error, prompt bounds, masks,
s3 through moto, and keeping storage credentials out of messages."""

import gzip
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pycocotools import mask as mask_utils

from cluster.manifest import (ManifestError, PromptBoundsError, PromptSpec, VideoEntry,
                              check_prompts_against_video, parse_storage_options, read_manifest, redact)
from cluster.manifest import _rle_runs
from cluster.plan import plan_streams
from workers.video_source import VideoInfo


def rle_of(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


MASK = np.zeros((6, 8), bool)
MASK[1:4, 2:7] = True
GOOD_PROMPTS = [
    {"object_id": 1, "frame_index": 0, "points": [[10, 20.5], [3, 4]], "labels": [1, 0]},
    {"object_id": 2, "box": [1, 2, 30, 40]},
    {"object_id": 1, "frame_index": 5, "mask": rle_of(MASK)},
]
GOOD_ROWS = [
    {"url": "s3://bucket/videos/clip.mp4", "video_id": "clip-a", "prompts": GOOD_PROMPTS},
    {"url": "s3://bucket/frames/seq01/"},
]


def write_jsonl(path, rows) -> str:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def write_parquet(path, rows, prompts_as_json=False) -> str:
    if prompts_as_json:
        rows = [{**r, "prompts": json.dumps(r["prompts"]) if "prompts" in r else None} for r in rows]
    pq.write_table(pa.Table.from_pylist(rows), str(path))
    return str(path)


def check_good(entries: list[VideoEntry]) -> None:
    assert [e.video_id for e in entries] == ["clip-a", "seq01"]
    assert [e.row for e in entries] == [0, 1]
    assert entries[1].prompts == ()
    pts, box, mask = entries[0].prompts
    assert pts == PromptSpec(1, 0, points=((10.0, 20.5), (3.0, 4.0)), labels=(1, 0))
    assert box == PromptSpec(2, 0, box=(1.0, 2.0, 30.0, 40.0)) and box.kind == "box"
    assert mask.object_id == 1 and mask.frame_index == 5 and mask.mask_rle == rle_of(MASK)
    assert np.array_equal(mask.to_mask(6, 8), MASK)


def test_good_jsonl(tmp_path):
    check_good(read_manifest(write_jsonl(tmp_path / "m.jsonl", GOOD_ROWS)))


def test_jsonl_prompts_as_json_string_and_gzip(tmp_path):
    rows = [{**GOOD_ROWS[0], "prompts": json.dumps(GOOD_PROMPTS)}, GOOD_ROWS[1]]
    check_good(read_manifest(write_jsonl(tmp_path / "m.json", rows)))
    path = tmp_path / "m.jsonl.gz"
    path.write_bytes(gzip.compress("\n".join(json.dumps(r) for r in GOOD_ROWS).encode()))
    check_good(read_manifest(f"file://{path}"))


@pytest.mark.parametrize("as_json", [False, True], ids=["list-struct", "json-string"])
def test_good_parquet(tmp_path, as_json):
    path = write_parquet(tmp_path / "m.parquet", GOOD_ROWS, prompts_as_json=as_json)
    if not as_json:
        assert pa.types.is_list(pq.read_schema(path).field("prompts").type)
    check_good(read_manifest(path))


@pytest.mark.parametrize("url, video_id", [
    ("s3://b/v/clip.mp4", "clip"), ("/data/a.b.mkv", "a.b"), ("s3://b/frames/seq01/", "seq01"),
    ("file:///x/seq.v2/", "seq.v2"), ("gs://b/frames/seq02", "seq02"), ("https://h/v/x.webm?sig=abc", "x"),
])
def test_derived_video_id(tmp_path, url, video_id):
    [entry] = read_manifest(write_jsonl(tmp_path / "m.jsonl", [{"url": url}]))
    assert entry == VideoEntry(0, url, video_id, ())


def test_defaults_and_blank_lines(tmp_path):
    rows = ["", {"url": "a.mp4", "prompts": [{"object_id": 0, "box": [0, 0, 1, 1]}]}, "   ",
            {"url": "b.mp4", "prompts": []}, {"url": "c.mp4", "prompts": None}, {"url": "d.mp4", "prompts": ""}]
    entries = read_manifest(write_jsonl(tmp_path / "m.jsonl", rows))
    assert [e.row for e in entries] == [1, 3, 4, 5]  # rows are lines: blank ones skipped but counted
    assert entries[0].prompts[0].frame_index == 0
    assert all(e.prompts == () for e in entries[1:])


def bad(prompt: dict | None = None, **row) -> dict:
    return {"url": "x.mp4", **({"prompts": [prompt]} if prompt is not None else {}), **row}


BOX = {"object_id": 0, "box": [0, 0, 1, 1]}
ERRORS = [  # (row 1 of the manifest, field, text the message must contain)
    ({"video_id": "x"}, "url", "missing"),
    ({"url": ""}, "url", "non-empty string"),
    ({"url": 5}, "url", "got 5"),
    (bad(video_id=""), "video_id", "non-empty string"),
    (bad(video_id=3), "video_id", "got 3"),
    (bad(vidoe_id="v"), "vidoe_id", "unknown field 'vidoe_id' (did you mean 'video_id'?)"),
    ({"url": "s3://b/"}, "video_id", "cannot derive"),
    (bad(prompts=5), "prompts", "must be a list"),
    (bad(prompts="[{"), "prompts", "JSON list"),
    (bad(prompts=[3]), "prompts[0]", "must be an object, got 3"),
    (bad({**BOX, "pointz": [[1, 2]]}), "prompts[0].pointz", "did you mean 'points'"),
    (bad({"box": [0, 0, 1, 1]}), "prompts[0].object_id", "missing"),
    (bad({**BOX, "object_id": -1}), "prompts[0].object_id", "got -1"),
    (bad({**BOX, "object_id": "1"}), "prompts[0].object_id", 'got "1"'),
    (bad({**BOX, "object_id": True}), "prompts[0].object_id", "got true"),
    (bad({**BOX, "object_id": 1.5}), "prompts[0].object_id", "got 1.5"),
    (bad({**BOX, "object_id": 2**31}), "prompts[0].object_id", "must be an integer"),
    (bad({**BOX, "frame_index": -2}), "prompts[0].frame_index", "got -2"),
    (bad({"object_id": 0}), "prompts[0]", "exactly one of points (with labels), box or mask; got none"),
    (bad({**BOX, "points": [[1, 2]], "labels": [1]}), "prompts[0]", "got points and box"),
    (bad({**BOX, "labels": [1]}), "prompts[0].labels", "labels given without points"),
    (bad({"object_id": 0, "points": [[1, 2]]}), "prompts[0].labels", "missing"),
    (bad({"object_id": 0, "points": [[1, 2], [3, 4]], "labels": [1]}), "prompts[0].labels", "1 labels for 2"),
    (bad({"object_id": 0, "points": [[1, 2]], "labels": [2]}), "prompts[0].labels", "got [2]"),
    (bad({"object_id": 0, "points": [[1, 2]], "labels": [True]}), "prompts[0].labels", "got [true]"),
    (bad({"object_id": 0, "points": [], "labels": []}), "prompts[0].points", "non-empty"),
    (bad({"object_id": 0, "points": [[1]], "labels": [1]}), "prompts[0].points", "got [[1]]"),
    (bad({"object_id": 0, "points": [[1, float("nan")]], "labels": [1]}), "prompts[0].points", "NaN"),
    (bad({"object_id": 0, "points": [[1, "2"]], "labels": [1]}), "prompts[0].points", "finite numbers"),
    (bad({"object_id": 0, "box": [0, 0, 1]}), "prompts[0].box", "got [0, 0, 1]"),
    (bad({"object_id": 0, "box": [0, 0, 1, float("inf")]}), "prompts[0].box", "Infinity"),
    (bad({"object_id": 0, "box": [50, 10, 20, 40]}), "prompts[0].box", "x1 < x0 in [50, 10, 20, 40]"),
    (bad({"object_id": 0, "box": [10, 50, 20, 40]}), "prompts[0].box", "y1 < y0 in [10, 50, 20, 40]"),
    (bad({"object_id": 0, "mask": "abc"}), "prompts[0].mask", "COCO RLE"),
    (bad({"object_id": 0, "mask": {**rle_of(MASK), "shape": 1}}), "prompts[0].mask.shape", "unknown field"),
    (bad({"object_id": 0, "mask": {"size": [0, 8], "counts": ""}}), "prompts[0].mask.size", "positive"),
    (bad({"object_id": 0, "mask": {"size": [6, 8], "counts": 7}}), "prompts[0].mask.counts", "got 7"),
    (bad({"object_id": 0, "mask": {"size": [6, 8], "counts": "!!"}}), "prompts[0].mask.counts", "corrupt"),
    (bad({"object_id": 0, "mask": {"size": [6, 9], "counts": rle_of(MASK)["counts"]}}),
     "prompts[0].mask.counts", "covers 48 pixels, not 6x9"),
    (bad(prompts=[BOX, {**BOX, "box": [0, 0, 2, 2]}]), "prompts[1]",
     "a second prompt for object 0 on frame 0 (the first is prompts[0])"),
    ({"url": "s3://other/clip.mp4"}, "video_id", "duplicate video id 'clip' (also row 0)"),
    ('["x.mp4"]', None, "a row must be a JSON object"),
    ('{"url": "x.mp4", "url": "y.mp4"}', None, "invalid JSON: key 'url' given twice"),
    ('{"url": "x.mp4",', None, "invalid JSON: Expecting"),
]


@pytest.mark.parametrize("row, field, text", ERRORS, ids=[f"{i}-{e[1]}" for i, e in enumerate(ERRORS)])
def test_row_errors(tmp_path, row, field, text):
    path = write_jsonl(tmp_path / "m.jsonl", [{"url": "s3://b/v/clip.mp4"}, row])
    with pytest.raises(ManifestError) as info:
        read_manifest(path)
    err = info.value
    assert (err.row, err.field) == (1, field)
    where = f"manifest {path} row 1" + (f", field {field!r}" if field else "")
    assert str(err).startswith(where + ": ") and text in str(err), str(err)


def test_error_message_exact_and_carries_value(tmp_path):
    prompts = [BOX, {"object_id": 1, "box": [50, 10, 20, 40]}]
    path = write_jsonl(tmp_path / "m.jsonl", [{"url": "a.mp4"}, {"url": "b.mp4"}, "", {"url": "c.mp4",
                                                                                        "prompts": prompts}])
    with pytest.raises(ManifestError) as info:
        read_manifest(path)
    assert str(info.value) == f"manifest {path} row 3, field 'prompts[1].box': x1 < x0 in [50, 10, 20, 40]"
    assert info.value.value == [50, 10, 20, 40] and isinstance(info.value, ValueError)


@pytest.mark.parametrize("name, content, text", [
    ("missing.jsonl", None, "file not found"),
    ("m.csv", b"url\nx.mp4\n", "unknown manifest format '.csv'"),
    ("manifest", b"", "unknown manifest format 'manifest'"),
    ("m.jsonl", b"", "no rows"),
    ("m.jsonl", b"\n  \n", "no rows"),
    ("m.parquet", b"not parquet at all", "cannot read the manifest"),
])
def test_file_errors(tmp_path, name, content, text):
    if content is not None:
        (tmp_path / name).write_bytes(content)
    with pytest.raises(ManifestError) as info:
        read_manifest(str(tmp_path / name))
    assert info.value.row is None and text in str(info.value), str(info.value)


def test_invalid_utf8_names_the_row(tmp_path):
    (tmp_path / "m.jsonl").write_bytes(b'{"url": "a.mp4"}\n{"url": "\xff.mp4"}\n')
    with pytest.raises(ManifestError, match="row 1: not valid UTF-8") as info:
        read_manifest(str(tmp_path / "m.jsonl"))
    assert info.value.row == 1


def test_parquet_errors(tmp_path):
    with pytest.raises(ManifestError, match="field 'video-id': unknown field 'video-id' .did you mean 'video_id'"
                       ) as info:
        read_manifest(write_parquet(tmp_path / "a.parquet", [{"url": "x.mp4", "video-id": "v"}]))
    assert (info.value.row, info.value.field) == (None, "video-id")
    with pytest.raises(ManifestError, match="no 'url' column"):
        read_manifest(write_parquet(tmp_path / "b.parquet", [{"video_id": "v"}]))
    rows = [{"url": "x.mp4", "video_id": None}, {"url": "y.mp4", "video_id": "x"}]
    with pytest.raises(ManifestError, match="row 1, field 'video_id': duplicate video id 'x' .also row 0"):
        read_manifest(write_parquet(tmp_path / "c.parquet", rows))
    rows = [{"url": "x.mp4", "prompts": [{"object_id": 0, "box": [5, 0, 1, 1]}]}]
    with pytest.raises(ManifestError, match=r"row 0, field 'prompts\[0\].box': x1 < x0"):
        read_manifest(write_parquet(tmp_path / "d.parquet", rows))


def test_check_prompts_against_video():
    pts = PromptSpec(1, 0, points=((0.0, 0.0), (64.0, 48.0)), labels=(1, 1))
    box = PromptSpec(2, 9, box=(0.0, 0.0, 64.0, 48.0))
    mask = PromptSpec(3, 4, mask_rle=rle_of(np.zeros((48, 64), bool)))
    entry = VideoEntry(0, "v.mp4", "v", (pts, box, mask))
    assert check_prompts_against_video(entry, 10, 48, 64) == ((pts, box, mask), [])  # edges fit, nothing changed
    cases = [
        (box, (9, 48, 64), "frame_index 9 is past the end of the video (9 frames)", 9),
        (pts, (10, 47, 64), "point [64, 48] is outside the frame (width 64, height 47)", [64.0, 48.0]),
        (pts, (10, 48, 63), "point [64, 48] is outside the frame (width 63, height 48)", [64.0, 48.0]),
        (mask, (10, 48, 65), "mask size [48, 64] differs from the frame's [48, 65]", [48, 64]),
        (PromptSpec(4, 2, box=(70.0, 3.0, 90.0, 40.0)), (10, 48, 64),  # no overlap with the frame
         "box [70, 3, 90, 40] is outside the frame (width 64, height 48)", [70.0, 3.0, 90.0, 40.0]),
        (PromptSpec(5, 1, box=(-9.0, 3.0, 0.0, 40.0)), (10, 48, 64),  # touches the left edge: no area inside
         "box [-9, 3, 0, 40] is outside the frame (width 64, height 48)", [-9.0, 3.0, 0.0, 40.0]),
    ]
    for prompt, (frames, h, w), text, value in cases:
        with pytest.raises(PromptBoundsError) as info:
            check_prompts_against_video(VideoEntry(0, "v.mp4", "v", (pts, prompt)), frames, h, w)
        err = info.value
        assert str(err) == f"video 'v' object {prompt.object_id} frame {prompt.frame_index}: {text}"
        assert (err.video_id, err.object_id, err.frame_index, err.value) == ("v", prompt.object_id,
                                                                             prompt.frame_index, value)


def test_boxes_partly_outside_the_frame_are_clipped_with_a_note():
    inside = PromptSpec(1, 0, box=(1.0, 2.0, 30.0, 40.0))
    left = PromptSpec(2, 0, box=(-5.0, 3.0, 40.0, 90.0))
    right = PromptSpec(3, 4, box=(50.5, -1.0, 70.0, 20.0))
    pts = PromptSpec(4, 1, points=((3.0, 4.0),), labels=(1,))
    prompts, notes = check_prompts_against_video(VideoEntry(0, "v.mp4", "v", (inside, left, pts, right)), 10, 72, 64)
    assert prompts == (inside, PromptSpec(2, 0, box=(0.0, 3.0, 40.0, 72.0)), pts,
                       PromptSpec(3, 4, box=(50.5, 0.0, 64.0, 20.0)))
    assert notes == ["object 2 frame 0: box [-5, 3, 40, 90] clipped to [0, 3, 40, 72]",
                     "object 3 frame 4: box [50.5, -1, 70, 20] clipped to [50.5, 0, 64, 20]"]


def test_planned_streams_carry_the_clipped_boxes_and_their_notes():
    entry = VideoEntry(0, "v.mp4", "v", (PromptSpec(7, 2, box=(-5.0, 3.0, 40.0, 90.0)),))
    info = VideoInfo("v.mp4", num_frames=5, fps=25.0, width=64, height=72)
    [plan], failures = plan_streams([entry], [info], chunk_frames=4)
    assert failures == {} and plan.notes == ("object 7 frame 2: box [-5, 3, 40, 90] clipped to [0, 3, 40, 72]",)
    [(frame, prompt)] = plan.prompts
    assert (frame, prompt.object_id, prompt.box) == (2, 7, (0.0, 3.0, 40.0, 72.0))
    outside = VideoEntry(1, "w.mp4", "w", (PromptSpec(7, 0, box=(65.0, 3.0, 90.0, 40.0)),))
    plans, failures = plan_streams([outside], [info], chunk_frames=4)
    assert plans == []
    assert failures["w"].startswith("PromptBoundsError: video 'w' object 7 frame 0: box [65, 3, 90, 40] is outside")


def test_to_mask_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    masks = [rng.random((37, 53)) > 0.5, np.zeros((5, 5), bool), np.ones((300, 200), bool)]
    prompts = [{"object_id": i, "mask": rle_of(m)} for i, m in enumerate(masks)]
    [entry] = read_manifest(write_jsonl(tmp_path / "m.jsonl", [{"url": "v.mp4", "prompts": prompts}]))
    for spec, m in zip(entry.prompts, masks):
        out = spec.to_mask(*m.shape)
        assert out.dtype == bool and out.shape == m.shape and np.array_equal(out, m)
        assert sum(_rle_runs(spec.mask_rle["counts"])) == m.size
    with pytest.raises(PromptBoundsError, match=r"mask size \[37, 53\] differs from the frame's \[53, 37\]"):
        entry.prompts[0].to_mask(53, 37)
    with pytest.raises(ValueError, match="is a box prompt, not a mask"):
        PromptSpec(0, 0, box=(0, 0, 1, 1)).to_mask(5, 5)


def test_read_from_s3(s3_server, tmp_path):
    import s3fs

    fs = s3fs.S3FileSystem()
    fs.mkdir("manifests")
    fs.pipe("manifests/m.jsonl", "\n".join(json.dumps(r) for r in GOOD_ROWS).encode())
    with fs.open("manifests/m.parquet", "wb") as f:
        pq.write_table(pa.Table.from_pylist(GOOD_ROWS), f)
    check_good(read_manifest("s3://manifests/m.jsonl"))
    options = {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": s3_server}}
    check_good(read_manifest("s3://manifests/m.parquet", options))
    with pytest.raises(ManifestError, match="manifest s3://manifests/missing.jsonl: file not found") as info:
        read_manifest("s3://manifests/missing.jsonl", options)
    assert info.value.row is None and "testing" not in str(info.value)


def test_messages_never_show_credentials(tmp_path):
    options = {"anon": False, "key": "AKIAEXAMPLE", "client_kwargs": {"headers": ["hunter2-token"]}}
    with pytest.raises(ManifestError) as info:
        read_manifest("https://user:pw@host/AKIAEXAMPLE/m.csv?sig=s3cret", options)
    message = str(info.value)
    assert message.startswith("manifest https://host/***/m.csv: unknown manifest format '.csv'")
    assert not any(s in message for s in ("pw", "s3cret", "AKIAEXAMPLE"))
    path = write_jsonl(tmp_path / "m.jsonl", [{"url": "x.mp4", "hunter2-token": 1}])
    with pytest.raises(ManifestError, match="unknown field '\\*\\*\\*'") as info:
        read_manifest(path, options)
    assert "hunter2" not in str(info.value)


def test_parse_storage_options():
    assert parse_storage_options(None) == {} and parse_storage_options("  ") == {}
    assert parse_storage_options('{"key": "a", "client_kwargs": {"region_name": "r"}}') == {
        "key": "a", "client_kwargs": {"region_name": "r"}}
    with pytest.raises(ValueError) as info:
        parse_storage_options('{"secret": "hunter2"')
    assert "hunter2" not in str(info.value) and "not valid JSON" in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no chained echo of the text
    with pytest.raises(ValueError, match="must be a JSON object, got a JSON list"):
        parse_storage_options('["hunter2"]')


def test_redact():
    options = {"key": "abc", "secret": "abcdef", "anon": False, "port": 9000, "empty": "",
               "client_kwargs": {"aws_session_token": "tk9", "extra": ["listed"]}}
    text = "key=abc secret=abcdef token=tk9 listed port=9000 anon=False"
    assert redact(text, options) == "key=*** secret=*** token=*** *** port=9000 anon=False"
    assert redact("nothing here", {}) == "nothing here"
