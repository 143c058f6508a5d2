"""J&F of a segment run against ground truth, per video and object, as in DAVIS (model/metrics.py).

    python -m jobs.evaluate --pred <out dir of a segment run> --gt <ground truth> [--out metrics.parquet]

The ground truth is a masklet table: a directory with masklets/ in the job's layout, or a Parquet file or
directory with the masklet schema (video_id, object_id, frame_index, height, width, mask_rle at least).
Its rows define what is scored: every ground-truth (video, object, frame); a prediction missing for one
counts as an empty mask (and is reported); predicted objects the ground truth lacks are ignored (and
reported). Reappearance frames are counted in ground-truth rows (annotated frames) of each object.

Output: one row per (video, object): J, F, JF over its frames, the same over its reappearance frames (NaN
when it has none), and frame counts; written to --out (default <pred>/metrics.parquet). The summary gives
the DAVIS J&F (mean over all objects). Exit code 0 on success, 1 for bad arguments or unreadable input.

    python -m jobs.evaluate --unsupervised --pred <out dir of a pseudo-label run> --gt <ground truth>

Unsupervised: predicted track ids mean nothing; GT objects and tracks are matched per video by Hungarian
assignment on video mask IoU (jobs/track_metrics.py has the definitions). One row per video: recall,
precision (at video IoU >= 0.5), ID switches (and per 100 frames), IDF1, HOTA, DetA, AssA, DetRe, OWTA,
and J&F DAVIS 2017 unsupervised style (the --max-proposals tracks of highest mean score; a GT object
without one scores 0); written to --out (default <pred>/metrics_unsupervised.parquet).
"""

from __future__ import annotations

import argparse
import math
import posixpath
import sys
import time
from dataclasses import dataclass

import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from tqdm import tqdm

from workers.storage_options import parse_storage_options, redact
from model.errors import SamstreamError
from model.metrics import davis_summary, frame_scores, object_score, reappearance_frames
from jobs import track_metrics as tm
from workers.masklets import MASKLET_PARTITIONING, MaskletError, decode_rle
from workers.output import MASKLETS, VIDEOS, RunOutput, is_run_output

NEEDED = ["video_id", "object_id", "frame_index", "height", "width", "mask_rle"]
# frames: GT frames scored; frames_missing: those of them without a prediction row (scored as empty).
METRICS_SCHEMA = pa.schema([
    ("video_id", pa.string()), ("object_id", pa.int32()), ("frames", pa.int32()),
    ("frames_missing", pa.int32()), ("J", pa.float64()), ("F", pa.float64()), ("JF", pa.float64()),
    ("reappear_frames", pa.int32()), ("J_reappear", pa.float64()), ("F_reappear", pa.float64()),
    ("JF_reappear", pa.float64()),
])


class EvaluationError(SamstreamError, ValueError):
    """Input that cannot be evaluated; `value` holds the offending value (a path, a key, a shape)."""

    def __init__(self, message: str, value=None):
        self.value = value
        super().__init__(message)


# ---------------------------------------------------------------------------------------------- reading


