"""The synthetic video generator: determinism, disjoint splits, exact masks, scripted occlusions, families (held
out ones never in training), corpus files."""

import dataclasses
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cluster.manifest import read_manifest
from workers.masklets import MASKLET_SCHEMA, decode_rle
from workers.output import read_masklets
from model.synthetic import (FLAT_COLORS, HELD_OUT, IN_FAMILY, OCCLUDER, REGISTRY, SPLITS, STRESS_SPLIT, FamilyRegistry,
                             FamilySet, SyntheticConfig, SyntheticError, interior_point, reappearances,
                             render_stress_video, render_video, seed_range, split_of_seed, split_seed, stress_config)
from model.synthetic.shapes import SHAPE_FAMILIES, Sprite, draw_sprite, make_shape, make_wobble, sprite_extent
from model.training import clips as training_clips
from model.training.clips import ClipSpec, step_clips
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
    assert SPLITS.index("heldout") == 3  # added last: the other splits' seeds did not move
    assert [split_of_seed(split_seed(s, 5)) for s in SPLITS] == list(SPLITS)
    with pytest.raises(SyntheticError):
        split_of_seed(len(SPLITS) * len(ranges[0]))  # beyond every split: no family set


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


def test_write_corpus_writes_the_held_out_split(tmp_path):
    cfg = SyntheticConfig(height=96, width=96, num_frames=8)
    entries = read_manifest(str(write_corpus(tmp_path / "heldout", "heldout", 1, cfg)))
    assert [e.video_id for e in entries] == ["heldout-000000"]
    record = json.loads((tmp_path / "heldout" / "truth" / "videos.jsonl").read_text().splitlines()[0])
    assert record["seed"] == split_seed("heldout", 0) and set(record["families"]) <= HELD_OUT.labels()


# ---------------------------------------------------------------------------------------------- families

def _digest(seed: int, cfg: SyntheticConfig) -> str:
    v = render_video(seed, cfg)
    return hashlib.sha256(v.frames.tobytes() + v.masks.tobytes() + repr(sorted(v.families)).encode()).hexdigest()


