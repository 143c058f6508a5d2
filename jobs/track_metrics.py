"""Unsupervised video segmentation metrics: predicted track ids have no relation to ground-truth ids.

Everything is computed from per-frame overlaps (`FrameOverlap`: the areas of the non-empty masks of a frame
and their pairwise intersections, exact integers from the RLEs). A mask that is empty, or a row that is
missing, is no detection. Frames: every frame where the ground truth or the prediction has a row.

- Video IoU of a GT object g and a track p: sum over frames of |g_t & p_t| / sum over frames of |g_t | p_t|.
- Matching: Hungarian assignment (scipy linear_sum_assignment) maximising the total video IoU, one track per
  GT object; assigned pairs with video IoU 0 are no match (any track would do there).
- recall: matched GT objects with video IoU >= 0.5 / GT objects; precision: the same pairs / tracks. GT
  objects and tracks whose masks are empty on every frame are left out of both (and counted apart).
- ID switches, IDF1 (CLEAR-MOT and identity metrics at per-frame mask IoU >= 0.5), HOTA, DetA, AssA, DetRe
  and OWTA = sqrt(DetRe * AssA) (Liu et al. 2022), each the mean over alpha = 0.05 .. 0.95: TrackEval's
  HOTA / CLEAR / Identity classes fed these per-frame mask IoUs. Videos combine as TrackEval combines
  sequences (summed counts; AssA weighted by true positives). ID switches per 100 frames: 100 * switches /
  frames.
- Proposals for J&F (DAVIS 2017 unsupervised): at most 20 tracks per video, those with the highest mean
  `score` (predicted IoU) over their visible rows; matched to GT objects as above, but among themselves
  (DAVIS matches on mean per-frame J&F instead: video IoU is far cheaper and rarely picks differently). A
  matched object's J and F are those of the prompted mode (its GT rows' frames); an unmatched one scores 0.
- Frames where only the prediction has rows count (a predicted mask there widens the union): with sparsely
  annotated ground truth, cut the prediction to the annotated frames first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
from pycocotools import mask as mask_utils
from scipy.optimize import linear_sum_assignment
from trackeval.metrics import CLEAR, HOTA, Identity

from model.errors import SamstreamError

MATCH_IOU = 0.5     # a GT object counts as found by a track at this video IoU (and CLEAR/IDF1 per frame)
MAX_PROPOSALS = 20  # DAVIS 2017 unsupervised: proposals scored per video
AREA_BLOCK = 128    # RLEs per pycocotools area() call: it overflows a uint8 count at 256 (numpy 2)

# PRINT_CONFIG off: TrackEval prints its config to stdout on construction otherwise.
_HOTA = HOTA()
_CLEAR = CLEAR({"THRESHOLD": MATCH_IOU, "PRINT_CONFIG": False})
_IDENTITY = Identity({"THRESHOLD": MATCH_IOU, "PRINT_CONFIG": False})


class TrackMetricsError(SamstreamError, ValueError):
    """Input the unsupervised metrics cannot score; `value` holds the offending value."""

    def __init__(self, message: str, value=None):
        self.value = value
        super().__init__(message)


# ---------------------------------------------------------------------------------------------- overlaps


@dataclass(frozen=True)
class FrameOverlap:
    """One frame: the objects with a non-empty mask, their areas and pairwise intersections (pixels)."""

    frame: int
    gt_ids: np.ndarray     # (n,) int64
    pred_ids: np.ndarray   # (m,) int64
    gt_area: np.ndarray    # (n,) int64
    pred_area: np.ndarray  # (m,) int64
    inter: np.ndarray      # (n, m) int64

    def iou(self) -> np.ndarray:
        union = self.gt_area[:, None] + self.pred_area[None, :] - self.inter
        return self.inter / np.maximum(union, 1)  # areas are > 0, so union is too


def _areas(rles: list[dict]) -> np.ndarray:
    parts = [np.asarray(mask_utils.area(rles[i:i + AREA_BLOCK]), np.int64).reshape(-1)
             for i in range(0, len(rles), AREA_BLOCK)]
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def frame_overlap(frame: int, gt_ids, gt_rles: list[dict], pred_ids, pred_rles: list[dict]) -> FrameOverlap:
    """Overlaps of one frame from pycocotools RLE dicts of one size; empty masks are dropped."""
    ga, pa_ = _areas(gt_rles), _areas(pred_rles)
    gk, pk = np.flatnonzero(ga > 0), np.flatnonzero(pa_ > 0)
    g_rles, p_rles = [gt_rles[i] for i in gk], [pred_rles[i] for i in pk]
    inter = np.zeros((len(gk), len(pk)), np.int64)
    if len(gk) and len(pk):
        # pycocotools gives IoU = i / (a + b - i) from integer counts; i = IoU (a + b) / (1 + IoU) exactly
        # after rounding (the float error is far below 0.5 for any image size), without decoding a mask.
        iou = np.asarray(mask_utils.iou(g_rles, p_rles, [0] * len(p_rles)), np.float64)
        total = ga[gk][:, None] + pa_[pk][None, :]
        inter = np.rint(iou * total / (1 + iou)).astype(np.int64)
    return FrameOverlap(int(frame), np.asarray(gt_ids, np.int64)[gk], np.asarray(pred_ids, np.int64)[pk],
                        ga[gk], pa_[pk], inter)


def _frame_rows(df: pd.DataFrame) -> dict[int, tuple[np.ndarray, list[str], set]]:
    """frame_index -> (object ids, RLE strings, {(height, width)}) of a MaskletSource.video frame."""
    out = {}
    for frame, rows in df.groupby(level="frame_index", sort=True):
        sizes = set(zip(rows["height"].tolist(), rows["width"].tolist()))
        out[int(frame)] = (rows.index.get_level_values("object_id").to_numpy(np.int64),
                           rows["mask_rle"].tolist(), sizes)
    return out


def _rle(counts: str, size: tuple[int, int]) -> dict:
    return {"size": [int(size[0]), int(size[1])], "counts": counts.encode("ascii")}


def video_overlaps(video_id: str, gt: pd.DataFrame, pred: pd.DataFrame) -> list[FrameOverlap]:
    """Every frame with a row in `gt` or `pred` (as MaskletSource.video gives them), sorted by frame."""
    g_frames, p_frames = _frame_rows(gt), _frame_rows(pred)
    none = (np.zeros(0, np.int64), [], set())
    out = []
    for frame in sorted(set(g_frames) | set(p_frames)):
        (g_ids, g_rles, g_size), (p_ids, p_rles, p_size) = g_frames.get(frame, none), p_frames.get(frame, none)
        sizes = g_size | p_size
        if len(sizes) != 1:
            # pycocotools scores masks of different sizes as IoU 0 without a word: refuse instead.
            raise TrackMetricsError(f"video {video_id!r} frame {frame}: masks of different sizes (ground "
                                    f"truth {sorted(g_size)}, prediction {sorted(p_size)})", (video_id, frame))
        size = sizes.pop()
        out.append(frame_overlap(frame, g_ids, [_rle(c, size) for c in g_rles], p_ids,
                                 [_rle(c, size) for c in p_rles]))
    return out


# ---------------------------------------------------------------------------------------------- matching


@dataclass(frozen=True)
class VideoIoU:
    """Video-level IoU of every GT object and track that has a non-empty mask on some frame."""

    gt_ids: np.ndarray   # (n,) sorted
    pred_ids: np.ndarray  # (m,) sorted
    iou: np.ndarray      # (n, m)


def video_iou(frames: list[FrameOverlap]) -> VideoIoU:
    gt_ids = np.unique(np.concatenate([f.gt_ids for f in frames] + [np.zeros(0, np.int64)]))
    pred_ids = np.unique(np.concatenate([f.pred_ids for f in frames] + [np.zeros(0, np.int64)]))
    inter = np.zeros((len(gt_ids), len(pred_ids)), np.int64)
    g_area, p_area = np.zeros(len(gt_ids), np.int64), np.zeros(len(pred_ids), np.int64)
    for f in frames:
        gi, pi = np.searchsorted(gt_ids, f.gt_ids), np.searchsorted(pred_ids, f.pred_ids)
        g_area[gi] += f.gt_area
        p_area[pi] += f.pred_area
        inter[np.ix_(gi, pi)] += f.inter
    union = g_area[:, None] + p_area[None, :] - inter
    return VideoIoU(gt_ids, pred_ids, inter / np.maximum(union, 1))


@dataclass(frozen=True)
class Match:
    gt_id: int
    pred_id: int
    iou: float  # video IoU


def hungarian(v: VideoIoU, pred_ids=None) -> list[Match]:
    """One track per GT object maximising the total video IoU, among `pred_ids` (default: all tracks)."""
    cols = np.arange(len(v.pred_ids)) if pred_ids is None else np.flatnonzero(np.isin(v.pred_ids, pred_ids))
    iou = v.iou[:, cols]
    rows, picked = linear_sum_assignment(iou, maximize=True)
    return [Match(int(v.gt_ids[r]), int(v.pred_ids[cols[c]]), float(iou[r, c]))
            for r, c in zip(rows, picked) if iou[r, c] > 0]


def track_scores(pred: pd.DataFrame) -> dict[int, float]:
    """Mean `score` (predicted IoU) of each track over its visible rows; tracks never visible are absent."""
    rows = pred[pred["visible"].astype(bool)]
    means = rows.groupby(level="object_id")["score"].mean()
    return {int(k): float(s) for k, s in means.items()}


def top_proposals(scores: dict[int, float], k: int = MAX_PROPOSALS) -> list[int]:
    """The k tracks of highest mean score; NaN scores rank last, ties go to the lower id (deterministic)."""
    key = lambda item: (-item[1] if math.isfinite(item[1]) else math.inf, item[0])  # noqa: E731
    return [tid for tid, _ in sorted(scores.items(), key=key)[:k]]


# ---------------------------------------------------------------------------------------------- tracking


def trackeval_data(frames: list[FrameOverlap], v: VideoIoU) -> dict:
    """TrackEval's per-sequence input: per timestep 0-based contiguous ids and the mask IoU matrix."""
    return {
        "num_timesteps": len(frames), "num_gt_ids": len(v.gt_ids), "num_tracker_ids": len(v.pred_ids),
        "num_gt_dets": int(sum(len(f.gt_ids) for f in frames)),
        "num_tracker_dets": int(sum(len(f.pred_ids) for f in frames)),
        "gt_ids": [np.searchsorted(v.gt_ids, f.gt_ids) for f in frames],
        "tracker_ids": [np.searchsorted(v.pred_ids, f.pred_ids) for f in frames],
        "similarity_scores": [f.iou() for f in frames],
    }