class MaskletSource:
    """A masklet table read one video at a time, so memory is bounded by the largest video."""

    def __init__(self, url: str, storage_options: dict, role: str, extra=()):
        self.url, self.role = url, role
        self.columns = NEEDED + list(extra)
        self.fs, root = fsspec.core.url_to_fs(url, **storage_options)
        root = root.rstrip("/") or "/"
        if not self.fs.exists(root):
            raise EvaluationError(f"{role}: no such file or directory: {url}", url)
        self.run_dir = root if is_run_output(self.fs, root) else None
        self.dataset = self._open(root)

    def _open(self, root: str) -> ds.Dataset | None:
        if self.run_dir is not None:
            if not self.fs.isdir(f"{root}/{MASKLETS}"):
                return None  # a run that wrote no masklets (every video failed): nothing predicted
            root = f"{root}/{MASKLETS}"
        try:
            dataset = ds.dataset(root, filesystem=self.fs, format="parquet", partitioning=MASKLET_PARTITIONING)
        except (OSError, pa.ArrowException) as e:
            raise EvaluationError(f"{self.role}: cannot read {self.url} as Parquet: {e}", self.url) from e
        if not dataset.files:
            return None
        missing = [c for c in self.columns if c not in dataset.schema.names]
        if missing:
            raise EvaluationError(f"{self.role}: {self.url} lacks the masklet columns {missing} (has "
                                  f"{dataset.schema.names})", missing)
        return dataset

    def video_ids(self) -> list[str]:
        if self.dataset is None:
            return []
        ids = pc.unique(self.dataset.to_table(columns=["video_id"]).column("video_id"))
        return sorted(str(v) for v in ids.to_pylist() if v is not None)

    def video(self, video_id: str) -> pd.DataFrame:
        """The video's rows indexed by (object_id, frame_index), sorted; a repeated key is an error."""
        if self.dataset is None:
            return self.empty()
        table = self.dataset.to_table(columns=self.columns, filter=ds.field("video_id") == video_id)
        df = table.drop_columns(["video_id"]).to_pandas()
        df = df.astype({"object_id": np.int64, "frame_index": np.int64, "height": np.int64, "width": np.int64})
        df = df.set_index(["object_id", "frame_index"]).sort_index()
        if df.index.has_duplicates:
            dup = tuple(int(v) for v in df.index[df.index.duplicated()][0])
            raise EvaluationError(f"{self.role}: video {video_id!r} has more than one row for (object_id, "
                                  f"frame_index) = {dup}", (video_id, *dup))
        return df

    def empty(self) -> pd.DataFrame:
        """No rows, with the columns and index of `video` (a video this source does not have)."""
        index = pd.MultiIndex.from_arrays([np.zeros(0, np.int64)] * 2, names=["object_id", "frame_index"])
        return pd.DataFrame({c: [] for c in self.columns[3:]}, index=index)

    def failed_videos(self) -> list[str]:
        """Videos a segment run recorded as failed (its videos.parquet), if there is one."""
        path = None if self.run_dir is None else f"{self.run_dir}/{VIDEOS}"
        if path is None or not self.fs.exists(path):
            return []
        try:
            table = ds.dataset(path, filesystem=self.fs, format="parquet").to_table(columns=["video_id", "status"])
        except (OSError, pa.ArrowException):
            return []  # only informs the summary; the masklets are what is scored
        return sorted(v for v, s in zip(*table.to_pydict().values()) if s == "failed")


# ---------------------------------------------------------------------------------------------- scoring


@dataclass(frozen=True)
class Options:
    bound_th: float = 0.008       # DAVIS boundary tolerance (fraction of the diagonal, or pixels if >= 1)
    min_hidden: int = 5           # reappearance: hidden for at least this many GT frames...
    window: int = 5               # ...then scored on this many frames from the one it is back
    skip_first_last: bool = False  # DAVIS semi-supervised protocol: leave out each video's first/last frame
    exclude_prompts: bool = False  # leave out frames where the prediction was given (is_prompt)
    max_proposals: int = tm.MAX_PROPOSALS  # unsupervised J&F: tracks scored per video (DAVIS 2017: 20)


def _pred_rows(pred: pd.DataFrame, object_id: int) -> dict[int, tuple]:
    """frame_index -> prediction row (a namedtuple) of one object; empty when it was never predicted."""
    if object_id not in pred.index.get_level_values("object_id"):
        return {}
    rows = pred.xs(object_id, level="object_id")
    return dict(zip(rows.index.tolist(), rows.itertuples(index=False)))


def _pred_mask(p, gt_row, gt_mask: np.ndarray, where: tuple) -> np.ndarray:
    if p is None:
        return np.zeros_like(gt_mask)  # missing prediction: scored as an empty mask
    if (p.height, p.width) != (gt_row.height, gt_row.width):
        raise EvaluationError(f"video {where[0]!r} object {where[1]} frame {where[2]}: prediction is "
                              f"{p.height}x{p.width}, ground truth {gt_row.height}x{gt_row.width}", where)
    if p.mask_rle == gt_row.mask_rle:
        return gt_mask  # the same RLE is the same mask: skip a decode
    return decode_rle(p.mask_rle, p.height, p.width)


