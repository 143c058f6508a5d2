"""The benchmark job's records: one row per measured configuration (Parquet), a markdown table with the
speed-ups against the reference measured in the same run, and a plot drawn with PIL (no matplotlib here)."""

from __future__ import annotations

import datetime
import math
import os
import platform
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image, ImageDraw, ImageFont

STAGE_COLUMNS = ("ms_decode", "ms_image_encoder", "ms_memory_attention", "ms_mask_decoder", "ms_memory_encoder",
                 "ms_model", "ms_rle_write", "ms_snapshot")


@dataclass(frozen=True)
class RunInfo:
    """What is the same for every row of one run."""

    date: str  # UTC, ISO 8601
    machine: str  # platform, CPU count, GPU name if any
    git_commit: str | None
    torch_version: str
    preset: str
    image_size: int
    objects: int
    device: str
    dtype: str  # ours
    reference_dtype: str
    compiled: bool
    threads: int  # torch threads of every measuring process
    repeats: int
    reference_compiled: bool  # the reference in its fastest mode (vos_optimized)
    memory_policy: str  # ours: its MemoryPolicy as a spec ("default": the reference's; model.memory_policy_spec)


@dataclass
class Row:
    """One measured configuration. Modes: single (one video: the reference predictor, or our tracker), batched
    (`streams` streams stepped together), job (the segment job, `actors` actors), alone (our tracker in `actors`
    processes side by side on the job's pre-decoded videos), memory (one video of `frames`, in a fresh process).
    Times are medians over the repeats; ms_* columns are per frame, None where not measured."""

    system: str  # "reference" or "samstream"
    mode: str
    frames: int  # frames per stream (video)
    streams: int = 1  # streams stepped together (batched), or videos in the corpus (job, alone)
    actors: int | None = None
    frames_per_s: float | None = None  # all streams together
    ms_per_frame: float | None = None
    setup_s: float | None = None  # the reference's init_state (it loads the whole video first; counted in its speed)
    ms_decode: float | None = None
    ms_image_encoder: float | None = None
    ms_memory_attention: float | None = None
    ms_mask_decoder: float | None = None
    ms_memory_encoder: float | None = None
    ms_model: float | None = None
    ms_rle_write: float | None = None
    ms_snapshot: float | None = None
    peak_mem_mb: float | None = None
    mem_baseline_mb: float | None = None  # memory rows: right after the model was built
    memory_kind: str | None = None  # rss_peak | cuda_max_allocated
    # ours, memory rows: TrackerState bytes per object at the end of the video (stored: what a snapshot
    # carries; resident: with the memory-attention key/value cache), set by the memory policy
    state_kib_per_object: float | None = None
    resident_kib_per_object: float | None = None
    speedup_vs_reference: float | None = None  # frames/s over the reference's, same run
    memory_vs_reference: float | None = None  # memory rows: our peak over the reference's at the same length
    note: str | None = None

    @property
    def label(self) -> str:
        extra = {"batched": f" B={self.streams}", "job": f" A={self.actors}", "alone": f" A={self.actors}",
                 "memory": f" T={self.frames}"}.get(self.mode, "")
        return f"{self.system} {self.mode}{extra}"


def _pa_type(annotation: str) -> pa.DataType:
    base = annotation.split("|")[0].strip()
    return {"str": pa.string(), "int": pa.int64(), "float": pa.float64(), "bool": pa.bool_()}[base]


SCHEMA = pa.schema([(f.name, _pa_type(f.type)) for cls in (RunInfo, Row) for f in fields(cls)])


def machine_info() -> str:
    parts = [platform.platform(), f"{os.cpu_count()} CPUs", platform.processor() or platform.machine()]
    if torch.cuda.is_available():
        parts.append(f"GPU {torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}")
    return ", ".join(p for p in parts if p)


