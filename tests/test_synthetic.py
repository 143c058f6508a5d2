"""The synthetic video generator: determinism, disjoint splits, exact masks, scripted occlusions, corpus files."""

import dataclasses
import json

import numpy as np
import pytest

from cluster.manifest import read_manifest
from workers.masklets import MASKLET_SCHEMA, decode_rle
from workers.output import read_masklets
from model.synthetic import FLAT_COLORS, OCCLUDER, SPLITS, SyntheticConfig, SyntheticError, interior_point, reappearances, render_video, seed_range, split_seed
from workers.synthetic_corpus import first_frame_prompts, write_corpus
from workers.video_source import probe_video

# Non-square and smaller than the default: x/y mix-ups show, and a batch of videos renders in a few seconds.
SMALL = SyntheticConfig(height=128, width=160, num_frames=48)
BATCH = 16


@pytest.fixture(scope="module")
def batch():
    return [render_video(split_seed("train", i), SMALL) for i in range(BATCH)]


def test_same_seed_same_video_and_different_seeds_differ():
    a, b = render_video(11, SMALL), render_video(11, SMALL)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.masks, b.masks)
    assert a.events == b.events
    c = render_video(12, SMALL)
    assert not np.array_equal(a.frames, c.frames)


def test_default_video_shapes():
    v = render_video(0)
    t, h, w = 64, 256, 256
    assert v.frames.shape == (t, h, w, 3) and v.frames.dtype == np.uint8
    assert v.masks.shape == (t, len(v.object_ids), h, w) and v.masks.dtype == np.bool_
    assert 1 <= len(v.object_ids) <= 4 and v.visible.shape == (t, len(v.object_ids))


def test_splits_never_share_a_seed():
    ranges = [seed_range(s) for s in SPLITS]
    for i, a in enumerate(ranges):
        for b in ranges[i + 1:]:
            assert a.stop <= b.start or b.stop <= a.start
    for s, r in zip(SPLITS, ranges):
        assert split_seed(s, 0) == r.start and split_seed(s, len(r) - 1) == r.stop - 1
    with pytest.raises(SyntheticError) as e:
        split_seed("train", len(ranges[0]))  # would be val's first seed
    assert e.value.value == len(ranges[0])
    with pytest.raises(SyntheticError, match="unknown split"):
        split_seed("dev", 0)


def test_masks_are_the_visible_owners_of_the_rendered_pixels():
    """In flat_colors mode a pixel's colour names its owner: the masks must be exactly those pixels, and
    they must equal the textured render's masks (appearance never moves geometry)."""
    for seed in (3, 4):
        textured = render_video(seed, SMALL)
        flat = render_video(seed, dataclasses.replace(SMALL, flat_colors=True))
        assert np.array_equal(textured.masks, flat.masks)
        owner = np.full(flat.frames.shape[:3], -1)
        for code, color in FLAT_COLORS.items():
            owner[np.all(flat.frames == color, axis=-1)] = code
        assert (owner >= 0).all() and np.array_equal(owner, flat.labels)
        for j, oid in enumerate(flat.object_ids):
            assert np.array_equal(flat.masks[:, j], owner == oid)
        assert not np.array_equal(textured.frames, flat.frames)


def test_scripted_disappearances_are_exact(batch):
    lo, hi = SMALL.hidden_frames
    seen = set()
    for v in batch:
        for e in v.events:
            j = list(v.object_ids).index(e.object_id)
            if e.kind == "cross":
                continue
            seen.add(e.kind)
            assert lo <= e.end - e.start + 1 <= hi
            assert not v.visible[e.start:e.end + 1, j].any(), (v.seed, e)
            if e.kind == "exit":  # gone from the frame, not merely covered
                assert (v.full_areas[e.start:e.end + 1, j] == 0).all(), (v.seed, e)
                assert v.full_areas[e.end + 1:, j].any()  # and it comes back in
            else:  # behind a bar: in the frame, every pixel owned by an occluder
                assert v.full_areas[e.start:e.end + 1, j].any(), (v.seed, e)
    assert seen == {"exit", "occluder"}


def test_occlusions_happen(batch):
    partial = sum(bool(((v.areas > 0) & (v.areas < v.full_areas)).any()) for v in batch)
    assert partial >= BATCH // 2  # visible masks strictly smaller than the silhouette
    by_object = 0
    for v in batch:
        for e in (e for e in v.events if e.kind == "cross"):
            j = list(v.object_ids).index(e.object_id)
            by_object += int(v.areas[e.start, j] < v.full_areas[e.start, j])
    assert by_object >= 2  # tracked objects pass behind each other
    assert any((v.labels == OCCLUDER).any() for v in batch)


