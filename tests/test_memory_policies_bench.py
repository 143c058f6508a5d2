"""benchmarks.memory_policies: the policy spec parser and a tiny end-to-end scoring run on the stress set;
benchmarks.occlusion_phases: its phases and tallies."""

import argparse
import dataclasses
import json
import math

import numpy as np
import pytest

from benchmarks.memory_policies import (PolicySpecError, markdown, parse_policy_spec, parse_rows, score_policies,
                                        write_json)
from benchmarks.occlusion_phases import PhaseTally, phases_of
from model import MemoryPolicy, embedded_checkpoint, load_model


def test_specs_parse_by_the_fields_types():
    assert parse_policy_spec("") == parse_policy_spec("default") == MemoryPolicy()
    p = parse_policy_spec(" num_recent=8, num_keyframes=4 ,store_threshold=0.5,decay=0.01")
    assert p == MemoryPolicy(num_recent=8, num_keyframes=4, store_threshold=0.5, decay=0.01)
    assert isinstance(p.num_recent, int) and isinstance(p.store_threshold, float)
    assert parse_policy_spec("store_threshold=none").store_threshold is None
    bools = [f.name for f in dataclasses.fields(MemoryPolicy) if isinstance(f.default, bool)]
    for name in bools:  # whatever bool fields the policy has: true / false
        assert getattr(parse_policy_spec(f"{name}=true"), name) is True
        assert getattr(parse_policy_spec(f"{name}=False"), name) is False


def test_an_unknown_field_is_named_with_the_known_ones():
    with pytest.raises(PolicySpecError, match="unknown MemoryPolicy field 'num_recnet'") as e:
        parse_policy_spec("num_recent=8,num_recnet=4")
    assert e.value.value == "num_recnet"
    assert all(f.name in str(e.value) for f in dataclasses.fields(MemoryPolicy))
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("spec, bad, message", [
    ("num_recent=eight", "eight", "num_recent must be an int"),
    ("num_recent=8.0", "8.0", "num_recent must be an int"),
    ("num_recent=none", "none", "num_recent must be an int"),
    ("store_threshold=half", "half", "store_threshold must be a number or none"),
    ("num_recent", "num_recent", "FIELD=VALUE"),
    ("num_recent=99", "num_recent=99", "num_recent must be in 0..32"),  # the policy's own range check
])
def test_a_bad_value_fails_naming_it(spec, bad, message):
    with pytest.raises(PolicySpecError, match=message) as e:
        parse_policy_spec(spec)
    assert e.value.value == bad


def test_rows_and_tables():
    rows = parse_rows(["long=num_recent=16,store_threshold=0.5", "ref=default"], ["recent"])
    assert list(rows)[:6] == ["num_recent=4", "default", "num_recent=8", "num_recent=12", "num_recent=16",
                              "num_recent=32"]
    assert rows["default"] == rows["ref"] == MemoryPolicy() and rows["num_recent=32"].num_recent == 32
    assert rows["long"] == MemoryPolicy(num_recent=16, store_threshold=0.5)
    assert parse_rows([], []) == {"default": MemoryPolicy()}
    with pytest.raises(PolicySpecError, match="given twice"):
        parse_rows(["default=num_recent=2"], ["recent"])
    with pytest.raises(PolicySpecError, match="NAME=SPEC"):
        parse_rows(["=num_recent=2"], [])


def test_a_tiny_run_scores_every_row(tmp_path):
    model = load_model("synthetic-tiny", embedded_checkpoint("synthetic-tiny"))
    policies = {"default": MemoryPolicy(), "short": MemoryPolicy(num_recent=2)}
    records = score_policies(model, policies, videos=1, frames=60, image_size=64, min_hidden=31)
    assert [r.name for r in records] == ["default", "short"]
    for r in records:
        assert r.frames == 60 and r.objects >= 1 and r.frames_per_s > 0
        assert all(0 <= v <= 1 for v in (r.jf, r.j, r.f))
        assert r.reappearances >= 1 and 0 <= r.reappear_jf <= 1 and 1 <= r.reappear_objects <= r.objects
        assert r.state_bytes_per_object > 0 and r.policy == dataclasses.asdict(policies[r.name])
        assert r.resident_bytes_per_object is None or r.resident_bytes_per_object >= r.state_bytes_per_object
    assert records[1].state_bytes_per_object < records[0].state_bytes_per_object  # 2 recent frames, not 6
    args = argparse.Namespace(videos=1, frames=60, image_size=64, min_hidden=31, out=tmp_path / "out.json")
    assert markdown(records, args).count("\n| ") == 3  # header and two rows
    write_json(tmp_path / "out.json", records, args)
    rows = json.loads((tmp_path / "out.json").read_text())["rows"]
    assert [r["name"] for r in rows] == ["default", "short"] and not math.isnan(rows[0]["jf"])


def test_occlusion_phases_split_an_objects_track_at_its_hides_and_returns():
    visible = np.array([0, 1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1], dtype=bool)
    got = phases_of(visible, start=1, min_hidden=3)
    assert got[:2] == [None, None]  # before the prompt, and the prompted frame itself
    assert got[2:4] == ["before"] * 2 and got[4:7] == ["hidden"] * 3
    assert got[7:12] == ["return"] * 5 and got[12:14] == ["after"] * 2
    assert got[14] == "hidden" and got[15:] == ["after"] * 2  # a 1-frame hide is no return


def test_occlusion_phases_count_empty_and_elsewhere_predictions():
    truth = np.zeros((8, 8), bool)
    truth[:4, :4] = True
    on, off, half = truth.copy(), np.roll(truth, 4, axis=1), truth | np.roll(truth, 4, axis=0)
    tally = PhaseTally()
    for pred in (on, off, half, np.zeros_like(truth)):
        tally.add("before", pred, truth)
    tally.add("hidden", off, np.zeros_like(truth))
    s = tally.summary()
    assert s["before"]["frames"] == 4 and s["before"]["J"] == pytest.approx((1 + 0 + 0.5 + 0) / 4)
    assert s["before"]["empty"] == 0.25 and s["before"]["elsewhere"] == 0.25  # half out is not "mostly"
    assert s["hidden"] == {"frames": 1, "J": s["hidden"]["J"], "empty": 0.0, "elsewhere": 1.0}
    assert math.isnan(s["return"]["J"]) and s["return"]["frames"] == 0
