"""The output contract (DESIGN.md "Output layout"): every path of a run's output is named, written and read
here, and nowhere else.

    <out>/masklets/video_id=<escaped>/part-<stream:05d>-<chunk:06d>.parquet   masklet rows of one chunk
    <out>/videos.parquet                                                     one row per manifest video
    <out>/_plan.json                                                         the chunk plan parts follow
    <out>/_state/<stream:05d>/after-<chunk:06d>.safetensors                  snapshots (at most 2 a stream)
    <out>/_state/overlap/<stream:05d>-<chunk:06d>.parquet                    pseudo-label: a chunk's rows on
                                                                             segment overlaps, for stitching
    <out>/tracks.parquet                                                     pseudo-label: one row per object
    <out>/_claim/...                                                         the writer's claim (output_claim)
    <out>/_run.json                                                          config, versions, timings
    <out>/_SUCCESS                                                           last, over a verified output

A part's name depends only on (video, stream, chunk), so running a chunk again replaces its part instead of
adding a second one.
"""

from __future__ import annotations

import json
import re

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from .masklets import (MASKLET_PARTITIONING, MASKLET_SCHEMA, PART_SCHEMA, MaskletValueError, _parquet_bytes,
                       _part_table, escape_video_id)
from .output_claim import CLAIM_DIR, OutputClaim
from .store import Store
from .tracks import PartTracks

MASKLETS, VIDEOS, PLAN, STATE, RUN, SUCCESS, TRACKS = (
    "masklets", "videos.parquet", "_plan.json", "_state", "_run.json", "_SUCCESS", "tracks.parquet")
CLAIM = CLAIM_DIR  # written and read by OutputClaim
RUN_MARKERS = (MASKLETS, VIDEOS, RUN, PLAN, SUCCESS)  # any of these makes a folder a run's output
_PART_RE = re.compile(r"^part-(\d{5,})-(\d{6,})\.parquet$")
_SNAPSHOT_RE = re.compile(r"^after-(\d{6,})\.safetensors$")

VIDEOS_SCHEMA = pa.schema([
    ("video_id", pa.string()), ("url", pa.string()), ("status", pa.string()), ("error", pa.string()),
    ("frames", pa.int64()), ("fps", pa.float64()), ("width", pa.int32()), ("height", pa.int32()),
    ("objects", pa.int32()), ("seconds", pa.float64()), ("note", pa.string()),
])


