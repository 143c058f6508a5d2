"""The benchmark job on a tiny configuration, in-process: every configuration measured once, its Parquet read
back by independent readers, the markdown and the plot; a preset without a reference config; bad arguments."""

import math

import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from jobs.benchmark import main
from jobs.benchmark.report import SCHEMA, STAGE_COLUMNS

TINY = ["--preset", "sam2.1-tiny", "--image-size", "64", "--objects", "3", "--frames", "4", "--batch-sizes", "1,2",
        "--actors", "1", "--memory-lengths", "8,16", "--repeats", "1", "--profile-frames", "3", "--threads", "1"]
# (system, mode, streams, actors, frames) of every row the tiny run must write, once each.
EXPECTED = {
    ("reference", "single", 1, None, 4), ("samstream", "single", 1, None, 4),
    ("samstream", "batched", 1, None, 4), ("samstream", "batched", 2, None, 4),
    ("samstream", "job", 1, 1, 4), ("samstream", "alone", 1, 1, 4),
    ("reference", "memory", 1, None, 8), ("reference", "memory", 1, None, 16),
    ("samstream", "memory", 1, None, 8), ("samstream", "memory", 1, None, 16),
}
SPEED = {"single", "batched"}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    threads = torch.get_num_threads()
    code = main(TINY + ["--out", str(out)])
    assert torch.get_num_threads() == threads  # the job restores the caller's thread count
    return code, out


def _key(row) -> tuple:
    actors = None if pd.isna(row.actors) else int(row.actors)
    return row.system, row.mode, int(row.streams), actors, int(row.frames)


def test_parquet_has_one_row_per_configuration_with_the_schema(tiny_run):
    code, out = tiny_run
    assert code == 0
    table = pq.read_table(out / "results.parquet")
    assert table.schema.names == SCHEMA.names
    for field in SCHEMA:
        assert table.schema.field(field.name).type == field.type, field.name
    df = table.to_pandas()
    keys = [_key(r) for r in df.itertuples()]
    assert sorted(keys, key=str) == sorted(EXPECTED, key=str)  # each exactly once
    assert (df.preset == "sam2.1-tiny").all() and (df.image_size == 64).all() and (df.objects == 3).all()
    assert (df.device == "cpu").all() and (df.dtype == "fp32").all() and (~df.compiled).all()
    assert (df.reference_dtype == "fp32").all()  # "same" as --dtype
    assert (df.threads == 1).all() and df.torch_version.eq(torch.__version__).all() and df.machine.str.len().gt(0).all()


def _positive(value) -> bool:
    return value is not None and not pd.isna(value) and math.isfinite(value) and value > 0


def test_measured_values_are_positive_and_finite(tiny_run):
    df = pd.read_parquet(tiny_run[1] / "results.parquet")
    for r in df.itertuples():
        assert _positive(r.frames_per_s) and _positive(r.ms_per_frame), _key(r)
        assert _positive(r.peak_mem_mb), _key(r)
        if r.mode in SPEED:  # the profiled pass fills every model stage
            stages = ["ms_image_encoder", "ms_memory_attention", "ms_mask_decoder", "ms_memory_encoder"]
            assert all(_positive(getattr(r, c)) for c in stages), (_key(r), [getattr(r, c) for c in stages])
        if r.system == "reference" and r.mode == "single":
            assert _positive(r.ms_decode) and _positive(r.setup_s)  # its whole-video load, counted and reported
            assert pd.isna(r.speedup_vs_reference)
        if r.system == "samstream" and r.mode != "memory":
            assert _positive(r.speedup_vs_reference), _key(r)
        if r.mode == "job":
            assert all(_positive(getattr(r, c)) for c in ("ms_decode", "ms_model", "ms_rle_write")), _key(r)
        if r.mode == "memory":
            assert _positive(r.mem_baseline_mb) and r.memory_kind == "rss_peak"
            assert r.peak_mem_mb >= r.mem_baseline_mb * 0.99, _key(r)
            assert _positive(r.memory_vs_reference) == (r.system == "samstream"), _key(r)
    single = df[(df["mode"] == "single") & (df.system == "samstream")].iloc[0]
    assert single.ms_model == pytest.approx(single.ms_per_frame)
    assert set(STAGE_COLUMNS) <= set(df.columns)


def test_markdown_lists_every_configuration_and_the_png_opens(tiny_run):
    out = tiny_run[1]
    text = (out / "results.md").read_text()
    for label in ("reference single", "samstream single", "samstream batched B=1", "samstream batched B=2",
                  "samstream job A=1", "samstream alone A=1"):
        assert f"| {label} |" in text, label
    assert "## Peak memory against video length" in text
    assert "| 8 |" in text and "| 16 |" in text
    assert "job / alone" in text and "vs reference" in text
    with Image.open(out / "results.png") as img:
        img.load()
        assert img.size[0] > 200 and img.size[1] > 200


