"""Masklet encoding and part files: pycocotools round trips, exactly-once writes, and read-back through
pyarrow.dataset, duckdb and pandas, on the local filesystem and on S3 (moto's server on loopback)."""

import os
import traceback

import duckdb
import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from pycocotools import mask as mask_utils

from workers import masklets as M
from workers.masklets import (MASKLET_PARTITIONING, MASKLET_SCHEMA, PART_SCHEMA, ChunkRows, MaskletSchemaError,
                              MaskletValueError, MaskletWriteError, OutputPathError, VideoIdError, decode_rle,
                              encode_masks, escape_video_id, masklet_rows, unescape_video_id)
from workers.output import RunOutput, read_masklets

# workers.masklets silences this pycocotools/numpy 2 warning, but pytest re-enables DeprecationWarnings per test.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")

TRICKY_IDS = ["a/b", "../x", "x=y", "with space", "ünïcode", "50%", ".", "..", "plain-01", "a+b?c#d&e"]
FRAMES_PER_CHUNK = 3


def blobs(rng, n, h, w):
    """Random rectangles (some empty, one full) so masks look like objects, not noise."""
    masks = np.zeros((n, h, w), bool)
    for i in range(n):
        y0, x0 = rng.integers(0, h), rng.integers(0, w)
        masks[i, y0:y0 + rng.integers(0, h), x0:x0 + rng.integers(0, w)] = True
    return masks


def write_corpus(writer, ids, seed=0):
    """Two streams x three chunks per video; returns {(video, object, frame): mask}."""
    rng = np.random.default_rng(seed)
    originals = {}
    for v, video_id in enumerate(ids):
        h, w = 9 + v, 17 - v  # non-square, odd and even sizes
        for stream, objects in ((0, [1, 2]), (1, [7])):
            for chunk in range(3):
                rows = ChunkRows(video_id)
                for frame in range(chunk * FRAMES_PER_CHUNK, (chunk + 1) * FRAMES_PER_CHUNK):
                    masks = blobs(rng, len(objects), h, w)
                    rows.add(frame, frame / 30.0, objects, masks, rng.random(len(objects)),
                             rng.random(len(objects)), is_prompt=frame == 0)
                    originals.update({(video_id, o, frame): m for o, m in zip(objects, masks)})
                writer.write_part(video_id, stream, chunk, rows.to_table())
    return originals


def check_rows(df, originals):
    df = df.assign(video_id=df["video_id"].astype(str))
    keys = list(zip(df["video_id"], df["object_id"].astype(int), df["frame_index"].astype(int)))
    assert len(keys) == len(set(keys)) == len(originals)
    assert set(keys) == set(originals)
    for key, rle, h, w in zip(keys, df["mask_rle"], df["height"], df["width"]):
        np.testing.assert_array_equal(decode_rle(rle, h, w), originals[key])


# ------------------------------------------------------------------------------------------ schema and RLE


def test_schema_is_exactly_the_contract():
    expected = [("video_id", pa.string()), ("object_id", pa.int32()), ("frame_index", pa.int32()),
                ("time_s", pa.float64()), ("height", pa.int32()), ("width", pa.int32()),
                ("mask_rle", pa.string()), ("bbox_xywh", pa.list_(pa.float32(), 4)), ("area", pa.int64()),
                ("score", pa.float32()), ("object_score", pa.float32()), ("visible", pa.bool_()),
                ("is_prompt", pa.bool_())]
    assert [(f.name, f.type) for f in MASKLET_SCHEMA] == expected
    assert PART_SCHEMA.names == MASKLET_SCHEMA.names[1:]