@dataclass(frozen=True)
class TrackingScores:
    """CLEAR / identity / HOTA numbers of a video or of several combined (HOTA family: mean over alpha)."""

    frames: int
    id_switches: int
    id_switches_per_100: float
    IDF1: float
    HOTA: float
    DetA: float
    AssA: float
    DetRe: float
    OWTA: float
    raw: dict = field(repr=False, compare=False)  # TrackEval's results, to combine videos exactly


def _tracking(frames: int, raw: dict) -> TrackingScores:
    h, switches = raw["HOTA"], int(raw["CLEAR"]["IDSW"])
    mean = lambda name: float(np.mean(h[name]))  # noqa: E731
    return TrackingScores(frames, switches, 100 * switches / frames if frames else math.nan,
                          float(raw["Identity"]["IDF1"]), mean("HOTA"), mean("DetA"), mean("AssA"),
                          mean("DetRe"), mean("OWTA"), raw)


def tracking_scores(frames: list[FrameOverlap], v: VideoIoU) -> TrackingScores:
    data = trackeval_data(frames, v)
    raw = {m.get_name(): m.eval_sequence(data) for m in (_HOTA, _CLEAR, _IDENTITY)}
    return _tracking(len(frames), raw)


def combine_tracking(videos: list[TrackingScores]) -> TrackingScores:
    raw = {m.get_name(): m.combine_sequences({i: s.raw[m.get_name()] for i, s in enumerate(videos)})
           for m in (_HOTA, _CLEAR, _IDENTITY)}
    return _tracking(sum(s.frames for s in videos), raw)


