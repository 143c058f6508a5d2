"""SA-V style masklet JSON, one file per video: ``<out>/<escaped video id>_auto.json``.

Sources: the SAM 2 repository's ``sav_dataset/README.md`` (field list, types, size buckets) and its example
``sav_dataset/example/sav_000001_{auto,manual}.json`` (measured), plus SAM 2's training loader
``training/dataset/vos_segment_loader.py`` (JSONSegmentLoader: how a trainer indexes these files).

What we write, and where each choice comes from:
- File name ``{video_id}_auto.json`` (README: auto masklets in ``{video_id}_auto.json``); the id escaped as in
  the masklet layout so it is one safe path component (identity for ids like ``sav_000001``).
- ``masklet``: a list over annotated frames of a list over objects of COCO RLE {"size": [h, w], "counts": str}.
  Annotated frames are 0, N, 2N, ... below the frame count (README: 6 fps of 24 fps video, "annotated every 4
  frames"; the example has 121 entries for 483 frames = ceil(483 / 4)); entry i is video frame i x N, which is
  how JSONSegmentLoader reads it (``frame_annots[frame_id // ann_every]``). Every annotated frame is present,
  also one before any object starts. An object not visible on a frame, or not yet tracked there, gets the
  empty RLE (the example: invisible objects carry an all-zero RLE, never null).
- Object j of every per-object list is the same object; ``masklet_id`` holds our object ids (SA-V's are
  0..n-1: the loader uses the position, so ours work the same way), sorted.
- ``video_frame_count``, ``video_height``, ``video_width``, ``video_resolution`` are float64 (README types; the
  example has 483.0, 848.0); ``video_duration`` = frames / fps seconds (example: 483 / 24 = 20.125), null when
  the run recorded no fps.
- ``masklet_size_abs``: mean mask area in pixels over the annotated frames where the object is visible;
  ``masklet_size_rel`` = that / (height x width) (README; both match the example's masks to the last digit).
- ``masklet_size_bucket``: "small" for 1 <= abs < 32^2, "medium" for 32^2 <= abs < 96^2, "large" above
  (README). The README says "> 96^2" for large, leaving exactly 96^2 unassigned; we call it large, as COCO's
  area ranges do.
- ``masklet_first_appeared_frame``: int, the index into ``masklet`` (annotated-frame units, not video frames) of
  the first frame the object is visible. The manual example shows the unit: an object appearing at entry 113
  of 121 has 113.0. SA-V auto masklets always have 0; ours can join later, so it is what the rows say.
- ``masklet_frame_count``: int, the number of annotated frames, the same for every object (README: "the number
  of frames being annotated"; in the example every object has 121, one that first appears at 113 too).
- ``masklet_visibility_changes``: int, visible <-> not visible transitions over annotated frames after the first
  appearance (README; recomputed from the example's masks, it matches every object).
- ``masklet_stability_score``: a list over annotated frames of a list over objects, like ``masklet`` (the
  example's shape, 121 x 9). SAM's stability score needs the mask logits, which rows do not keep; we write the
  row's predicted IoU (``score``), the model's own estimate of that mask's quality, clipped to [0, 1].
  ``object_score`` is not used: it says whether the object is there, not how good its mask is. Empty masks get
  1.0, as every one of the example's 137 empty masks has.
- ``masklet_edited_frame_count`` all 0 and ``masklet_type`` all "auto" (README: auto masklets), ``masklet_num``
  the number of objects.
- Not written: ``video_environment`` and ``video_split`` (nothing in a run's output says them).
- Objects never visible on an annotated frame are left out (SA-V masklets all have a mask; size and first
  appearance are undefined without one); the export counts them.
"""

from __future__ import annotations

import json

import numpy as np

from .export_source import Track, VideoMeta, empty_rle, open_out_dir
from .masklets import escape_video_id
from .store import Store

SUFFIX = "_auto.json"
SMALL, LARGE = 32 ** 2, 96 ** 2


def sav_name(video_id: str) -> str:
    return f"{escape_video_id(video_id)}{SUFFIX}"


def size_bucket(size_abs: float) -> str:
    """SA-V's bucket of a masklet's mean visible area (README thresholds; exactly 96^2 counts as large)."""
    if size_abs < SMALL:
        return "small"
    return "medium" if size_abs < LARGE else "large"


def visibility_changes(visible: np.ndarray) -> int:
    """Transitions visible <-> not visible after the first visible frame."""
    if not visible.any():
        return 0
    after = visible[int(np.argmax(visible)):]
    return int(np.count_nonzero(after[1:] != after[:-1]))


def _masklet(meta: VideoMeta, tracks: list[Track], frames: int) -> tuple[list, list]:
    """(masks, stability scores), each a list over annotated frames of a list over objects."""
    size, empty = [meta.height, meta.width], empty_rle(meta.height, meta.width)
    masks, stability = [], []
    for i in range(frames):
        masks.append([{"size": size, "counts": t.counts[i] if t.visible[i] else empty} for t in tracks])
        stability.append([float(np.clip(t.score[i], 0.0, 1.0)) if t.visible[i] else 1.0 for t in tracks])
    return masks, stability


def _object_fields(meta: VideoMeta, tracks: list[Track], frames: int) -> dict:
    size_abs = [float(t.area[t.visible].mean()) for t in tracks]
    n = len(tracks)
    return {
        "masklet_id": [t.object_id for t in tracks],
        "masklet_size_rel": [s / (meta.height * meta.width) for s in size_abs],
        "masklet_size_abs": size_abs,
        "masklet_size_bucket": [size_bucket(s) for s in size_abs],
        "masklet_visibility_changes": [visibility_changes(t.visible) for t in tracks],
        "masklet_first_appeared_frame": [int(np.argmax(t.visible)) for t in tracks],
        "masklet_frame_count": [frames] * n,
        "masklet_edited_frame_count": [0] * n,
        "masklet_type": ["auto"] * n,
    }


def sav_record(meta: VideoMeta, tracks: list[Track], every: int) -> dict:
    """The SA-V dict of one video; `tracks` are objects visible on at least one annotated frame."""
    frames = len(meta.annotated(every))
    masks, stability = _masklet(meta, tracks, frames)
    return {
        "video_id": meta.video_id,
        "video_duration": meta.frames / meta.fps if meta.fps else None,
        "video_frame_count": float(meta.frames),
        "video_height": float(meta.height),
        "video_width": float(meta.width),
        "video_resolution": float(meta.height * meta.width),
        "masklet": masks,
        **_object_fields(meta, tracks, frames),
        "masklet_stability_score": stability,
        "masklet_num": len(tracks),
    }


class SavWriter:
    """Writes one JSON per video, each atomically (a reader never sees half a file); running again replaces
    the files of the same videos and leaves any others in `out`."""

    def __init__(self, out_url: str, storage_options: dict, every: int):
        open_out_dir(out_url, storage_options)  # a bad --out fails before any work, naming the URL
        self.store = Store(out_url, storage_options)
        self.every = every
        self.where = f"{self.store.url}/<video id>{SUFFIX}"

    def __enter__(self) -> SavWriter:
        return self

    def __exit__(self, *exc) -> None:
        return None

    def add(self, meta: VideoMeta, tracks: list[Track]) -> None:
        record = sav_record(meta, tracks, self.every)
        self.store.write_bytes(sav_name(meta.video_id), json.dumps(record, separators=(",", ":")).encode())