@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 7, 5), (2, 33, 17), (4, 64, 48), (1, 480, 641)])
def test_rle_round_trip_matches_pycocotools(shape):
    rng = np.random.default_rng(shape[1])
    masks = blobs(rng, *shape)
    masks = np.concatenate([masks, np.zeros((1,) + shape[1:], bool), np.ones((1,) + shape[1:], bool),
                            rng.random((1,) + shape[1:]) > 0.5])  # empty, full, noise
    counts, boxes, areas = encode_masks(masks)
    assert boxes.dtype == np.float32 and boxes.shape == (len(masks), 4)
    assert areas.dtype == np.int64 and areas.shape == (len(masks),)
    for m, c, box, area in zip(masks, counts, boxes, areas):
        own = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
        assert c == own["counts"].decode("ascii")
        np.testing.assert_array_equal(box, mask_utils.toBbox(own).astype(np.float32))
        assert area == mask_utils.area(own) == m.sum()
        np.testing.assert_array_equal(decode_rle(c, *m.shape), m)
    assert areas[-3] == 0 and areas[-2] == masks[0].size


def test_encode_edge_cases():
    counts, boxes, areas = encode_masks(np.zeros((0, 5, 4), bool))
    assert counts == [] and boxes.shape == (0, 4) and areas.shape == (0,)
    counts, _, areas = encode_masks(np.array([[[0, 3], [1, 0]]], np.uint8))  # non-0/1 ints count as set
    assert areas.tolist() == [2]
    with pytest.raises(MaskletValueError) as err:
        encode_masks(np.zeros((2, 4, 4), np.float32))
    assert err.value.value == np.float32
    with pytest.raises(MaskletValueError):
        encode_masks(np.zeros((4, 4), bool))


def test_a_frame_of_many_objects_encodes():
    """300 objects in one frame (pseudo-labelling can prompt hundreds): pycocotools fails on 256 at once."""
    masks = np.random.default_rng(0).random((300, 9, 7)) > 0.5
    counts, boxes, areas = encode_masks(masks)
    assert len(counts) == 300 and boxes.shape == (300, 4)
    assert areas.tolist() == masks.reshape(300, -1).sum(1).tolist()
    for c, m in zip(counts[::37], masks[::37]):
        assert np.array_equal(decode_rle(c, 9, 7), m)


def test_rows_of_one_frame():
    masks = np.zeros((3, 6, 10), bool)
    masks[1, 2:4, 3:8] = True
    masks[2] = True
    table = masklet_rows("vid", 5, 0.2, [4, 9, 2], masks, [0.1, 0.2, 0.3], [0.0, 0.9, 1.0], [False, True, False])
    assert table.schema.equals(MASKLET_SCHEMA)
    rows = table.to_pylist()
    assert [r["object_id"] for r in rows] == [4, 9, 2]
    assert [r["visible"] for r in rows] == [False, True, True]
    assert [r["area"] for r in rows] == [0, 10, 60]
    assert rows[1]["bbox_xywh"] == [3.0, 2.0, 5.0, 2.0] and rows[1]["is_prompt"]
    assert all(r["height"] == 6 and r["width"] == 10 and r["frame_index"] == 5 for r in rows)


def test_chunk_rows_validates():
    rows = ChunkRows("v")
    assert len(rows.to_table()) == 0 and rows.to_table().schema.equals(MASKLET_SCHEMA)
    rows.add(0, 0.0, [1], np.ones((1, 2, 2), bool), [0.5], [0.5])
    with pytest.raises(MaskletValueError):
        rows.add(0, 0.0, [1], np.ones((1, 2, 2), bool), [0.5], [0.5])  # same frame twice
    with pytest.raises(MaskletValueError):
        rows.add(1, 0.1, [1, 1], np.ones((2, 2, 2), bool), [0.5] * 2, [0.5] * 2)  # repeated object
    with pytest.raises(MaskletValueError):
        rows.add(1, 0.1, [1, 2], np.ones((2, 2, 2), bool), [0.5], [0.5] * 2)  # one score for two objects
    with pytest.raises(MaskletValueError):
        rows.add(1, 0.1, [2**31], np.ones((1, 2, 2), bool), [0.5], [0.5])  # object id past int32
    assert len(rows) == 1