# ---------------------------------------------------------------------------------------------- videos


@dataclass(frozen=True)
class VideoTracks:
    """A video's matching and tracking scores (recall/precision NaN without GT objects / tracks)."""

    video_id: str
    gt_objects: int   # with a non-empty mask on some frame
    pred_tracks: int  # likewise
    matched: int      # matches at video IoU >= MATCH_IOU
    recall: float
    precision: float
    matches: tuple[Match, ...]
    tracking: TrackingScores


def score_tracks(video_id: str, frames: list[FrameOverlap]) -> tuple[VideoTracks, VideoIoU]:
    v = video_iou(frames)
    matches = tuple(hungarian(v))
    found = sum(m.iou >= MATCH_IOU for m in matches)
    n_gt, n_pred = len(v.gt_ids), len(v.pred_ids)
    result = VideoTracks(video_id, n_gt, n_pred, found, found / n_gt if n_gt else math.nan,
                         found / n_pred if n_pred else math.nan, matches, tracking_scores(frames, v))
    return result, v


@dataclass(frozen=True)
class TrackSummary:
    """A dataset's numbers: recall and precision pooled over videos, tracking combined as TrackEval does."""

    videos: int
    gt_objects: int
    pred_tracks: int
    matched: int
    recall: float
    precision: float
    tracking: TrackingScores