def _score_object(video_id: str, object_id: int, gt: pd.DataFrame, preds: dict, skip: set,
                  opts: Options) -> dict:
    """J and F on the GT frames of one object; its means over all of them and over reappearance frames."""
    n = len(gt)
    j, f = np.full(n, np.nan), np.full(n, np.nan)
    visible, scored, missing = np.zeros(n, bool), np.zeros(n, bool), 0
    for i, (frame, row) in enumerate(zip(gt.index.tolist(), gt.itertuples(index=False))):
        gt_mask = decode_rle(row.mask_rle, row.height, row.width)
        visible[i] = gt_mask.any()
        p = preds.get(frame)
        scored[i] = frame not in skip and not (opts.exclude_prompts and p is not None and p.is_prompt)
        missing += bool(scored[i]) and p is None
        if scored[i]:
            pred_mask = _pred_mask(p, row, gt_mask, (video_id, object_id, frame))
            j[i], f[i] = frame_scores(pred_mask, gt_mask, opts.bound_th)
    back = np.zeros(n, bool)
    back[reappearance_frames(visible, opts.min_hidden, opts.window)] = True
    back &= scored
    every, again = object_score(j[scored], f[scored]), object_score(j[back], f[back])
    return {"video_id": video_id, "object_id": object_id, "frames": every.frames, "frames_missing": missing,
            "J": every.J, "F": every.F, "JF": every.JF, "reappear_frames": again.frames,
            "J_reappear": again.J, "F_reappear": again.F, "JF_reappear": again.JF}


def score_video(video_id: str, gt: pd.DataFrame, pred: pd.DataFrame, opts: Options) -> list[dict]:
    """One row per GT object of a video (frames sorted); `gt`, `pred` as MaskletSource.video gives them."""
    frames = gt.index.get_level_values("frame_index")
    # DAVIS semi-supervised: the first frame carries the given mask; the last is left out as well.
    skip = {int(frames.min()), int(frames.max())} if opts.skip_first_last and len(frames) else set()
    return [_score_object(video_id, int(obj), rows.droplevel("object_id"), _pred_rows(pred, int(obj)), skip,
                          opts)
            for obj, rows in gt.groupby(level="object_id", sort=True)]


def evaluate(gt: MaskletSource, pred: MaskletSource, opts: Options,
             progress: bool = False) -> tuple[pa.Table, dict]:
    """Score every GT video; returns the metrics table and what did not match (for the summary)."""
    gt_videos, pred_videos = gt.video_ids(), set(pred.video_ids())
    if not gt_videos:
        raise EvaluationError(f"ground truth {gt.url} has no masklet rows", gt.url)
    rows, extra_objects = [], 0
    for video_id in tqdm(gt_videos, desc="evaluate", unit="video", disable=not progress):
        gt_rows = gt.video(video_id)
        pred_rows = pred.video(video_id) if video_id in pred_videos else pred.empty()
        rows += score_video(video_id, gt_rows, pred_rows, opts)
        extra_objects += len(set(pred_rows.index.get_level_values("object_id"))
                             - set(gt_rows.index.get_level_values("object_id")))
    report = {"videos_without_prediction": sorted(set(gt_videos) - pred_videos),
              "extra_videos": sorted(pred_videos - set(gt_videos)), "extra_objects": extra_objects,
              "failed_in_run": pred.failed_videos()}
    return pa.Table.from_pylist(rows, schema=METRICS_SCHEMA), report


# ---------------------------------------------------------------------------------------------- unsupervised

def proposal_scores(video_id: str, gt: pd.DataFrame, pred: pd.DataFrame, v: tm.VideoIoU,
                    opts: Options) -> tuple[list[tuple[float, float]], int]:
    """(J, F) of each GT object of `v` against its proposal (0, 0 without one), and the proposals used."""
    tracks = set(v.pred_ids.tolist())  # tracks with a non-empty mask somewhere
    scores = {t: s for t, s in tm.track_scores(pred).items() if t in tracks}
    proposals = tm.top_proposals(scores, opts.max_proposals)
    match = {m.gt_id: m.pred_id for m in tm.hungarian(v, proposals)}
    out = []
    for gt_id in v.gt_ids.tolist():
        if gt_id not in match:
            out.append((0.0, 0.0))  # DAVIS 2017 unsupervised: a missed object scores 0
            continue
        s = _score_object(video_id, gt_id, gt.xs(gt_id, level="object_id"), _pred_rows(pred, match[gt_id]),
                          set(), opts)
        out.append((s["J"], s["F"]))
    return out, len(proposals)


