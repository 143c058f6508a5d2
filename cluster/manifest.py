"""The job manifest: which videos to segment and with which prompts, read and validated before any work.

A manifest is JSON lines (.jsonl, .json, .ndjson; optionally compressed, e.g. .jsonl.gz) or Parquet
(.parquet, .pq) at any fsspec URL, one video per row:

    {"url": "s3://bucket/v/clip.mp4", "video_id": "clip", "prompts": [
        {"object_id": 1, "frame_index": 0, "points": [[120, 80]], "labels": [1]},
        {"object_id": 2, "box": [10, 10, 60, 90]},
        {"object_id": 3, "frame_index": 40, "mask": {"size": [480, 640], "counts": "..."}}]}

Every mistake is reported as a ManifestError naming the manifest, the 0-based row (for JSON lines, the
0-based line: blank lines are skipped but counted) and the field, before a single frame is decoded, so a
typo never costs a cluster hour. Checks that need the video itself (is the point inside the frame, is the
frame index before the end) run later through `check_prompts_against_video`, after the planner probed it.
Storage options (which may hold credentials) never reach a message: see `redact`.
"""

from __future__ import annotations

import difflib
import json
import math
import numbers
import posixpath
from dataclasses import dataclass
from typing import Any, Iterator
from urllib.parse import urlsplit

import fsspec
import numpy as np
import pyarrow.parquet as pq
from pycocotools import mask as mask_utils

from model.errors import PromptError, SamstreamError
from model.prompts import check_prompt_geometry

from workers.storage_options import parse_storage_options, redact, safe_url

__all__ = [
    "ManifestError", "PromptBoundsError", "PromptSpec", "VideoEntry", "check_prompts_against_video",
    "parse_storage_options", "read_manifest", "redact",
]

ROW_FIELDS = ("url", "video_id", "prompts")
PROMPT_FIELDS = ("object_id", "frame_index", "points", "labels", "box", "mask")
MASK_FIELDS = ("size", "counts")
JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
PARQUET_SUFFIXES = (".parquet", ".pq")
COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz", ".zst", ".lz4")
INT32_MAX = 2**31 - 1  # object_id and frame_index are int32 columns of the masklet table
_SHOW_LIMIT = 200  # characters of an offending value shown in a message (masks can be long)


class ManifestError(SamstreamError, ValueError):
    """A manifest that cannot be used. `row` (0-based) and `field` say where, `value` what, when known."""

    def __init__(self, message: str, row: int | None = None, field: str | None = None, value: Any = None):
        self.row, self.field, self.value = row, field, value
        super().__init__(message)


class PromptBoundsError(SamstreamError, ValueError):
    """A prompt that does not fit its video (frame past the end, point or box outside the frame)."""

    def __init__(self, message: str, video_id: str | None, object_id: int, frame_index: int, value: Any):
        self.video_id, self.object_id, self.frame_index, self.value = video_id, object_id, frame_index, value
        super().__init__(message)


class _Invalid(SamstreamError):
    """Raised by the validators; read_manifest adds the manifest (and the row, once known) as ManifestError."""

    def __init__(self, field: str | None, detail: str, value: Any = None, row: int | None = None):
        self.field, self.detail, self.value, self.row = field, detail, value, row
        super().__init__(detail)


@dataclass(frozen=True)
class PromptSpec:
    """One prompt of one object on one frame, in native pixel coordinates. Exactly one of points (with
    labels), box or mask_rle is set."""

    object_id: int
    frame_index: int
    points: tuple[tuple[float, float], ...] | None = None
    labels: tuple[int, ...] | None = None
    box: tuple[float, float, float, float] | None = None
    mask_rle: dict | None = None  # COCO RLE {"size": [h, w], "counts": str}

    @property
    def kind(self) -> str:
        return "points" if self.points is not None else "box" if self.box is not None else "mask"

    def to_mask(self, height: int, width: int) -> np.ndarray:
        """The mask prompt decoded as a (height, width) bool array; its RLE must have the frame's size."""
        if self.mask_rle is None:
            raise ValueError(f"{_name_prompt(self)} is a {self.kind} prompt, not a mask")
        size = list(self.mask_rle["size"])
        if size != [height, width]:
            raise PromptBoundsError(f"{_name_prompt(self)}: mask size {size} differs from the frame's "
                                    f"[{height}, {width}]", None, self.object_id, self.frame_index, size)
        rle = {"size": size, "counts": self.mask_rle["counts"].encode("ascii")}
        return np.ascontiguousarray(mask_utils.decode(rle).astype(bool))


