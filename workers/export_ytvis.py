"""YouTube-VIS (2019/2021) instance JSON for a whole output: ``<out>/ytvis.json``.

The format (as the readers that train on it consume it: ytvos.py, the YouTube-VIS fork of cocoapi, whose
annToRLE takes a compressed RLE as it is; and the detectron2 ``load_ytvis_json`` loaders of VIS codebases,
which index file_names up to the video's ``length`` and skip a frame whose bbox or segmentation is null) is
COCO's with a video in place of an image and one list entry per frame in each annotation:

    videos       [{id, width, height, length, file_names}]           file_names: one per frame, in order
    annotations  [{id, video_id, category_id, segmentations, areas, bboxes, iscrowd, height, width, length}]
                 segmentations / areas / bboxes: one entry per frame of the video, null where the object
                 is not visible; RLE {"size": [h, w], "counts": str}; bbox [x, y, w, h]
    categories   [{id, name, supercategory}]

Our choices: one category, {"id": 1, "name": "object"} (class-agnostic masklets); video ids 1.. in video id
order and annotation ids 1.. in (video, object id) order; file names ``<escaped video id>/<frame:05d>.jpg``
(the 2019 release's layout, with the true frame index: with --every N a video lists frames 0, N, 2N, ...,
as the 2019 release lists every 5th frame of its videos); ``length`` = number of those frames, in videos and
annotations. Counts are compressed strings (pycocotools and the loaders take them as they are); areas are
pixel counts (int). Two fields beyond the format, which readers ignore: ``name`` on a video (our video id) and
``object_id`` on an annotation (ours), so every entry maps back to its masklet rows. Objects never visible on
an annotated frame are left out (an annotation without a mask trains nothing).

Memory stays bounded by one video: annotations are encoded and written per video as they come, and the
videos list (a few numbers per video) follows at the end; JSON readers do not care that "annotations" comes
before "videos". The file is written under a hidden temporary name in `out` and moved onto ytvis.json once
complete, so a reader never sees a partial file (on an object store the move is a copy: complete or absent).
"""

from __future__ import annotations

import json
import os
import posixpath
import uuid
from dataclasses import dataclass

from fsspec.implementations.local import LocalFileSystem

from .export_source import Track, VideoMeta, open_out_dir
from .masklets import escape_video_id
from .storage_options import safe_url

FILE_NAME = "ytvis.json"
CATEGORIES = [{"id": 1, "name": "object", "supercategory": "object"}]
INFO = {"description": "samstream masklets (class-agnostic)", "version": "1.0"}


def frame_name(video_id: str, frame_index: int) -> str:
    return f"{escape_video_id(video_id)}/{frame_index:05d}.jpg"


@dataclass(frozen=True)
class _Video:
    """What the videos list needs of a video once its annotations are written."""

    id: int
    meta: VideoMeta


def video_entry(video_id: int, meta: VideoMeta, every: int) -> dict:
    names = [frame_name(meta.video_id, f) for f in meta.annotated(every)]
    return {"id": video_id, "name": meta.video_id, "width": meta.width, "height": meta.height,
            "length": len(names), "file_names": names}


def annotation(ann_id: int, video_id: int, meta: VideoMeta, track: Track) -> dict:
    size = [meta.height, meta.width]
    seg = [{"size": size, "counts": c} if v else None for c, v in zip(track.counts, track.visible.tolist())]
    areas = [int(a) if v else None for a, v in zip(track.area.tolist(), track.visible.tolist())]
    boxes = [[float(x) for x in b] if v else None for b, v in zip(track.bbox.tolist(), track.visible.tolist())]
    return {"id": ann_id, "video_id": video_id, "object_id": track.object_id, "category_id": 1,
            "segmentations": seg, "areas": areas, "bboxes": boxes, "iscrowd": 0, "height": meta.height,
            "width": meta.width, "length": len(seg)}


class _JsonList:
    """Items of one JSON list written as they come (comma-separated), so none is kept."""

    def __init__(self, f, key: str):
        self.f, self.first = f, True
        f.write(f"{json.dumps(key)}:[".encode())

    def add(self, item: dict) -> None:
        self.f.write((b"\n" if self.first else b",\n") + json.dumps(item, separators=(",", ":")).encode())
        self.first = False

    def close(self) -> None:
        self.f.write(b"]")


class YtvisWriter:
    """Streams ytvis.json: use as a context manager; `add` one video at a time."""

    def __init__(self, out_url: str, storage_options: dict, every: int):
        self.fs, root = open_out_dir(out_url, storage_options)
        self.path = posixpath.join(root, FILE_NAME)
        self.tmp = posixpath.join(root, f".{FILE_NAME}.{uuid.uuid4().hex}.tmp")
        self.where = f"{safe_url(out_url.rstrip('/'))}/{FILE_NAME}"
        self.every, self.videos, self.next_ann = every, [], 1
        self.f = self.annotations = None

    def __enter__(self) -> YtvisWriter:
        if isinstance(self.fs, LocalFileSystem):  # object stores have no folders (s3fs would make a bucket)
            self.fs.makedirs(posixpath.dirname(self.tmp), exist_ok=True)
        self.f = self.fs.open(self.tmp, "wb")
        head = {"info": INFO, "licenses": [], "categories": CATEGORIES}
        self.f.write(json.dumps(head)[:-1].encode() + b",")  # the object stays open for the two lists
        self.annotations = _JsonList(self.f, "annotations")
        return self

    def add(self, meta: VideoMeta, tracks: list[Track]) -> None:
        video = _Video(len(self.videos) + 1, meta)
        for track in tracks:
            self.annotations.add(annotation(self.next_ann, video.id, meta, track))
            self.next_ann += 1
        self.videos.append(video)

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self._discard()
            return
        try:
            self._finish()
        except BaseException:
            self._discard()
            raise
        self.fs.mv(self.tmp, self.path)  # same folder: a rename locally, a copy on object stores

    def _finish(self) -> None:
        self.annotations.close()
        self.f.write(b",")
        videos = _JsonList(self.f, "videos")
        for v in self.videos:
            videos.add(video_entry(v.id, v.meta, self.every))
        videos.close()
        self.f.write(b"}\n")
        if isinstance(self.fs, LocalFileSystem):  # the rename must not publish bytes not yet on disk
            self.f.flush()
            os.fsync(self.f.fileno())
        self.f.close()

    def _discard(self) -> None:
        try:
            self.f.close()  # fsspec files commit on close; the temporary is removed right after
        except Exception:
            pass
        try:
            self.fs.rm(self.tmp)
        except (FileNotFoundError, OSError):
            pass