def evaluate_unsupervised(gt: MaskletSource, pred: MaskletSource, opts: Options,
                          progress: bool = False) -> tuple[pa.Table, dict]:
    """Score every GT video with matched ids; returns the per-video table and the dataset numbers."""
    gt_videos, pred_videos = gt.video_ids(), set(pred.video_ids())
    if not gt_videos:
        raise EvaluationError(f"ground truth {gt.url} has no masklet rows", gt.url)
    rows, videos, objects = [], [], []
    for video_id in tqdm(gt_videos, desc="evaluate", unit="video", disable=not progress):
        gt_rows = gt.video(video_id)
        pred_rows = pred.video(video_id) if video_id in pred_videos else pred.empty()
        tracks, v = tm.score_tracks(video_id, tm.video_overlaps(video_id, gt_rows, pred_rows))
        jf, proposals = proposal_scores(video_id, gt_rows, pred_rows, v, opts)
        ids = [df.index.get_level_values("object_id").nunique() for df in (gt_rows, pred_rows)]
        rows.append(tm.video_row(tracks, jf, proposals, *ids))
        videos.append(tracks)
        objects += [(video_id, j, f) for j, f in jf]
    vids, js, fs = zip(*objects) if objects else ((), (), ())
    report = {"tracks": tm.summarize_tracks(videos), "davis": davis_summary(vids, js, fs),
              "videos_without_prediction": sorted(set(gt_videos) - pred_videos),
              "extra_videos": sorted(pred_videos - set(gt_videos)), "failed_in_run": pred.failed_videos()}
    return pa.Table.from_pylist(rows, schema=tm.UNSUPERVISED_SCHEMA), report


# ---------------------------------------------------------------------------------------------- output


def summarize(table: pa.Table, report: dict) -> dict:
    """The headline numbers: DAVIS J&F over all objects, and over the objects that reappear."""
    cols = table.to_pydict()
    overall = davis_summary(cols["video_id"], cols["J"], cols["F"])
    again = davis_summary(cols["video_id"], cols["J_reappear"], cols["F_reappear"])
    missing = [(v, o, m, n) for v, o, m, n in zip(cols["video_id"], cols["object_id"], cols["frames_missing"],
                                                   cols["frames"]) if m]
    return {"J&F": overall["JF"], "J": overall["J"], "F": overall["F"],
            "J&F_video_mean": overall["JF_video_mean"], "videos": len(set(cols["video_id"])),
            "objects": table.num_rows, "frames": int(sum(cols["frames"])),
            "frames_missing": int(sum(cols["frames_missing"])), "missing": missing,
            "reappear_J&F": again["JF"], "reappear_J": again["J"], "reappear_F": again["F"],
            "reappear_objects": again["objects"], "reappear_frames": int(sum(cols["reappear_frames"])),
            **report}


def print_summary(s: dict, opts: Options, out: str) -> None:
    print(f"samstream evaluate: {s['videos']} videos, {s['objects']} objects, {s['frames']} frames scored "
          f"({s['frames_missing']} ground-truth frames without a prediction, scored as empty)")
    print(f"  J&F {s['J&F']:.4f}   J {s['J']:.4f}   F {s['F']:.4f}   (DAVIS: mean over objects; mean over "
          f"videos {s['J&F_video_mean']:.4f})")
    print(f"  reappearance J&F {s['reappear_J&F']:.4f}   J {s['reappear_J']:.4f}   F {s['reappear_F']:.4f}   "
          f"({s['reappear_objects']} objects, {s['reappear_frames']} frames: first {opts.window} frames back "
          f"after >= {opts.min_hidden} hidden)")
    for video_id, object_id, m, n in s["missing"][:10]:
        print(f"  missing predictions: video {video_id!r} object {object_id}: {m} of its frames")
    if len(s["missing"]) > 10:
        print(f"  ... and {len(s['missing']) - 10} more objects with missing predictions")
    if s["videos_without_prediction"]:
        print(f"  videos with no prediction at all: {s['videos_without_prediction'][:10]}")
    if s["failed_in_run"]:
        print(f"  videos the run recorded as failed: {s['failed_in_run'][:10]}")
    if s["extra_videos"] or s["extra_objects"]:
        print(f"  ignored predictions not in the ground truth: {len(s['extra_videos'])} videos, "
              f"{s['extra_objects']} objects of evaluated videos")
    print(f"  metrics: {out}")


