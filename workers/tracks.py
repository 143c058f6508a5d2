"""Track statistics of masklet parts, written once per part in its Parquet footer, and what is built from them.

A pseudo-label part carries, in its footer's key-value metadata, one small record per object it holds (first
and last frame, rows, visible frames, sums of the scores) plus its segment and whether its object ids are
still the segment's local ones. So the driver can stitch segments, relabel parts and build tracks.parquet
from footers and overlap rows alone, without reading whole videos, also after a restart.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

TRACKS_KEY = b"samstream.tracks"
LOCAL, GLOBAL = "local", "global"  # a part's object ids: its segment's own, or the stitched global ones

TRACKS_SCHEMA = pa.schema([
    ("video_id", pa.string()), ("object_id", pa.int32()),
    ("first_frame", pa.int32()), ("last_frame", pa.int32()),  # first and last frame with a row
    ("frames", pa.int32()), ("frames_visible", pa.int32()),  # rows, and rows with a visible mask
    ("mean_score", pa.float32()),  # mean predicted IoU over the visible frames (null: never visible)
    ("mean_object_score", pa.float32()),  # mean presence probability over its rows
    ("segments", pa.list_(pa.int32())),  # the video's segments it spans, ascending
    ("given", pa.bool_()),  # a prompted (manifest) object rather than a discovered one
])


@dataclass
class TrackStats:
    """One object's rows within some frames: summed, so parts and segments combine by addition."""

    first: int
    last: int
    rows: int
    visible: int
    score_sum: float  # predicted IoU summed over visible rows
    object_score_sum: float  # presence summed over all rows

    def __add__(self, other: "TrackStats") -> "TrackStats":
        return TrackStats(min(self.first, other.first), max(self.last, other.last), self.rows + other.rows,
                          self.visible + other.visible, self.score_sum + other.score_sum,
                          self.object_score_sum + other.object_score_sum)


@dataclass
class PartTracks:
    """What a part's footer says: its segment, its ids' kind and the stats of each object in it."""

    segment: int
    ids: str  # LOCAL or GLOBAL
    tracks: dict[int, TrackStats]

    def to_metadata(self) -> dict[bytes, bytes]:
        rows = [[oid, s.first, s.last, s.rows, s.visible, s.score_sum, s.object_score_sum]
                for oid, s in sorted(self.tracks.items())]
        return {TRACKS_KEY: json.dumps({"segment": self.segment, "ids": self.ids, "tracks": rows}).encode()}

    @classmethod
    def from_metadata(cls, metadata: dict | None) -> "PartTracks | None":
        if not metadata or TRACKS_KEY not in metadata:
            return None
        d = json.loads(metadata[TRACKS_KEY])
        tracks = {int(r[0]): TrackStats(int(r[1]), int(r[2]), int(r[3]), int(r[4]), float(r[5]), float(r[6]))
                  for r in d["tracks"]}
        return cls(int(d["segment"]), d["ids"], tracks)


def part_tracks(table: pa.Table, segment: int, ids: str) -> PartTracks:
    """Per-object statistics of a part's rows."""
    oid = table.column("object_id").to_numpy()
    frame = table.column("frame_index").to_numpy()
    visible = table.column("visible").to_numpy(zero_copy_only=False)
    score = table.column("score").to_numpy().astype(np.float64)
    presence = table.column("object_score").to_numpy().astype(np.float64)
    tracks = {}
    for o in np.unique(oid).tolist():
        m = oid == o
        tracks[int(o)] = TrackStats(int(frame[m].min()), int(frame[m].max()), int(m.sum()), int(visible[m].sum()),
                                    float(score[m & visible].sum()), float(presence[m].sum()))
    return PartTracks(segment, ids, tracks)


def relabel(table: pa.Table, mapping: dict[int, int]) -> pa.Table:
    """The table with every object id replaced by mapping[id] (every id must be mapped)."""
    old = table.column("object_id").to_numpy()
    missing = sorted(set(np.unique(old).tolist()) - set(mapping))
    if missing:
        raise KeyError(f"object ids {missing[:10]} have no global id")
    keys = np.array(sorted(mapping), dtype=np.int64)
    values = np.array([mapping[k] for k in keys], dtype=np.int32)
    new = values[np.searchsorted(keys, old)] if len(old) else old.astype(np.int32)
    i = table.schema.get_field_index("object_id")
    return table.set_column(i, table.schema.field(i), pa.array(new, pa.int32()))


def tracks_table(video_id: str, tracks: dict[int, TrackStats], segments: dict[int, set[int]],
                 given: set[int]) -> pa.Table:
    """tracks.parquet rows of one video from its objects' summed stats (global ids)."""
    ids = sorted(tracks)
    rows = [{"video_id": video_id, "object_id": o, "first_frame": tracks[o].first, "last_frame": tracks[o].last,
             "frames": tracks[o].rows, "frames_visible": tracks[o].visible,
             "mean_score": tracks[o].score_sum / tracks[o].visible if tracks[o].visible else None,
             "mean_object_score": tracks[o].object_score_sum / max(tracks[o].rows, 1),
             "segments": sorted(segments.get(o, ())), "given": o in given} for o in ids]
    return pa.Table.from_pylist(rows, schema=TRACKS_SCHEMA)


def with_tracks(table: pa.Table, tracks: PartTracks) -> pa.Table:
    """The table carrying `tracks` in its schema metadata (written to the Parquet footer)."""
    return table.replace_schema_metadata({**(table.schema.metadata or {}), **tracks.to_metadata()})


def count_distinct_keys(keys: pa.Table) -> int:
    """Distinct (object_id, frame_index) pairs of a key table."""
    return pc.count_distinct(pc.add(pc.multiply(pc.cast(keys["object_id"], "int64"), 1 << 32),
                                    pc.cast(keys["frame_index"], "int64"))).as_py()