@dataclass(frozen=True)
class VideoEntry:
    """One row of the manifest: a video and the prompts given for it (none for pseudo-labelling)."""

    row: int
    url: str
    video_id: str
    prompts: tuple[PromptSpec, ...] = ()


# ---------------------------------------------------------------------------------------------- reading

def read_manifest(url: str, storage_options: dict | None = None) -> list[VideoEntry]:
    """Read and validate the manifest at `url` (any fsspec URL); raise ManifestError at the first problem."""
    options = dict(storage_options or {})
    parts = urlsplit(url) if "://" in url else None
    # A cause's text may repeat the URL: hide its password and query (a signed URL's token) there too.
    hidden = {"options": options, "url": [parts.password or "", parts.query] if parts else []}
    shown = redact(safe_url(url), hidden)
    try:
        entries = _validate_rows(_read_rows(url, options))
        if not entries:
            raise _Invalid(None, "no rows; the manifest must list at least one video")
    except _Invalid as exc:
        where = f"manifest {shown}" + (f" row {exc.row}" if exc.row is not None else "")
        where += f", field {exc.field!r}" if exc.field else ""
        # from None: a chained cause would print its own, unredacted, text
        raise ManifestError(redact(f"{where}: {exc.detail}", hidden), exc.row, exc.field, exc.value) from None
    return entries


def _validate_rows(rows: Iterator[tuple[int, Any]]) -> list[VideoEntry]:
    entries: list[VideoEntry] = []
    seen: dict[str, int] = {}  # video_id -> row
    for row, raw in rows:
        try:
            entry = _parse_row(row, raw)
            if entry.video_id in seen:
                raise _Invalid("video_id", f"duplicate video id {entry.video_id!r} (also row "
                               f"{seen[entry.video_id]}); give each row its own video_id", entry.video_id)
        except _Invalid as exc:
            exc.row = row
            raise
        seen[entry.video_id] = row
        entries.append(entry)
    return entries


def _read_rows(url: str, options: dict) -> Iterator[tuple[int, Any]]:
    """(row, raw dict) pairs; the format comes from the file name, checked before any I/O."""
    fmt = _format_of(url)
    try:
        with fsspec.open(url, "rb", compression="infer" if fmt == "jsonl" else None, **options) as f:
            yield from (_jsonl_rows(f) if fmt == "jsonl" else _parquet_rows(f))
    except _Invalid:
        raise
    except FileNotFoundError:
        raise _Invalid(None, "file not found") from None
    except Exception as exc:  # any storage or decoding failure: the cause's text, redacted by the caller
        raise _Invalid(None, f"cannot read the manifest: {type(exc).__name__}: {exc}") from None


def _format_of(url: str) -> str:
    name = posixpath.basename(urlsplit(url).path if "://" in url else url).lower()
    stem = next((name[: -len(s)] for s in COMPRESSION_SUFFIXES if name.endswith(s)), name)
    if stem.endswith(JSONL_SUFFIXES):  # JSON lines may be compressed; Parquet compresses inside
        return "jsonl"
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    ext = posixpath.splitext(name)[1]
    raise _Invalid(None, f"unknown manifest format {ext or name!r}; expected JSON lines "
                   f"({', '.join(JSONL_SUFFIXES)}) or Parquet ({', '.join(PARQUET_SUFFIXES)})", ext)