def git_commit(repo: Path) -> str | None:
    """The checkout's commit, read from .git without running git (None outside a checkout, e.g. a Ray
    job's working-dir copy)."""
    try:
        head = (repo / ".git" / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head
        ref = head[5:]
        loose = repo / ".git" / ref
        if loose.exists():
            return loose.read_text().strip()
        for line in (repo / ".git" / "packed-refs").read_text().splitlines():
            if line.endswith(" " + ref):
                return line.split()[0]
    except OSError:
        pass
    return None


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def add_ratios(rows: list[Row]) -> None:
    """Speed-ups against the reference's single-video speed, and memory against its peak at equal length."""
    ref = next((r.frames_per_s for r in rows if r.system == "reference" and r.mode == "single"), None)
    ref_mem = {r.frames: r.peak_mem_mb for r in rows if r.mode == "memory" and r.system == "reference"}
    for r in rows:
        if r.system == "samstream" and r.mode != "memory" and ref and r.frames_per_s:
            r.speedup_vs_reference = r.frames_per_s / ref
        if r.system == "samstream" and r.mode == "memory" and ref_mem.get(r.frames) and r.peak_mem_mb:
            r.memory_vs_reference = r.peak_mem_mb / ref_mem[r.frames]


def write_parquet(info: RunInfo, rows: list[Row], path: Path) -> None:
    table = pa.Table.from_pylist([asdict(info) | asdict(r) for r in rows], schema=SCHEMA)
    pq.write_table(table, path)


def _fmt(value, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def markdown(info: RunInfo, rows: list[Row], command: str, notes: list[str]) -> str:
    head = [f"# samstream benchmark, {info.date}", "",
            f"`{command}`", "",
            f"machine: {info.machine}; torch {info.torch_version}; commit {info.git_commit or 'unknown'}; "
            f"preset {info.preset} at {info.image_size} px, {info.objects} objects; device {info.device}, "
            f"{info.dtype} (reference {info.reference_dtype}), compiled {info.compiled} (reference "
            f"{info.reference_compiled}), {info.threads} torch "
            f"threads per process, median of "
            f"{info.repeats} repeats; memory policy of ours: {info.memory_policy}", ""]
    speed = [r for r in rows if r.mode != "memory"]
    lines = head + ["## Speed (ms per frame by stage)", "",
                    "| config | frames | streams | actors | frames/s | vs reference | ms/frame | decode | image enc. "
                    "| mem. attention | mask dec. | mem. enc. | model | rle+write | snapshot | setup s | peak MB |",
                    "|---" * 17 + "|"]
    for r in speed:
        stages = " | ".join(_fmt(getattr(r, c)) for c in STAGE_COLUMNS)
        lines.append(f"| {r.label} | {r.frames} | {r.streams} | {_fmt(r.actors)} | {_fmt(r.frames_per_s, 2)} | "
                     f"{_ratio(r.speedup_vs_reference)} | {_fmt(r.ms_per_frame)} | {stages} | {_fmt(r.setup_s, 2)} "
                     f"| {_fmt(r.peak_mem_mb, 0)} |")
    lines += _job_lines(rows) + _memory_lines(rows)
    lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def _job_lines(rows: list[Row]) -> list[str]:
    jobs = {r.actors: r for r in rows if r.mode == "job"}
    alone = {r.actors: r for r in rows if r.mode == "alone"}
    if not jobs:
        return []
    out = ["", "## The segment job against the tracker alone (same actors / processes and threads)", "",
           "| actors | job frames/s (end to end) | tracker alone frames/s | job / alone |", "|---|---|---|---|"]
    for a, j in sorted(jobs.items()):
        al = alone.get(a)
        ratio = j.frames_per_s / al.frames_per_s if al and al.frames_per_s and j.frames_per_s else None
        out.append(f"| {a} | {_fmt(j.frames_per_s, 2)} | {_fmt(al.frames_per_s if al else None, 2)} | "
                   f"{_fmt(ratio, 2)} |")
    return out


def _memory_lines(rows: list[Row]) -> list[str]:
    mem = [r for r in rows if r.mode == "memory"]
    if not mem:
        return []
    kind = mem[0].memory_kind or "peak"
    out = ["", f"## Peak memory against video length ({kind}, MB, each in a fresh process)", "",
           "| frames | reference | samstream | samstream / reference | samstream / its shortest | reference frames/s "
           "| samstream frames/s | samstream state KiB/object: stored | resident |",
           "|---|---|---|---|---|---|---|---|---|"]
    ours_rows = sorted((r for r in mem if r.system == "samstream" and r.peak_mem_mb), key=lambda r: r.frames)
    for n in sorted({r.frames for r in mem}):
        ref = next((r for r in mem if r.frames == n and r.system == "reference"), None)
        ours = next((r for r in mem if r.frames == n and r.system == "samstream"), None)
        out.append(f"| {n} | {_fmt(ref.peak_mem_mb if ref else None, 0)} | "
                   f"{_fmt(ours.peak_mem_mb if ours else None, 0)} | "
                   f"{_ratio(ours.memory_vs_reference if ours else None)} | "
                   f"{_ratio(ours.peak_mem_mb / ours_rows[0].peak_mem_mb if ours and ours.peak_mem_mb else None)} | "
                   f"{_fmt(ref.frames_per_s if ref else None, 2)} | {_fmt(ours.frames_per_s if ours else None, 2)} | "
                   f"{_fmt(ours.state_kib_per_object if ours else None, 1)} | "
                   f"{_fmt(ours.resident_kib_per_object if ours else None, 1)} |")
    return out


# ---------------------------------------------------------------------------------------------- plot

W, H, PAD = 1200, 520, 40
SYSTEM_COLORS = {"reference": (214, 96, 77), "samstream": (67, 147, 195)}


def plot(rows: list[Row], path: Path, title: str) -> None:
    """Left: frames/s of every speed configuration (bars). Right: peak memory against video length (lines)."""
    img = Image.new("RGB", (W, H), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    draw.text((PAD, 10), title, fill="black", font=font)
    _bars(draw, font, [r for r in rows if r.mode != "memory" and r.frames_per_s], (PAD, 40, W // 2 - PAD, H - PAD))
    _lines(draw, font, [r for r in rows if r.mode == "memory" and r.peak_mem_mb], (W // 2 + PAD, 40, W - PAD,
                                                                                    H - PAD))
    img.save(path)


def _bars(draw, font, rows: list[Row], box) -> None:
    x0, y0, x1, y1 = box
    draw.text((x0, y0), "frames/s", fill="black", font=font)
    if not rows:
        return
    top = max(r.frames_per_s for r in rows)
    step = (y1 - y0 - 20) / len(rows)
    label_w = 170
    for i, r in enumerate(rows):
        y = y0 + 20 + i * step
        length = (x1 - x0 - label_w - 60) * r.frames_per_s / top
        draw.text((x0, y + step / 2 - 6), r.label[:28], fill="black", font=font)
        draw.rectangle([x0 + label_w, y + 2, x0 + label_w + max(length, 1), y + step - 2],
                       fill=SYSTEM_COLORS.get(r.system, (120, 120, 120)))
        draw.text((x0 + label_w + length + 4, y + step / 2 - 6), f"{r.frames_per_s:.2f}", fill="black", font=font)


def _lines(draw, font, rows: list[Row], box) -> None:
    x0, y0, x1, y1 = box
    draw.text((x0, y0), "peak memory (MB) against video length (frames)", fill="black", font=font)
    if not rows:
        return
    top = max(r.peak_mem_mb for r in rows) * 1.1
    longest = max(r.frames for r in rows)
    ax0, ay0, ax1, ay1 = x0 + 50, y0 + 30, x1 - 10, y1 - 30
    draw.line([ax0, ay0, ax0, ay1, ax1, ay1], fill="black")
    draw.text((x0, ay0), f"{top:.0f}", fill="black", font=font)
    draw.text((x0 + 30, ay1 - 6), "0", fill="black", font=font)
    for n in sorted({r.frames for r in rows}):  # a tick under every measured length
        x = ax0 + (ax1 - ax0) * n / longest
        draw.line([x, ay1, x, ay1 + 4], fill="black")
        draw.text((x - 10, ay1 + 8), str(n), fill="black", font=font)

    def xy(r: Row) -> tuple[float, float]:
        return ax0 + (ax1 - ax0) * r.frames / longest, ay1 - (ay1 - ay0) * r.peak_mem_mb / top

    for k, system in enumerate(("reference", "samstream")):
        pts = [xy(r) for r in sorted(rows, key=lambda r: r.frames) if r.system == system]
        color = SYSTEM_COLORS[system]
        if len(pts) > 1:
            draw.line(pts, fill=color, width=3)
        for x, y in pts:
            draw.ellipse([x - 4, y - 4, x + 4, y + 4], fill=color)
        draw.text((ax0 + 10, ay0 + 14 * k), system, fill=color, font=font)