def test_a_good_fraction_of_videos_has_a_reappearance(batch):
    with_return = [v for v in batch if v.reappearances(min_hidden=5)]
    assert len(with_return) >= 0.7 * BATCH
    for v in with_return:
        for oid, t in v.reappearances(min_hidden=5):
            j = list(v.object_ids).index(oid)
            assert v.visible[t, j] and not v.visible[t - 5:t, j].any()


def test_reappearances_helper():
    f, t = False, True
    assert reappearances([t, f, f, f, f, f, t]) == [6]
    assert reappearances([t, f, f, f, f, t]) == []  # 4 hidden frames < 5
    assert reappearances([t, f, f, f, f, t], min_hidden=4) == [5]
    assert reappearances([f] * 8 + [t]) == []  # first appearance, not a return
    assert reappearances([t] + [f] * 8) == []  # never comes back
    assert reappearances([t, f, t, f, f, t, t], min_hidden=1) == [2, 5]
    with pytest.raises(SyntheticError):
        reappearances(np.ones((2, 3), bool))
    with pytest.raises(SyntheticError):
        reappearances([t, f], min_hidden=0)


def test_prompts_come_from_the_truth(batch):
    for v in batch[:6]:
        points, boxes, masks = (first_frame_prompts(v, k) for k in ("points", "box", "mask"))
        for j, (p, b, m) in enumerate(zip(points, boxes, masks)):
            t = p["frame_index"]
            assert p["object_id"] == v.object_ids[j] and b["frame_index"] == m["frame_index"] == t
            assert v.areas[t, j] >= SMALL.min_prompt_area and (v.areas[:t, j] < SMALL.min_prompt_area).all()
            truth = v.masks[t, j]
            x, y = (int(c) for c in p["points"][0])
            assert p["labels"] == [1] and truth[y - 1:y + 2, x - 1:x + 2].all()  # inside, not on the edge
            ys, xs = np.nonzero(truth)
            assert b["box"] == [xs.min(), ys.min(), xs.max(), ys.max()]
            assert np.array_equal(decode_rle(m["mask"]["counts"], *m["mask"]["size"]), truth)
    on_first_frame = np.mean([p["frame_index"] == 0 for v in batch for p in first_frame_prompts(v)])
    assert on_first_frame >= 0.75


def test_interior_point_is_deep():
    yy, xx = np.mgrid[0:60, 0:80]
    disc = (xx - 50) ** 2 + (yy - 20) ** 2 < 15 ** 2
    x, y = interior_point(disc)
    assert abs(x - 50) <= 2 and abs(y - 20) <= 2
    edge = np.zeros((40, 40), bool)
    edge[:, :10] = True  # the frame's edge is a boundary too
    assert interior_point(edge)[0] in (4, 5)
    with pytest.raises(SyntheticError):
        interior_point(np.zeros((4, 4), bool))


def test_config_is_validated():
    for bad in ({"max_objects": 5}, {"hidden_frames": (6, 5)}, {"event_prob": 1.5}, {"height": 8},
                {"fps": 0}, {"min_objects": 3, "max_objects": 2}):
        with pytest.raises(SyntheticError) as e:
            SyntheticConfig(**bad)
        assert e.value.value is not None
    with pytest.raises(SyntheticError):
        render_video(-1)


def test_write_corpus_is_readable(tmp_path):
    cfg = SyntheticConfig(height=96, width=128, num_frames=20)
    manifest = write_corpus(tmp_path / "corpus", "val", 2, cfg, prompt_kind="box", start=5)
    entries = read_manifest(str(manifest))
    assert [e.video_id for e in entries] == ["val-000005", "val-000006"]
    table = read_masklets(str(tmp_path / "corpus" / "truth"))
    assert table.schema.equals(MASKLET_SCHEMA, check_metadata=False)
    records = [json.loads(line) for line in (tmp_path / "corpus" / "truth" / "videos.jsonl").read_text().splitlines()]
    for entry, record in zip(entries, records):
        info = probe_video(entry.url)
        assert (info.num_frames, info.height, info.width) == (20, 96, 128)
        video = render_video(split_seed("val", record["index"]), cfg)
        assert record["seed"] == video.seed and record["object_ids"] == video.object_ids.tolist()
        rows = table.filter(table.column("video_id").to_numpy(zero_copy_only=False) == entry.video_id).to_pylist()
        assert len(rows) == 20 * len(video.object_ids)
        for row in rows:
            j = video.object_ids.tolist().index(row["object_id"])
            truth = video.masks[row["frame_index"], j]
            assert np.array_equal(decode_rle(row["mask_rle"], row["height"], row["width"]), truth)
            assert row["visible"] == bool(truth.any())
        prompted = {(r["object_id"], r["frame_index"]) for r in rows if r["is_prompt"]}
        assert prompted == {(p.object_id, p.frame_index) for p in entry.prompts}
        assert all(p.kind == "box" for p in entry.prompts)
