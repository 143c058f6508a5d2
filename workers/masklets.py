"""Masklet rows: masks -> COCO RLE, and part files written exactly once.

Output layout (DESIGN.md): ``<out>/masklets/video_id=<escaped>/part-<stream:05d>-<chunk:06d>.parquet``.
A part's name depends only on (video, stream, chunk), so running a chunk again replaces its part instead of
adding a second one. Writes are atomic: on a local filesystem a hidden temp file in the same directory is
renamed over the part; on object stores the whole Parquet file is built in memory and PUT in one call
(a buffered fsspec file commits on close even after an exception, leaving a partial object).

Where video_id lives: ONLY in the hive partition directory, not as a column inside part files. Measured with
pyarrow 26, duckdb 2.0 and pandas 3.1:
- pandas.read_parquet(<out>/masklets) infers hive partitions as dictionary columns and then fails with
  "Unable to merge: Field video_id has incompatible types: string vs dictionary" when the files carry the
  column too (a dictionary column in the files breaks pyarrow.dataset instead). Partition-only works in all
  three readers, and all three URI-decode the partition value back to the original id.
- Caveat: pyarrow and pandas infer the partition type from the values: when EVERY id of a dataset parses as
  an integer ("0001", "17") they come back as int32 ("0001" -> 1). duckdb keeps VARCHAR. Read with
  ``partitioning=MASKLET_PARTITIONING`` (pyarrow.dataset, pandas) or ``read_masklets()`` to always get strings.
- pyarrow reads the value "__HIVE_DEFAULT_PARTITION__" as null however it is escaped (it decodes before it
  compares), so that id is rejected, like the empty id.
A lone part file therefore lacks video_id; PART_SCHEMA is MASKLET_SCHEMA without it.
"""

from __future__ import annotations

import string
import urllib.parse
import warnings
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from pycocotools import mask as mask_utils

from model.errors import SamstreamError

MASKLET_SCHEMA = pa.schema([
    ("video_id", pa.string()), ("object_id", pa.int32()), ("frame_index", pa.int32()),
    ("time_s", pa.float64()), ("height", pa.int32()), ("width", pa.int32()), ("mask_rle", pa.string()),
    ("bbox_xywh", pa.list_(pa.float32(), 4)), ("area", pa.int64()), ("score", pa.float32()),
    ("object_score", pa.float32()), ("visible", pa.bool_()), ("is_prompt", pa.bool_()),
])
PART_SCHEMA = MASKLET_SCHEMA.remove(0)  # what a part file holds: video_id is its directory
MASKLET_PARTITIONING = ds.partitioning(pa.schema([("video_id", pa.string())]), flavor="hive")

_SAFE = frozenset((string.ascii_letters + string.digits + "._-").encode())
_HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"
_MAX_NAME_BYTES = 255  # one path component on ext4, xfs, APFS; S3 keys allow more but local runs do not
_INT32 = np.iinfo(np.int32)

# pycocotools' decode trips numpy 2's __array__(copy=) deprecation on every call; silence only that one.
warnings.filterwarnings("ignore", message="__array__ implementation doesn't accept a copy keyword",
                        category=DeprecationWarning, module="pycocotools")


class MaskletError(SamstreamError):
    """Base of the errors this module raises on purpose."""


class MaskletValueError(MaskletError, ValueError):
    """A value that cannot become a masklet row or path; `value` holds it."""

    def __init__(self, message: str, value=None):
        self.value = value
        super().__init__(message)


class VideoIdError(MaskletValueError):
    """A video id that cannot be a partition value."""


class MaskletSchemaError(MaskletValueError):
    """A table whose schema is not MASKLET_SCHEMA / PART_SCHEMA; `value` is the offending schema."""


class OutputPathError(MaskletValueError):
    """A relative output path that would leave the output prefix or is malformed."""


class MaskletWriteError(MaskletError, OSError):
    """A write that failed; nothing partial is visible at `path`."""

    def __init__(self, message: str, path: str):
        super().__init__(message)
        self.path = path


# ---------------------------------------------------------------------------------------------- RLE


def _mask_stack(masks) -> np.ndarray:
    masks = np.asarray(masks)
    if masks.ndim != 3 or masks.shape[1] < 1 or masks.shape[2] < 1:
        raise MaskletValueError(f"masks must be (objects, height, width) with height, width >= 1, "
                                f"got shape {masks.shape}", masks.shape)
    if masks.dtype == np.bool_:
        return masks
    if np.issubdtype(masks.dtype, np.integer):
        return masks != 0  # pycocotools counts runs of equal bytes: values other than 0/1 would corrupt it
    raise MaskletValueError(f"masks must be bool or integer (threshold logits first), got {masks.dtype}",
                            masks.dtype)