# ------------------------------------------------------------------------------------------ video ids


def test_escape_video_id():
    for video_id in TRICKY_IDS + ["%41", "~", "a\nb", "日本"]:
        escaped = escape_video_id(video_id)
        assert set(escaped) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-%")
        assert escaped not in (".", "..") and "/" not in escaped and "=" not in escaped
        assert unescape_video_id(escaped) == video_id
    assert escape_video_id("plain-01_x.mp4") == "plain-01_x.mp4"
    assert escape_video_id("..") == "%2E%2E" and escape_video_id("a/b") == "a%2Fb"
    for bad in ["", None, 7, "__HIVE_DEFAULT_PARTITION__", "x" * 300, "\udc80"]:
        with pytest.raises(VideoIdError) as err:
            escape_video_id(bad)
        assert err.value.value == bad


# ------------------------------------------------------------------------------------------ local


@pytest.fixture
def local_corpus(tmp_path):
    writer = RunOutput(str(tmp_path / "out"))
    return writer, write_corpus(writer, TRICKY_IDS), tmp_path


def test_local_read_back_with_every_reader(local_corpus):
    writer, originals, tmp_path = local_corpus
    root = str(tmp_path / "out" / "masklets")
    table = ds.dataset(root, format="parquet", partitioning="hive").to_table()
    assert table.schema.field("video_id").type == pa.string()
    check_rows(table.to_pandas(), originals)
    check_rows(duckdb.sql(f"select * from read_parquet('{root}/*/*.parquet', hive_partitioning=true)").df(),
               originals)
    check_rows(pd.read_parquet(root), originals)
    both = read_masklets(writer.url)
    assert both.schema.equals(MASKLET_SCHEMA)
    check_rows(both.to_pandas(), originals)
    one = read_masklets(writer.url, video_id="../x").to_pandas()
    assert set(one["video_id"]) == {"../x"} and len(one) == len(originals) // len(TRICKY_IDS)


def test_escaped_ids_stay_inside_masklets(local_corpus):
    writer, _, tmp_path = local_corpus
    assert os.listdir(tmp_path) == ["out"] and os.listdir(tmp_path / "out") == ["masklets"]
    directories = os.listdir(tmp_path / "out" / "masklets")
    assert sorted(unescape_video_id(d.removeprefix("video_id=")) for d in directories) == sorted(TRICKY_IDS)
    for d in directories:
        assert d.startswith("video_id=") and sorted(os.listdir(tmp_path / "out" / "masklets" / d)) == [
            f"part-{s:05d}-{c:06d}.parquet" for s in (0, 1) for c in range(3)]
    assert writer.list_parts("a/b") == [(s, c) for s in (0, 1) for c in range(3)]


def test_numeric_ids_read_back_as_strings(tmp_path):
    writer = RunOutput(str(tmp_path))
    originals = write_corpus(writer, ["0001", "17"])
    root = str(tmp_path / "masklets")
    check_rows(read_masklets(str(tmp_path)).to_pandas(), originals)
    frame = pd.read_parquet(root, partitioning=MASKLET_PARTITIONING)
    assert set(frame["video_id"]) == {"0001", "17"}
    check_rows(frame, originals)
    check_rows(duckdb.sql(f"select * from read_parquet('{root}/*/*.parquet', hive_partitioning=true)").df(),
               originals)


def test_rewriting_a_chunk_replaces_it(local_corpus):
    writer, originals, tmp_path = local_corpus
    before = sorted(str(p) for p in (tmp_path / "out").rglob("*"))
    masks = np.ones((2, 9, 17), bool)
    rows = ChunkRows("a/b")
    for frame in range(3):
        rows.add(frame, frame / 30, [1, 2], masks, [1, 1], [1, 1])
    writer.write_part("a/b", 0, 0, rows.to_table())
    writer.write_part("a/b", 0, 0, rows.to_table())  # at-least-once retries: still one part
    assert sorted(str(p) for p in (tmp_path / "out").rglob("*")) == before
    originals.update({("a/b", o, f): masks[0] for o in (1, 2) for f in range(3)})
    check_rows(read_masklets(writer.url).to_pandas(), originals)