def _jsonl_rows(f) -> Iterator[tuple[int, Any]]:
    for row, line in enumerate(f):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _Invalid(None, f"not valid UTF-8 ({exc.reason} at byte {exc.start})", row=row) from None
        text = text.lstrip("\ufeff") if row == 0 else text  # a byte-order mark some editors write
        if not text.strip():
            continue
        try:
            raw = json.loads(text, object_pairs_hook=_no_duplicate_keys)
        except ValueError as exc:  # JSONDecodeError, or a key given twice
            raise _Invalid(None, f"invalid JSON: {exc}", row=row) from None
        yield row, raw


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict:
    # json.loads would keep the last of two equal keys silently; a duplicated key is a mistake to report.
    out = dict(pairs)
    if len(out) != len(pairs):
        keys = [k for k, _ in pairs]
        raise ValueError(f"key {next(k for i, k in enumerate(keys) if k in keys[:i])!r} given twice")
    return out


def _parquet_rows(f) -> Iterator[tuple[int, Any]]:
    pf = pq.ParquetFile(f)
    names = pf.schema_arrow.names
    for name in names:
        if name not in ROW_FIELDS:
            raise _Invalid(name, _unknown_field_detail(name, ROW_FIELDS))
    if "url" not in names:
        raise _Invalid("url", "no 'url' column")
    row = 0
    for batch in pf.iter_batches(batch_size=4096):  # bounded memory for corpus-sized manifests
        for raw in batch.to_pylist():
            yield row, raw
            row += 1


# -------------------------------------------------------------------------------------------- validation

def _parse_row(row: int, raw: Any) -> VideoEntry:
    if not isinstance(raw, dict):
        raise _Invalid(None, f"a row must be a JSON object, got {_show(raw)}", raw)
    _reject_unknown(raw, ROW_FIELDS, "")
    url = raw.get("url")
    if not isinstance(url, str) or not url.strip():
        detail = "missing (every row needs the url of its video)" if url is None \
            else f"must be a non-empty string, got {_show(url)}"
        raise _Invalid("url", detail, url)
    video_id = raw.get("video_id")
    if video_id is None:
        video_id = _derive_video_id(url)
    elif not isinstance(video_id, str) or not video_id.strip():
        raise _Invalid("video_id", f"must be a non-empty string, got {_show(video_id)}", video_id)
    return VideoEntry(row, url, video_id, _parse_prompts(raw.get("prompts")))


def _derive_video_id(url: str) -> str:
    """The file name without its extension, or a folder's name (a trailing "/" keeps dots in it)."""
    path = urlsplit(url).path if "://" in url else url  # drops ?query (it may hold a signature)
    name = posixpath.basename(path.rstrip("/"))
    if name and not path.endswith("/"):
        name = posixpath.splitext(name)[0] or name
    if not name:
        raise _Invalid("video_id", f"cannot derive a video id from url {_show(url)}; give a video_id", url)
    return name


def _reject_unknown(raw: dict, known: tuple[str, ...], where: str) -> None:
    # Checked on the keys, null or not: a misspelt field must fail loudly rather than be ignored.
    for key in raw:
        if key not in known:
            raise _Invalid(f"{where}{key}", _unknown_field_detail(key, known), key)


def _unknown_field_detail(key: Any, known: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(str(key), known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown field {key!r}{hint}; known fields: {', '.join(sorted(known))}"


def _parse_prompts(value: Any) -> tuple[PromptSpec, ...]:
    if isinstance(value, str):  # a JSON string column (Parquet) or a JSON-in-JSON field
        if not value.strip():
            return ()
        try:
            value = json.loads(value, object_pairs_hook=_no_duplicate_keys)
        except ValueError as exc:
            raise _Invalid("prompts", f"a string must hold a JSON list of prompts: {exc}", value) from None
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)):
        raise _Invalid("prompts", f"must be a list of prompts, got {_show(value)}", value)
    prompts = tuple(_parse_prompt(p, f"prompts[{i}]") for i, p in enumerate(value))
    first: dict[tuple[int, int], int] = {}
    for i, p in enumerate(prompts):
        key = (p.object_id, p.frame_index)
        if key in first:
            raise _Invalid(f"prompts[{i}]", f"a second prompt for object {p.object_id} on frame "
                           f"{p.frame_index} (the first is prompts[{first[key]}])", list(key))
        first[key] = i
    return prompts