def summarize_tracks(videos: list[VideoTracks]) -> TrackSummary:
    n_gt, n_pred = sum(v.gt_objects for v in videos), sum(v.pred_tracks for v in videos)
    found = sum(v.matched for v in videos)
    return TrackSummary(len(videos), n_gt, n_pred, found, found / n_gt if n_gt else math.nan,
                        found / n_pred if n_pred else math.nan, combine_tracking([v.tracking for v in videos]))


# ---------------------------------------------------------------------------------------------- table


UNSUPERVISED_SCHEMA = pa.schema(
    [("video_id", pa.string())]
    + [(n, pa.int32()) for n in ("frames", "gt_objects", "gt_never_visible", "pred_tracks", "pred_never_visible",
                                  "proposals", "matched")]
    + [(n, pa.float64()) for n in ("recall", "precision", "J", "F", "JF")]
    + [("id_switches", pa.int32())]
    + [(n, pa.float64()) for n in ("id_switches_per_100", "IDF1", "HOTA", "DetA", "AssA", "DetRe", "OWTA")])


def video_row(t: VideoTracks, jf: list[tuple[float, float]], proposals: int, gt_ids: int, pred_ids: int) -> dict:
    """The video's UNSUPERVISED_SCHEMA row; `jf`: (J, F) per GT object, `gt_ids` / `pred_ids`: ids with rows."""
    j, f = (float(np.mean([x[i] for x in jf])) if jf else math.nan for i in (0, 1))
    k = t.tracking
    return {"video_id": t.video_id, "frames": k.frames, "gt_objects": t.gt_objects,
            "gt_never_visible": gt_ids - t.gt_objects, "pred_tracks": t.pred_tracks,
            "pred_never_visible": pred_ids - t.pred_tracks, "proposals": proposals, "matched": t.matched,
            "recall": t.recall, "precision": t.precision, "J": j, "F": f, "JF": (j + f) / 2,
            "id_switches": k.id_switches, "id_switches_per_100": k.id_switches_per_100, "IDF1": k.IDF1,
            "HOTA": k.HOTA, "DetA": k.DetA, "AssA": k.AssA, "DetRe": k.DetRe, "OWTA": k.OWTA}


def print_summary(table: pa.Table, report: dict, max_proposals: int, out: str) -> None:
    """`report`: TrackSummary under "tracks", davis_summary under "davis", and what did not match."""
    s, k, d, cols = report["tracks"], report["tracks"].tracking, report["davis"], table.to_pydict()
    print(f"samstream evaluate --unsupervised: {s.videos} videos, {s.gt_objects} ground-truth objects, "
          f"{s.pred_tracks} predicted tracks, {k.frames} frames")
    print(f"  recall {s.recall:.4f} ({s.matched} of {s.gt_objects} objects)   precision {s.precision:.4f} "
          f"({s.matched} of {s.pred_tracks} tracks)   (Hungarian on video mask IoU, found at >= {MATCH_IOU})")
    print(f"  HOTA {k.HOTA:.4f}   DetA {k.DetA:.4f}   AssA {k.AssA:.4f}   DetRe {k.DetRe:.4f}   "
          f"OWTA {k.OWTA:.4f}")
    print(f"  IDF1 {k.IDF1:.4f}   ID switches {k.id_switches} ({k.id_switches_per_100:.2f} per 100 frames)")
    print(f"  J&F {d['JF']:.4f}   J {d['J']:.4f}   F {d['F']:.4f}   (DAVIS 2017 unsupervised: up to "
          f"{max_proposals} proposals per video by mean score; a missed object scores 0)")
    hidden = (sum(cols["gt_never_visible"]), sum(cols["pred_never_visible"]))
    if any(hidden):
        print(f"  left out, empty on every frame: {hidden[0]} ground-truth objects, {hidden[1]} tracks")
    if report["videos_without_prediction"]:
        print(f"  videos with no prediction at all: {report['videos_without_prediction'][:10]}")
    if report["failed_in_run"]:
        print(f"  videos the run recorded as failed: {report['failed_in_run'][:10]}")
    if report["extra_videos"]:
        print(f"  ignored predictions of videos not in the ground truth: {len(report['extra_videos'])}")
    print(f"  metrics: {out}")