def test_a_preset_without_a_reference_config_skips_it_with_a_note(tmp_path):
    code = main(["--preset", "synthetic-tiny", "--image-size", "64", "--frames", "3", "--which", "ref,ours",
                 "--repeats", "1", "--profile-frames", "2", "--out", str(tmp_path)])
    assert code == 0
    df = pd.read_parquet(tmp_path / "results.parquet")
    assert [(r.system, r.mode) for r in df.itertuples()] == [("samstream", "single")]
    assert df.speedup_vs_reference.isna().all()
    text = (tmp_path / "results.md").read_text()
    assert "reference skipped: preset 'synthetic-tiny' has no reference config" in text


def test_each_system_at_its_own_dtype_and_memory_of_ours_alone(tmp_path):
    code = main(["--preset", "sam2.1-tiny", "--image-size", "64", "--frames", "3", "--which", "ref,memory",
                 "--memory-systems", "samstream", "--memory-lengths", "4,8", "--dtype", "bf16", "--reference-dtype",
                 "fp32", "--repeats", "1", "--profile-frames", "2", "--out", str(tmp_path)])
    assert code == 0
    df = pd.read_parquet(tmp_path / "results.parquet")
    assert sorted((r.system, r.mode, r.frames) for r in df.itertuples()) == [
        ("reference", "single", 3), ("samstream", "memory", 4), ("samstream", "memory", 8)]
    assert (df.dtype == "bf16").all() and (df.reference_dtype == "fp32").all()
    text = (tmp_path / "results.md").read_text()
    assert "bf16 (reference fp32)" in text
    ours = df[df["mode"] == "memory"].sort_values("frames")
    growth = ours.peak_mem_mb.iloc[1] / ours.peak_mem_mb.iloc[0]
    assert f"| 8 | - | {ours.peak_mem_mb.iloc[1]:.0f} | - | {growth:.2f}x |" in text  # ours against its shortest


@pytest.mark.parametrize("args, named", [
    (["--batch-sizes", "1,x"], "'1,x'"),
    (["--actors", "0,1"], "'0,1'"),
    (["--which", "ours,gpu"], "'gpu'"),
    (["--preset", "no-such-model"], "'no-such-model'"),
    (["--image-size", "100"], "100"),
    (["--frames", "1"], "got 1"),
    (["--objects", "0"], "got 0"),
    (["--device", "tpu"], "'tpu'"),
    (["--dtype", "fp8"], "'fp8'"),
    (["--reference-dtype", "fp16"], "'fp16'"),
    (["--memory-systems", "samstream,gpu"], "'gpu'"),
    (["--num-recent", "40"], "40"),
    (["--retrieval-pool", "8"], "(8, 0)"),
])
def test_bad_arguments_exit_1_naming_the_value(args, named, tmp_path, capsys):
    assert main(args + ["--out", str(tmp_path / "never")]) == 1
    assert named in capsys.readouterr().err
    assert not (tmp_path / "never").exists()  # nothing written before the arguments are checked


def _memory_run(tmp_path, name: str, policy: list[str]) -> pd.DataFrame:
    code = main(["--preset", "sam2.1-tiny", "--image-size", "64", "--frames", "3", "--which", "ours,memory",
                 "--memory-systems", "samstream", "--memory-lengths", "12", "--repeats", "1", "--profile-frames", "2",
                 "--out", str(tmp_path / name)] + policy)
    assert code == 0
    return pd.read_parquet(tmp_path / name / "results.parquet")


def test_a_memory_policy_reaches_ours_in_process_and_in_its_probes(tmp_path):
    default = _memory_run(tmp_path, "default", [])
    small = _memory_run(tmp_path, "small", ["--num-recent", "2", "--int8-memory"])
    assert (default.memory_policy == "default").all()
    assert (small.memory_policy == "num_recent=2,int8=true").all()
    assert sorted(small["mode"]) == ["memory", "single"]
    # The memory row ran in a fresh process: its state bytes show the policy reached it (2 recent frames in
    # int8 against 6 in bf16; the 15 float32 pointers, which no policy shrinks, are most of the stored bytes
    # at 64 px), after 12 frames, enough to fill both rings.
    a, b = (df[df["mode"] == "memory"].iloc[0] for df in (default, small))
    assert 0 < b.state_kib_per_object < a.state_kib_per_object
    assert 0 < b.resident_kib_per_object < 0.5 * a.resident_kib_per_object
    text = (tmp_path / "small" / "results.md").read_text()
    assert "memory policy of ours: num_recent=2,int8=true" in text
    assert "ours keeps num_recent=2,int8=true, the reference its own" in text
    assert f"| {b.state_kib_per_object:.1f} | {b.resident_kib_per_object:.1f} |" in text


def test_the_in_process_tracker_keeps_the_policy_asked_for(tmp_path):
    from jobs.benchmark.bench import Bench
    from jobs.benchmark.cli import config_from_args, parse_args
    from model import MemoryPolicy

    cfg = config_from_args(parse_args(["--preset", "sam2.1-tiny", "--image-size", "64", "--retrieval-pool", "4",
                                       "--retrieval-topk", "1", "--coarse-after", "2", "--out", str(tmp_path)]))
    bench = Bench(cfg, tmp_path)
    bench.ref_reason = "not needed here"  # our tracker alone
    bench.prepare()
    assert bench.tracker.policy == cfg.policy == MemoryPolicy(retrieval_pool=4, retrieval_topk=1, coarse_after=2)