ENCODE_BLOCK = 128  # objects per pycocotools call


def encode_masks(masks: np.ndarray) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(O, H, W) masks -> (COCO compressed counts strings, (O, 4) float32 xywh boxes, (O,) int64 areas)."""
    masks = _mask_stack(masks)
    n = masks.shape[0]
    if n == 0:
        return [], np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
    # One pycocotools call per block of objects: it wants (H, W, O) column-major uint8, and its area() fails
    # on 256 or more RLEs at once (an overflow of its uint8 count under numpy 2).
    counts, boxes, areas = [], [], []
    for start in range(0, n, ENCODE_BLOCK):
        block = masks[start:start + ENCODE_BLOCK]
        rles = mask_utils.encode(np.asfortranarray(block.view(np.uint8).transpose(1, 2, 0)))
        counts += [r["counts"].decode("ascii") for r in rles]
        boxes.append(np.asarray(mask_utils.toBbox(rles), np.float32).reshape(len(block), 4))
        areas.append(np.asarray(mask_utils.area(rles), np.int64).reshape(len(block)))
    return counts, np.concatenate(boxes), np.concatenate(areas)


@dataclass(frozen=True)
class EncodedMasks:
    """One frame's masks already as COCO RLE (what ChunkRows.add takes in place of the masks themselves)."""

    counts: list[str]  # COCO compressed counts strings, one per object
    boxes: np.ndarray  # (O, 4) float32 xywh, as pycocotools' toBbox
    areas: np.ndarray  # (O,) int64 pixels set
    height: int  # of every mask
    width: int

    @classmethod
    def of(cls, masks) -> EncodedMasks:
        """Encode (O, H, W) bool / integer masks with pycocotools (encode_masks)."""
        masks = _mask_stack(masks)
        return cls(*encode_masks(masks), masks.shape[1], masks.shape[2])


def decode_rle(counts: str, height: int, width: int) -> np.ndarray:
    """A COCO compressed counts string -> bool (height, width) mask."""
    rle = {"size": [int(height), int(width)], "counts": counts.encode("ascii")}
    return mask_utils.decode(rle).astype(bool)


# ---------------------------------------------------------------------------------------------- rows


def _per_object(name: str, values, n: int, dtype) -> np.ndarray:
    arr = np.asarray(values, dtype=dtype)
    if arr.ndim == 0:
        arr = np.full(n, arr, dtype)
    if arr.shape != (n,):
        raise MaskletValueError(f"{name} must have one value per object ({n}), got shape {arr.shape}", values)
    return arr


def _check_int32(name: str, values: np.ndarray) -> None:
    if values.size and (values.min() < 0 or values.max() > _INT32.max):
        raise MaskletValueError(f"{name} must be in [0, {_INT32.max}], got {values.tolist()}", values.tolist())