def _parse_prompt(raw: Any, where: str) -> PromptSpec:
    if not isinstance(raw, dict):
        raise _Invalid(where, f"a prompt must be an object, got {_show(raw)}", raw)
    _reject_unknown(raw, PROMPT_FIELDS, f"{where}.")
    d = {k: v for k, v in raw.items() if v is not None}  # Parquet structs carry every field, null if unset
    object_id = _index(d.get("object_id"), f"{where}.object_id")
    frame_index = _index(d.get("frame_index", 0), f"{where}.frame_index")
    if "labels" in d and "points" not in d:
        raise _Invalid(f"{where}.labels", "labels given without points", d["labels"])
    kinds = [k for k in ("points", "box", "mask") if k in d]
    if len(kinds) != 1:
        got = " and ".join(kinds) if kinds else "none"
        raise _Invalid(where, f"a prompt needs exactly one of points (with labels), box or mask; got {got}")
    if kinds == ["points"]:
        points, labels = _parse_points(d, where)
        return PromptSpec(object_id, frame_index, points=points, labels=labels)
    if kinds == ["box"]:
        return PromptSpec(object_id, frame_index, box=_parse_box(d["box"], f"{where}.box"))
    return PromptSpec(object_id, frame_index, mask_rle=_parse_mask(d["mask"], f"{where}.mask"))