def test_part_table_validation(tmp_path):
    writer = RunOutput(str(tmp_path))
    table = masklet_rows("v", 0, 0.0, [1], np.ones((1, 3, 3), bool), [1], [1])
    with pytest.raises(MaskletSchemaError):
        writer.write_part("other", 0, 0, table)  # rows of another video
    with pytest.raises(MaskletSchemaError):
        writer.write_part("v", 0, 0, table.drop_columns(["score"]))
    with pytest.raises(MaskletSchemaError):
        writer.write_part("v", 0, 0, table.cast(table.schema.set(9, pa.field("score", pa.float64()))))
    with pytest.raises(MaskletValueError):
        writer.write_part("v", -1, 0, table)
    assert list(tmp_path.rglob("*")) == []
    writer.write_part("v", 0, 0, table.drop_columns(["video_id"]))  # PART_SCHEMA is accepted as is
    assert writer.part_exists("v", 0, 0, expected_rows=1)


def test_failed_local_writes_leave_nothing_visible(local_corpus, monkeypatch):
    writer, originals, tmp_path = local_corpus
    before = sorted(str(p) for p in (tmp_path / "out").rglob("*"))
    table = masklet_rows("a/b", 0, 0.0, [1], np.ones((1, 9, 17), bool), [1], [1])

    def half_written(table, sink, **kwargs):
        sink.write(b"PAR1 partial")
        raise OSError("disk full")

    for target, fake in ((pq, "write_table"), (os, "fsync"), (os, "replace")):
        with monkeypatch.context() as patch:
            patch.setattr(target, fake, half_written if fake == "write_table" else _raise_oserror)
            with pytest.raises(OSError):  # MaskletWriteError is an OSError
                writer.write_part("a/b", 0, 0, table)
            with pytest.raises(OSError):
                writer.write_part("new video", 0, 0, table.drop_columns(["video_id"]))
        parts = (tmp_path / "out").rglob("*")
        assert sorted(str(p) for p in parts if not str(p).endswith("video_id=new%20video")) == before
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file() and not p.name.startswith("part-")]
    check_rows(read_masklets(writer.url).to_pandas(), originals)  # the previous part survived intact


def _raise_oserror(*args, **kwargs):
    raise OSError("simulated I/O failure")


def test_temp_files_of_a_crashed_writer_are_invisible(local_corpus):
    writer, originals, tmp_path = local_corpus
    directory = tmp_path / "out" / "masklets" / f"video_id={escape_video_id('x=y')}"
    (directory / ".part-00000-000009.parquet.0123.tmp").write_bytes(b"PAR1 half a file")
    root = str(tmp_path / "out" / "masklets")
    check_rows(ds.dataset(root, format="parquet", partitioning="hive").to_table().to_pandas(), originals)
    check_rows(duckdb.sql(f"select * from read_parquet('{root}/*/*.parquet', hive_partitioning=true)").df(),
               originals)
    check_rows(pd.read_parquet(root), originals)
    assert (0, 9) not in writer.list_parts("x=y")