def test_same_seed_same_video_in_another_process():
    cfg = SyntheticConfig(height=64, width=96, num_frames=12)
    seeds = [split_seed("train", 7), split_seed("heldout", 7)]  # the held-out one draws glyphs through Pillow
    code = ("import sys; from tests.test_synthetic import _digest, SyntheticConfig; "
            f"print(*(_digest(s, SyntheticConfig(height=64, width=96, num_frames=12)) for s in {seeds}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.split() == [_digest(s, cfg) for s in seeds]


def test_the_registry_is_disjoint_and_covers_every_kind():
    assert REGISTRY.for_split("train") is REGISTRY.for_split("val") is REGISTRY.for_split("test") is IN_FAMILY
    assert REGISTRY.for_split("heldout") is HELD_OUT
    assert not IN_FAMILY.labels() & HELD_OUT.labels()
    assert len(IN_FAMILY.shape) >= 6 and len(IN_FAMILY.texture) >= 6
    assert len(HELD_OUT.shape) >= 2 and len(HELD_OUT.texture) >= 2 and len(HELD_OUT.motion) >= 2
    assert HELD_OUT.background


def test_a_registry_naming_unknown_or_shared_families_fails():
    good = dict(shape=("ellipse",), texture=("flat",), background=("scenery",), motion=("wander",))
    with pytest.raises(SyntheticError, match="unknown shape family 'hexagon'") as e:
        FamilySet("bad", **{**good, "shape": ("ellipse", "hexagon")})
    assert e.value.value == "hexagon"
    with pytest.raises(SyntheticError, match="unknown motion family"):
        FamilySet("bad", **{**good, "motion": ("teleport",)})
    with pytest.raises(SyntheticError, match="non-empty"):
        FamilySet("bad", **{**good, "texture": ()})
    with pytest.raises(SyntheticError, match="both in-family and held out") as e:
        FamilyRegistry(IN_FAMILY, FamilySet("leaky", **{**good, "shape": ("glyph", "ellipse")}))
    assert e.value.value == ["ellipse"]
    with pytest.raises(SyntheticError, match="unknown family 'shape:hexagon'"):
        SyntheticConfig(families=("shape:hexagon",))
    with pytest.raises(SyntheticError, match="unknown family"):
        SyntheticConfig(families=("colour:red",))


def test_a_config_cannot_pull_a_family_across_the_split_boundary():
    with pytest.raises(SyntheticError, match="not in the family set 'in-family'") as e:
        render_video(split_seed("train", 0), SyntheticConfig(height=64, width=64, num_frames=4,
                                                             families=("shape:glyph",)))
    assert e.value.value == "glyph"
    with pytest.raises(SyntheticError, match="not in the family set 'held-out'"):
        render_video(split_seed("heldout", 0), SyntheticConfig(height=64, width=64, num_frames=4,
                                                               families=("texture:flat",)))


def test_training_clips_never_draw_a_held_out_family():
    """200 clips sampled the way jobs.train samples them: only in-family families, and most of those."""
    spec = ClipSpec(seed=5, rank=0, batch=20, size=64, drop_prob=0.2, static_prob=0.1, max_objects=3,
                    image_share=0.2, prompt_mix={"mask": 0.5, "points": 0.25, "box": 0.25})
    clips = [c for step in range(10) for c in step_clips(spec, step, 4)]
    assert len(clips) == 200
    seen = set().union(*(c.families for c in clips))
    assert all(c.families for c in clips) and seen <= IN_FAMILY.labels() and not seen & HELD_OUT.labels()
    assert {f for f in IN_FAMILY.labels() if f.startswith(("shape:", "motion:", "background:"))} <= seen


def test_held_out_videos_use_only_held_out_families():
    cfg = SyntheticConfig(height=96, width=96, num_frames=10)
    seen = set()
    for i in range(50):
        v = render_video(split_seed("heldout", i), cfg)
        assert v.families <= HELD_OUT.labels(), (i, v.families - HELD_OUT.labels())
        for kind in ("shape", "texture", "motion", "background"):
            assert v.families_of(kind), (i, kind)
        seen |= v.families
    assert seen == HELD_OUT.labels()


EVERY_FAMILY = sorted(IN_FAMILY.labels() | HELD_OUT.labels())


@pytest.mark.parametrize("family", EVERY_FAMILY)
def test_every_family_renders_with_exact_masks(family):
    """A video narrowed to one family draws it, every object shows up, and the flat-colour render's owners
    are exactly the labels and masks."""
    split = "heldout" if family in HELD_OUT.labels() else "train"
    cfg = SyntheticConfig(height=96, width=96, num_frames=8, families=(family,))
    seed = split_seed(split, 3)
    textured, flat = render_video(seed, cfg), render_video(seed, dataclasses.replace(cfg, flat_colors=True))
    kind, name = family.split(":")
    assert textured.families_of(kind) == (name,)  # everything of its kind is of that family
    assert (textured.areas >= cfg.min_prompt_area).any(axis=0).all()  # every object promptable
    assert np.array_equal(textured.masks, flat.masks)
    owner = np.full(flat.frames.shape[:3], -1)
    for code, color in FLAT_COLORS.items():
        owner[np.all(flat.frames == color, axis=-1)] = code
    assert np.array_equal(owner, flat.labels)
    for j, oid in enumerate(flat.object_ids):
        assert np.array_equal(flat.masks[:, j], owner == oid)


@pytest.mark.parametrize("family", SHAPE_FAMILIES)
def test_every_shape_stays_within_its_extent_bound(family):
    """The scene planner hides objects exactly only if no pixel lies beyond sprite_extent of the centre."""
    rng = np.random.default_rng(SHAPE_FAMILIES.index(family))
    texture = np.zeros((64, 64, 3), np.uint8)
    for _ in range(25):
        img, owner = np.zeros((96, 96, 3), np.uint8), np.zeros((96, 96), np.uint8)
        sprite = Sprite(make_shape(rng, family), make_wobble(rng), texture, 4.0)
        cx, cy, sx, sy = *rng.uniform(40, 56, 2), *rng.uniform(5, 30, 2)
        amps = rng.uniform(-0.07, 0.07, 2)
        area = draw_sprite(img, owner, 1, sprite, cx, cy, rng.uniform(0, 2 * np.pi), sx, sy, amps)
        ys, xs = np.nonzero(owner)
        assert area == ys.size > 0
        reach = np.hypot(xs + 0.5 - cx, ys + 0.5 - cy).max()
        assert reach <= float(sprite_extent(np.float64(sx), np.float64(sy), amps)) - 1.0, family


# ---------------------------------------------------------------------------------------------- stress split

STRESS_SIZE = 64  # px: small frames, full length (the set's point is 600 frames)


@pytest.fixture(scope="module")
def stress():
    return [render_stress_video(i, STRESS_SIZE) for i in range(3)]


def test_the_stress_split_owns_seeds_of_its_own_and_draws_in_family():
    assert SPLITS.index(STRESS_SPLIT) == 4 and SPLITS[:4] == ("train", "val", "test", "heldout")  # none moved
    ours = seed_range(STRESS_SPLIT)
    assert all(ours.stop <= seed_range(s).start or seed_range(s).stop <= ours.start for s in SPLITS[:4])
    assert split_of_seed(split_seed(STRESS_SPLIT, 3)) == STRESS_SPLIT
    assert REGISTRY.for_split(STRESS_SPLIT) is IN_FAMILY  # memory is under test, not appearance


def test_stress_videos_render_deterministically(stress):
    again = render_stress_video(1, STRESS_SIZE)
    assert again.seed == split_seed(STRESS_SPLIT, 1) and again.events == stress[1].events
    assert np.array_equal(again.frames, stress[1].frames) and np.array_equal(again.masks, stress[1].masks)
    assert np.array_equal(again.clutter_areas, stress[1].clutter_areas) and again.clutter_of == stress[1].clutter_of
    assert not np.array_equal(stress[0].frames[:8], stress[1].frames[:8])


def test_stress_videos_hide_objects_for_long_while_a_look_alike_is_in_view(stress):
    windows = seen = 0
    for v in stress:
        assert v.frames.shape[0] >= 600 and v.families <= IN_FAMILY.labels()
        hides = [e for e in v.events if e.kind != "cross"]
        assert all(30 <= e.end - e.start + 1 <= 300 for e in hides) and max(e.end - e.start + 1 for e in hides) > 30
        ids, doubles = list(v.object_ids), v.lookalike_visible()
        for e in hides:  # full occlusions, exact in the truth
            j = ids.index(e.object_id)
            assert not v.visible[e.start:e.end + 1, j].any(), e
            windows += 1
            seen += bool(doubles[e.start:e.end + 1, j].any())
        assert v.reappearances(min_hidden=31)  # an object comes back after more than 30 hidden frames
        assert (~v.visible & doubles).any()  # a look-alike shows while an object is hidden
    assert seen >= 0.8 * windows, (seen, windows)


def test_look_alike_areas_are_the_clutters_visible_pixels():
    """In flat colours a look-alike is painted in the background's colour: its counted pixels are background in
    the truth, and the options that the stress set adds change no default video."""
    cfg = stress_config(64, 40)
    v = render_video(split_seed(STRESS_SPLIT, 2), dataclasses.replace(cfg, flat_colors=True))
    assert v.clutter_areas.shape == (40, len(v.clutter_of)) and len(v.clutter_of) >= len(v.object_ids)
    assert set(v.clutter_of) <= set(v.object_ids.tolist()) and v.clutter_areas.sum() > 0
    assert (v.clutter_areas.sum(axis=1) <= (v.labels == 0).sum(axis=(1, 2))).all()
    plain = SyntheticConfig(height=64, width=64, num_frames=12)
    for seed in (3, split_seed("test", 4)):
        a = render_video(seed, plain)
        b = render_video(seed, dataclasses.replace(plain, event_gap=None, clutter_per_object=0))
        assert np.array_equal(a.frames, b.frames) and a.events == b.events


def test_training_never_draws_a_stress_seed(monkeypatch):
    seeds = []

    def recording(seed, config=None):
        seeds.append(seed)
        return render_video(seed, config)

    monkeypatch.setattr(training_clips, "render_video", recording)
    spec = ClipSpec(seed=1, rank=0, batch=6, size=64, drop_prob=0.2, static_prob=0.0, max_objects=2,
                    image_share=0.0, prompt_mix={"mask": 1.0})
    step_clips(spec, 0, 4)
    assert seeds and {split_of_seed(s) for s in seeds} == {"train"}