class ChunkRows:
    """Accumulates the rows of many frames of one video (one chunk) and builds one table at the end.

    Columns are kept as numpy arrays per frame and concatenated once, so adding a frame costs its RLE only.
    """

    def __init__(self, video_id: str):
        escape_video_id(video_id)  # fail at the first frame, not at write time
        self.video_id = video_id
        self._cols: dict[str, list] = {name: [] for name in PART_SCHEMA.names}
        self._frames: set[int] = set()

    def __len__(self) -> int:
        return sum(len(a) for a in self._cols["object_id"])

    def add(self, frame_index: int, time_s: float, object_ids, masks, scores, object_scores,
            is_prompt=False) -> None:
        """One frame: one row per object (visible or not). `masks` are (O, H, W) masks or their EncodedMasks
        (the actor encodes them its own way: workers.mask_runs); `is_prompt` is a bool or one per object."""
        encoded = masks if isinstance(masks, EncodedMasks) else EncodedMasks.of(masks)
        n, height, width = len(encoded.counts), encoded.height, encoded.width
        if frame_index in self._frames:
            raise MaskletValueError(f"frame {frame_index} was already added to this chunk", frame_index)
        ids = _per_object("object_ids", object_ids, n, np.int64)
        _check_int32("object_ids", ids)
        _check_int32("frame_index", np.asarray([frame_index], np.int64))
        if len(np.unique(ids)) != n:
            raise MaskletValueError(f"object_ids repeat within frame {frame_index}: {ids.tolist()}", ids.tolist())
        cols = {
            "object_id": ids.astype(np.int32), "frame_index": np.full(n, frame_index, np.int32),
            "time_s": np.full(n, time_s, np.float64), "height": np.full(n, height, np.int32),
            "width": np.full(n, width, np.int32), "score": _per_object("scores", scores, n, np.float32),
            "object_score": _per_object("object_scores", object_scores, n, np.float32),
            "is_prompt": _per_object("is_prompt", is_prompt, n, np.bool_),
        }
        cols["mask_rle"], cols["bbox_xywh"], cols["area"] = encoded.counts, encoded.boxes, encoded.areas
        cols["visible"] = cols["area"] > 0
        for name, value in cols.items():
            self._cols[name].append(value)
        self._frames.add(int(frame_index))

    def to_table(self) -> pa.Table:
        """All rows added so far as a MASKLET_SCHEMA table (video_id included), in the order added."""
        arrays = []
        for field in PART_SCHEMA:
            parts = self._cols[field.name]
            if field.name == "mask_rle":
                arrays.append(pa.array([s for p in parts for s in p], pa.string()))
            elif field.name == "bbox_xywh":
                flat = np.concatenate(parts).reshape(-1) if parts else np.zeros(0, np.float32)
                arrays.append(pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), 4))
            else:
                flat = np.concatenate(parts) if parts else np.zeros(0, field.type.to_pandas_dtype())
                arrays.append(pa.array(flat, field.type))
        n = len(arrays[0])
        video = pa.array([self.video_id] * n, pa.string())
        return pa.Table.from_arrays([video, *arrays], schema=MASKLET_SCHEMA)


def masklet_rows(video_id: str, frame_index: int, time_s: float, object_ids, masks, scores,
                 object_scores, is_prompt=False) -> pa.Table:
    """The rows of one frame (one per object; visible = area > 0) as a MASKLET_SCHEMA table."""
    rows = ChunkRows(video_id)
    rows.add(frame_index, time_s, object_ids, masks, scores, object_scores, is_prompt)
    return rows.to_table()


# ---------------------------------------------------------------------------------------------- paths


def escape_video_id(video_id: str) -> str:
    """Percent-encode every byte outside [A-Za-z0-9._-] (UTF-8), so an id is one safe path component.

    Reversible with urllib.parse.unquote, which is what pyarrow, duckdb and Spark apply to hive values.
    """
    if not isinstance(video_id, str) or not video_id:
        raise VideoIdError(f"video_id must be a non-empty string, got {video_id!r}", video_id)
    if video_id == _HIVE_NULL:
        raise VideoIdError(f"video_id {video_id!r} is read back as null by hive readers", video_id)
    try:
        raw = video_id.encode("utf-8")
    except UnicodeEncodeError as e:  # lone surrogates
        raise VideoIdError(f"video_id {video_id!r} is not valid unicode", video_id) from e
    escaped = "".join(chr(b) if b in _SAFE else f"%{b:02X}" for b in raw)
    if escaped in (".", ".."):  # these name the directory itself or its parent
        escaped = escaped.replace(".", "%2E")
    if len(f"video_id={escaped}") > _MAX_NAME_BYTES:
        raise VideoIdError(f"video_id is too long for a path component once escaped ({len(escaped)} "
                           f"bytes): {video_id[:80]!r}...", video_id)
    return escaped


def unescape_video_id(escaped: str) -> str:
    return urllib.parse.unquote(escaped, errors="strict")


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def _part_table(video_id: str, table: pa.Table) -> pa.Table:
    """Validate a MASKLET_SCHEMA or PART_SCHEMA table for `video_id`; return it as PART_SCHEMA."""
    schema = getattr(table, "schema", None)
    if schema is not None and schema.equals(PART_SCHEMA, check_metadata=False):
        return table
    if schema is None or not schema.equals(MASKLET_SCHEMA, check_metadata=False):
        raise MaskletSchemaError(f"masklet table must have MASKLET_SCHEMA or PART_SCHEMA, got {schema}", schema)
    others = pc.unique(table.column("video_id")).to_pylist()
    if any(v != video_id for v in others):
        raise MaskletSchemaError(f"table rows belong to videos {others}, not {video_id!r}", others)
    return table.drop_columns(["video_id"])