def test_part_exists_rejects_corrupt_parts(local_corpus):
    writer, _, tmp_path = local_corpus
    assert writer.part_exists("x=y", 1, 2) and writer.part_exists("x=y", 1, 2, expected_rows=3)
    assert not writer.part_exists("x=y", 1, 2, expected_rows=4)
    assert not writer.part_exists("x=y", 1, 3) and not writer.part_exists("never", 0, 0)
    path = writer.part_path("x=y", 1, 2)
    data = open(path, "rb").read()
    for broken in (data[: len(data) // 2], data[:-1], b"", b"x" * 200):
        open(path, "wb").write(broken)
        assert not writer.part_exists("x=y", 1, 2)
    open(path, "wb").write(data[:40] + bytes(200) + data[240:])  # footer intact, pages broken
    assert writer.part_exists("x=y", 1, 2) and not writer.part_exists("x=y", 1, 2, verify_data=True)
    pq.write_table(pa.table({"x": [1, 2, 3]}), path)  # a Parquet file, but not a part
    assert not writer.part_exists("x=y", 1, 2)


def test_side_files(tmp_path):
    writer = RunOutput("file://" + str(tmp_path / "run"))
    videos = pa.table({"video_id": ["a/b"], "status": ["ok"], "frames": [9]})
    writer.write_table("videos.parquet", videos)
    assert pq.read_table(tmp_path / "run" / "videos.parquet").equals(videos)
    writer.write_bytes("_run.json", b"{}")
    writer.write_bytes("_state/00000/chunk-000001.bin", b"state")
    assert writer.read_bytes("_state/00000/chunk-000001.bin") == b"state" and writer.exists("_run.json")
    writer.remove("_state")
    writer.remove("_state")  # absent is fine
    assert not writer.exists("_state")
    writer.write_bytes("_SUCCESS", b"")
    assert sorted(os.listdir(tmp_path / "run")) == ["_SUCCESS", "_run.json", "videos.parquet"]
    for bad in ("../escape", "/abs", "a//b", "./x", "", "x/..", "a\\..\\b"):
        with pytest.raises(OutputPathError) as err:
            writer.write_bytes(bad, b"")
        assert err.value.value == bad
    assert sorted(os.listdir(tmp_path)) == ["run"]


# ------------------------------------------------------------------------------------------ S3 (moto)


@pytest.fixture
def s3_bucket(s3_server):
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    name = f"masklets-{np.random.default_rng().integers(1 << 30)}"
    fs.mkdir(name)
    return fs, name


def test_s3_write_and_read_back(s3_bucket, s3_server):
    import pyarrow.fs as pafs

    fs, bucket = s3_bucket
    writer = RunOutput(f"s3://{bucket}/run")
    assert writer.url == f"s3://{bucket}/run"
    originals = write_corpus(writer, TRICKY_IDS)
    writer.write_part("a/b", 0, 0, masklet_rows("a/b", 0, 0.0, [1, 2], np.zeros((2, 9, 17), bool), [0] * 2,
                                                [0] * 2))  # replaces, never duplicates
    originals.update({("a/b", o, 0): np.zeros((9, 17), bool) for o in (1, 2)})
    originals = {k: v for k, v in originals.items() if not (k[0] == "a/b" and k[1] in (1, 2) and 0 < k[2] < 3)}
    keys = fs.find(f"{bucket}/run")
    assert len(keys) == len(TRICKY_IDS) * 6  # no directory markers, no temp objects
    assert all(k.startswith(f"{bucket}/run/masklets/video_id=") and k.endswith(".parquet") for k in keys)
    root = f"{bucket}/run/masklets"
    check_rows(ds.dataset(root, filesystem=fs, format="parquet", partitioning="hive").to_table().to_pandas(),
               originals)
    native = pafs.S3FileSystem(endpoint_override=s3_server, access_key="testing", secret_key="testing",
                               region="us-east-1")
    check_rows(ds.dataset(root, filesystem=native, format="parquet", partitioning="hive").to_table().to_pandas(),
               originals)
    check_rows(pd.read_parquet(f"s3://{root}"), originals)
    check_rows(read_masklets(writer.url).to_pandas(), originals)
    assert writer.part_exists("..", 1, 2, expected_rows=3)


def test_s3_failures_and_corrupt_parts(s3_bucket, monkeypatch):
    fs, bucket = s3_bucket
    writer = RunOutput(f"s3://{bucket}/run")
    table = masklet_rows("v/1", 0, 0.0, [1], np.ones((1, 4, 4), bool), [1], [1])

    def half_written(table, sink, **kwargs):
        sink.write(b"PAR1 partial")
        raise OSError("serialisation died")

    with monkeypatch.context() as patch:
        patch.setattr(pq, "write_table", half_written)
        with pytest.raises(OSError):
            writer.write_part("v/1", 0, 0, table)
    with monkeypatch.context() as patch:
        patch.setattr(writer.filesystem, "pipe", _raise_oserror)  # s3fs binds its sync methods per instance
        with pytest.raises(MaskletWriteError) as err:
            writer.write_part("v/1", 0, 0, table)
        assert err.value.path == writer.part_path("v/1", 0, 0)
    assert fs.find(f"{bucket}/run") == [] and not writer.part_exists("v/1", 0, 0)
    path = writer.write_part("v/1", 0, 0, table)
    assert writer.part_exists("v/1", 0, 0, expected_rows=1) and writer.list_parts("v/1") == [(0, 0)]
    fs.pipe(path, fs.cat_file(path)[:50])  # a truncated object, e.g. written by someone else
    assert not writer.part_exists("v/1", 0, 0)
    writer.write_bytes("_state/0/snap.bin", b"abc")
    assert writer.read_bytes("_state/0/snap.bin") == b"abc"
    writer.remove("_state")
    assert not writer.exists("_state/0/snap.bin")


def test_storage_options_never_leak(s3_bucket, s3_server):
    secret = "S3CRET-must-not-appear"
    options = {"key": "testing", "secret": secret, "client_kwargs": {"endpoint_url": s3_server},
               "skip_instance_cache": True}
    writer = RunOutput("s3://no-such-bucket-here/run", storage_options=options)
    table = masklet_rows("v", 0, 0.0, [1], np.ones((1, 4, 4), bool), [1], [1])
    with pytest.raises(MaskletWriteError) as err:
        writer.write_part("v", 0, 0, table)
    text = "".join(traceback.format_exception(err.value))
    for shown in (text, repr(writer), writer.url, writer.part_path("v", 0, 0)):
        assert secret not in shown
    fs, bucket = s3_bucket
    good = RunOutput(f"s3://{bucket}/run", storage_options=options)
    good.write_part("v", 0, 0, table)
    assert all(secret.encode() not in fs.cat_file(k) for k in fs.find(f"{bucket}/run"))
    assert isinstance(fsspec.core.url_to_fs(good.url)[0], type(good.filesystem))


def test_s3_sees_parts_written_by_other_processes(s3_bucket):
    """The driver lists an output before its actors (other processes) write into it: cached listings must
    not hide their parts, snapshots or folders from it afterwards."""
    import s3fs

    fs, bucket = s3_bucket
    driver = RunOutput(f"s3://{bucket}/run")
    assert not driver.part_exists("v", 0, 0) and not driver.exists("_state/00000/after-000000.safetensors")
    assert driver.list_parts("v") == []
    actor_fs = s3fs.S3FileSystem(skip_instance_cache=True)  # another process's own client
    table = masklet_rows("v", 0, 0.0, [1], np.ones((1, 4, 4), bool), [1.0], [1.0])
    fs.pipe(f"{bucket}/run/masklets/video_id=v/part-00000-000000.parquet", M._parquet_bytes(M._part_table("v", table)))
    actor_fs.pipe(f"{bucket}/run/_state/00000/after-000000.safetensors", b"x")
    assert driver.part_exists("v", 0, 0, expected_rows=1) and driver.exists("_state/00000/after-000000.safetensors")
    assert driver.list_parts("v") == [(0, 0)] and read_masklets(driver.url).num_rows == 1
    driver.remove("_state")
    assert not actor_fs.exists(f"{bucket}/run/_state/00000/after-000000.safetensors")