def write_metrics(table: pa.Table, out_url: str, storage_options: dict) -> str:
    """Atomic write (RunOutput's): the file appears complete or not at all."""
    directory, name = posixpath.split(out_url.rstrip("/"))
    if not name.endswith(".parquet"):
        raise EvaluationError(f"--out must name a .parquet file, got {out_url!r}", out_url)
    return RunOutput(directory or ".", storage_options).write_table(name, table)


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m jobs.evaluate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pred", required=True, help="output directory of a segment run, any fsspec URL")
    ap.add_argument("--gt", required=True, help="ground truth: a run-layout directory (masklets/) or a Parquet "
                                                "file/directory with the masklet schema")
    ap.add_argument("--out", default=None, help="metrics Parquet file (default: <pred>/metrics.parquet, "
                                                "<pred>/metrics_unsupervised.parquet with --unsupervised)")
    ap.add_argument("--unsupervised", action="store_true",
                    help="predicted ids mean nothing: match GT objects and tracks by video mask IoU")
    ap.add_argument("--max-proposals", type=int, default=tm.MAX_PROPOSALS,
                    help="--unsupervised J&F: tracks scored per video, by mean score (default: %(default)s)")
    ap.add_argument("--bound-th", type=float, default=0.008, help="boundary tolerance (default: %(default)s "
                                                                  "of the diagonal; >= 1: pixels)")
    ap.add_argument("--min-hidden", type=int, default=5, help="reappearance: GT frames hidden before (>=)")
    ap.add_argument("--window", type=int, default=5, help="reappearance: frames scored once back")
    ap.add_argument("--skip-first-last", action="store_true",
                    help="DAVIS semi-supervised protocol: leave out each video's first and last GT frame")
    ap.add_argument("--exclude-prompts", action="store_true",
                    help="leave out frames where the prediction row is a prompt (is_prompt)")
    ap.add_argument("--storage-options", default=None, help="JSON object of fsspec storage options")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    if not (math.isfinite(args.bound_th) and args.bound_th > 0):
        ap.error(f"--bound-th must be a positive number, got {args.bound_th}")
    if args.unsupervised and (args.skip_first_last or args.exclude_prompts):
        ap.error("--skip-first-last and --exclude-prompts are for prompted runs, not --unsupervised")
    for name in ("min_hidden", "window", "max_proposals"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    return args


def _pred_columns(args) -> list[str]:
    if args.unsupervised:
        return ["score", "visible"]  # proposals rank tracks by their mean score over visible rows
    return ["is_prompt"] if args.exclude_prompts else []


def main(argv=None) -> int:
    args = parse_args(argv)
    opts = Options(args.bound_th, args.min_hidden, args.window, args.skip_first_last, args.exclude_prompts,
                   args.max_proposals)
    run, name = (evaluate_unsupervised, "metrics_unsupervised") if args.unsupervised else (evaluate, "metrics")
    storage_options = {}
    try:
        storage_options = parse_storage_options(args.storage_options)
        gt = MaskletSource(args.gt, storage_options, "ground truth")
        pred = MaskletSource(args.pred, storage_options, "prediction", extra=_pred_columns(args))
        start = time.time()
        table, report = run(gt, pred, opts, progress=not args.no_progress)
        out = write_metrics(table, args.out or f"{args.pred.rstrip('/')}/{name}.parquet", storage_options)
    except (EvaluationError, MaskletError, ValueError, OSError) as e:
        print(f"error: {redact(str(e), storage_options)}", file=sys.stderr)
        return 1
    if args.unsupervised:
        tm.print_summary(table, report, opts.max_proposals, redact(out, storage_options))
    else:
        print_summary(summarize(table, report), opts, redact(out, storage_options))
    print(f"  {time.time() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