def _index(value: Any, field: str) -> int:
    if value is None:
        raise _Invalid(field, "missing (every prompt names its object)")
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or not 0 <= value <= INT32_MAX:
        raise _Invalid(field, f"must be an integer in [0, {INT32_MAX}], got {_show(value)}", value)
    return int(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _parse_points(d: dict, where: str) -> tuple[tuple, tuple]:
    points, labels = d["points"], d.get("labels")
    if not isinstance(points, (list, tuple)) or not points or not all(
            isinstance(p, (list, tuple)) and len(p) == 2 and all(map(_is_number, p)) for p in points):
        raise _Invalid(f"{where}.points", f"must be a non-empty list of [x, y] finite numbers, got "
                       f"{_show(points)}", points)
    if labels is None:
        raise _Invalid(f"{where}.labels", "missing: points need labels (1 positive, 0 negative)")
    if not isinstance(labels, (list, tuple)) or not all(
            isinstance(v, numbers.Integral) and not isinstance(v, bool) and v in (0, 1) for v in labels):
        raise _Invalid(f"{where}.labels", f"must be a list of 0 (negative) or 1 (positive), got "
                       f"{_show(labels)}", labels)
    if len(labels) != len(points):
        raise _Invalid(f"{where}.labels", f"{len(labels)} labels for {len(points)} points", labels)
    return tuple((float(x), float(y)) for x, y in points), tuple(int(v) for v in labels)


def _parse_box(box: Any, field: str) -> tuple[float, float, float, float]:
    if not isinstance(box, (list, tuple)) or len(box) != 4 or not all(map(_is_number, box)):
        raise _Invalid(field, f"must be [x0, y0, x1, y1], 4 finite numbers, got {_show(box)}", box)
    x0, y0, x1, y1 = (float(v) for v in box)
    if x1 < x0 or y1 < y0:
        raise _Invalid(field, f"{'x1 < x0' if x1 < x0 else 'y1 < y0'} in {_show(box)}", box)
    return x0, y0, x1, y1


def _parse_mask(mask: Any, field: str) -> dict:
    if not isinstance(mask, dict):
        raise _Invalid(field, f"must be a COCO RLE object {{\"size\": [h, w], \"counts\": str}}, got "
                       f"{_show(mask)}", mask)
    _reject_unknown(mask, MASK_FIELDS, f"{field}.")
    size, counts = mask.get("size"), mask.get("counts")
    if not isinstance(size, (list, tuple)) or len(size) != 2 or not all(
            isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0 for v in size):
        raise _Invalid(f"{field}.size", f"must be [height, width], two positive integers, got {_show(size)}",
                       size)
    if isinstance(counts, bytes):  # pycocotools itself produces bytes; Parquet may store them as binary
        counts = counts.decode("ascii", errors="replace")
    if not isinstance(counts, str):
        raise _Invalid(f"{field}.counts", f"must be a COCO compressed RLE string, got {_show(counts)}", counts)
    h, w = int(size[0]), int(size[1])
    _check_rle(counts, h, w, f"{field}.counts")
    return {"size": [h, w], "counts": counts}


def _check_rle(counts: str, height: int, width: int, field: str) -> None:
    """Decode the run lengths ourselves first: pycocotools reads a short or corrupt string into
    uninitialised memory instead of failing, so it only sees strings whose runs cover height*width."""
    runs = _rle_runs(counts)
    if runs is None or sum(runs) != height * width:
        covered = "corrupt" if runs is None else f"covers {sum(runs)} pixels, not {height}x{width}"
        raise _Invalid(field, f"not a valid COCO RLE for size [{height}, {width}] ({covered}): "
                       f"{_show(counts)}", counts)
    area = int(mask_utils.area({"size": [height, width], "counts": counts.encode("ascii")}))
    if area != sum(runs[1::2]):  # pycocotools must read it as we did
        raise _Invalid(field, f"pycocotools decodes this RLE differently: {_show(counts)}", counts)


def _rle_runs(counts: str) -> list[int] | None:
    """Run lengths of a COCO compressed RLE string (pycocotools' rleFrString), None when malformed."""
    runs: list[int] = []
    pos = 0
    while pos < len(counts):
        x, k, more = 0, 0, True
        while more:
            if pos >= len(counts) or not 48 <= ord(counts[pos]) < 48 + 64:
                return None
            c = ord(counts[pos]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            pos, k = pos + 1, k + 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)  # sign extension: deltas may be negative
        if len(runs) > 2:
            x += runs[-2]  # from the fourth run on, each is stored as a difference to the one two back
        if not 0 <= x < 2**32:
            return None
        runs.append(x)
    return runs


# ------------------------------------------------------------------------------- checks against a video

def check_prompts_against_video(entry: VideoEntry, num_frames: int, height: int,
                                width: int) -> tuple[tuple[PromptSpec, ...], list[str]]:
    """`entry`'s prompts fitted to the probed video, and a note for each one changed (empty: none was).

    A box partly outside the frame is clipped to it; anything else that does not fit (a frame past the end,
    a point or a whole box outside the frame, a mask of another size) raises PromptBoundsError for the first
    such prompt. The geometry check is model.prompts' own, the one the tracker runs on every frame."""
    prompts, notes = [], []
    for p in entry.prompts:
        fitted, note = _fit_prompt(entry.video_id, p, num_frames, height, width)
        prompts.append(fitted)
        notes += [note] if note else []
    return tuple(prompts), notes


def _fit_prompt(video_id: str, p: PromptSpec, num_frames: int, height: int,
                width: int) -> tuple[PromptSpec, str | None]:
    name = f"object {p.object_id} frame {p.frame_index}"
    if p.frame_index >= num_frames:
        raise PromptBoundsError(f"video {video_id!r} {name}: frame_index {p.frame_index} is past the end of the "
                                f"video ({num_frames} frames)", video_id, p.object_id, p.frame_index, p.frame_index)
    mask_size = None if p.mask_rle is None else p.mask_rle["size"]
    try:
        geometry = check_prompt_geometry(p.points, p.box, mask_size, height, width, name, p.object_id)
    except PromptError as e:  # the same problem, named with its video
        raise PromptBoundsError(f"video {video_id!r} {e}", video_id, p.object_id, p.frame_index, e.value) from None
    if geometry.note is None:
        return p, None
    box = tuple(geometry.box.tolist())  # only a box is ever clipped; a box prompt holds nothing else
    return PromptSpec(p.object_id, p.frame_index, box=box), geometry.note


def _name_prompt(p: PromptSpec) -> str:
    return f"prompt (object_id {p.object_id}, frame_index {p.frame_index})"


def _show(value: Any) -> str:
    try:
        text = json.dumps(value, allow_nan=True)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= _SHOW_LIMIT else text[: _SHOW_LIMIT - 3] + "..."