def _index(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise MaskletValueError(f"{name} must be a non-negative int, got {value!r}", value)
    return int(value)


def video_relpath(video_id: str) -> str:
    return f"{MASKLETS}/video_id={escape_video_id(video_id)}"


def part_relpath(video_id: str, stream: int, chunk: int) -> str:
    stream, chunk = _index("stream", stream), _index("chunk", chunk)
    return f"{video_relpath(video_id)}/part-{stream:05d}-{chunk:06d}.parquet"


def state_relpath(stream: int) -> str:
    return f"{STATE}/{_index('stream', stream):05d}"


def overlap_relpath(stream: int, chunk: int) -> str:
    """Where a pseudo-label chunk's rows on its segment's overlaps are kept until the run has stitched."""
    return f"{STATE}/overlap/{_index('stream', stream):05d}-{_index('chunk', chunk):06d}.parquet"


def snapshot_relpath(stream: int, chunk: int) -> str:
    """Where the state after `chunk` of `stream` is kept."""
    return f"{state_relpath(stream)}/after-{_index('chunk', chunk):06d}.safetensors"


class RunOutput(Store):
    """One run's output directory, any fsspec URL: parts, snapshots, plan, records, claim."""

    # ---- masklet parts ---------------------------------------------------------------------------------
    def part_path(self, video_id: str, stream: int, chunk: int) -> str:
        return f"{self.url}/{part_relpath(video_id, stream, chunk)}"

    def write_part(self, video_id: str, stream: int, chunk: int, table: pa.Table) -> str:
        """Write (or replace) the part of (video, stream, chunk); returns its URL."""
        return self.write_bytes(part_relpath(video_id, stream, chunk), _parquet_bytes(_part_table(video_id, table)))

    def part_rows(self, video_id: str, stream: int, chunk: int, verify_data: bool = False) -> int | None:
        """Rows of the part from its footer (every page decoded too if `verify_data`); None when the part
        is absent, truncated, corrupt or not a masklet part. A denied read raises: it is not a missing part."""
        path = self.fresh(part_relpath(video_id, stream, chunk))
        try:
            with self.filesystem.open(path, "rb") as f:
                parquet = pq.ParquetFile(f)
                if not parquet.schema_arrow.equals(PART_SCHEMA, check_metadata=False):
                    return None
                if verify_data:
                    parquet.read()
                return parquet.metadata.num_rows
        except PermissionError:
            raise
        except (OSError, pa.ArrowException):
            return None

    def read_part(self, video_id: str, stream: int, chunk: int) -> pa.Table:
        """A part's rows (PART_SCHEMA), its footer metadata kept in the schema."""
        with self.filesystem.open(self.fresh(part_relpath(video_id, stream, chunk)), "rb") as f:
            return pq.read_table(f, schema=None)

    def part_tracks(self, video_id: str, stream: int, chunk: int) -> PartTracks | None:
        """The track statistics in a pseudo-label part's footer (workers/tracks.py); None when absent."""
        with self.filesystem.open(self.fresh(part_relpath(video_id, stream, chunk)), "rb") as f:
            return PartTracks.from_metadata(pq.ParquetFile(f).schema_arrow.metadata)

    def part_exists(self, video_id: str, stream: int, chunk: int, expected_rows: int | None = None,
                    verify_data: bool = False) -> bool:
        """True when the part is a readable masklet file (with `expected_rows` rows, if given)."""
        rows = self.part_rows(video_id, stream, chunk, verify_data)
        return rows is not None and (expected_rows is None or rows == expected_rows)

    def list_parts(self, video_id: str) -> list[tuple[int, int]]:
        """(stream, chunk) of every part of a video, e.g. to find parts a different plan left."""
        found = (_PART_RE.match(n) for n in self.names(video_relpath(video_id)))
        return sorted((int(m.group(1)), int(m.group(2))) for m in found if m)

    def remove_part(self, video_id: str, stream: int, chunk: int) -> None:
        self.remove(part_relpath(video_id, stream, chunk))

    def remove_video(self, video_id: str) -> None:
        """Every masklet part of a video (a failed video leaves none)."""
        self.remove(video_relpath(video_id))

    def video_keys(self, video_id: str) -> pa.Table:
        """(object_id, frame_index) of every row of a video's parts, to look for rows written twice."""
        directory = self.fresh(video_relpath(video_id))
        if not self.filesystem.exists(directory):
            return pa.table({"object_id": pa.array([], pa.int32()), "frame_index": pa.array([], pa.int32())})
        dataset = ds.dataset(directory, filesystem=self.filesystem, format="parquet", schema=PART_SCHEMA)
        return dataset.to_table(columns=["object_id", "frame_index"])

    # ---- overlap rows (pseudo-label) -------------------------------------------------------------------
    def write_overlap(self, stream: int, chunk: int, table: pa.Table) -> None:
        self.write_bytes(overlap_relpath(stream, chunk), _parquet_bytes(table))

    def read_overlap(self, stream: int, chunk: int) -> pa.Table | None:
        """A chunk's overlap rows; None when it had none (or they were never written)."""
        path = overlap_relpath(stream, chunk)
        if not self.exists(path):
            return None
        with self.filesystem.open(self.fresh(path), "rb") as f:
            return pq.read_table(f)

    def write_tracks(self, table: pa.Table) -> str:
        return self.write_table(TRACKS, table)

    # ---- snapshots -------------------------------------------------------------------------------------
    def write_snapshot(self, stream: int, chunk: int, data: bytes) -> None:
        self.write_bytes(snapshot_relpath(stream, chunk), data)

    def read_snapshot(self, stream: int, chunk: int) -> bytes:
        return self.read_bytes(snapshot_relpath(stream, chunk))

    def list_snapshots(self, stream: int) -> list[int]:
        """Chunks of `stream` with a snapshot after them, oldest first."""
        found = (_SNAPSHOT_RE.match(n) for n in self.names(state_relpath(stream)))
        return sorted(int(m.group(1)) for m in found if m)

    def prune_snapshots(self, stream: int, keep: int) -> None:
        """Delete every snapshot of `stream` but the one after chunk `keep` (call once that one is durable),
        so _state/ holds at most two snapshots per stream whatever the video's length."""
        for chunk in self.list_snapshots(stream):
            if chunk != keep:
                self.remove(snapshot_relpath(stream, chunk))

    def remove_state(self, stream: int | None = None) -> None:
        """One stream's snapshots, or all of them (after a successful run)."""
        self.remove(STATE if stream is None else state_relpath(stream))

    # ---- plan and records ------------------------------------------------------------------------------
    def read_plan(self) -> dict | None:
        return json.loads(self.read_bytes(PLAN)) if self.exists(PLAN) else None

    def write_plan(self, plan: dict) -> None:
        self.write_bytes(PLAN, json.dumps(plan, sort_keys=True).encode())

    def write_videos(self, rows: list[dict]) -> str:
        return self.write_table(VIDEOS, pa.Table.from_pylist(rows, schema=VIDEOS_SCHEMA))

    def read_videos(self) -> pa.Table | None:
        if not self.exists(VIDEOS):
            return None
        return ds.dataset(self.path(VIDEOS), filesystem=self.filesystem, format="parquet").to_table()

    def write_run_record(self, record: dict) -> None:
        self.write_bytes(RUN, json.dumps(record, indent=2, default=str).encode())

    def read_run_record(self) -> dict | None:
        return json.loads(self.read_bytes(RUN)) if self.exists(RUN) else None

    def write_success(self) -> None:
        self.write_bytes(SUCCESS, b"")

    def has_success(self) -> bool:
        return self.exists(SUCCESS)

    def remove_success(self) -> None:
        """A run that starts on an output invalidates the _SUCCESS of the last one until it verifies."""
        self.remove(SUCCESS)

    def write_table(self, relative_path: str, table: pa.Table) -> str:
        """Any table (videos.parquet, metrics) with the same atomicity as parts; returns its URL."""
        return self.write_bytes(relative_path, _parquet_bytes(table))

    # ---- the writer's claim ----------------------------------------------------------------------------
    def claim(self, run_id: str, timeout_s: float, info: dict | None = None) -> OutputClaim:
        """Claim the output for this run (raises OutputClaimedError naming a live other run)."""
        return OutputClaim.acquire(self.filesystem, self.root, self.url, run_id, timeout_s,
                                   info=info)


def is_run_output(fs: fsspec.AbstractFileSystem, root: str) -> bool:
    """Whether the folder `root` of `fs` holds a run's output (any of its markers)."""
    return fs.isdir(root) and any(fs.exists(f"{root}/{m}") for m in RUN_MARKERS)


def read_masklets(out_url: str, storage_options: dict | None = None, video_id: str | None = None) -> pa.Table:
    """All masklet rows of an output (or of one video) as a MASKLET_SCHEMA table; video_id always a string."""
    fs, root = fsspec.core.url_to_fs(out_url, **(storage_options or {}))
    fs.invalidate_cache()  # listings cached before the writers finished would hide their files
    dataset = ds.dataset(f"{root.rstrip('/')}/{MASKLETS}", filesystem=fs, format="parquet",
                         partitioning=MASKLET_PARTITIONING, schema=MASKLET_SCHEMA)
    where = None if video_id is None else ds.field("video_id") == video_id
    return dataset.to_table(filter=where)
