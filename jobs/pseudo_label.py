"""Pseudo-labels over a video corpus: every object found, tracked, ended when gone, stitched across segments.

    python -m jobs.pseudo_label --manifest s3://bucket/corpus.jsonl --out s3://bucket/labels1 [--preset ...]

Objects are discovered on keyframes (the first frame of each segment and every --keyframe-every frames) by
SAM's automatic mask generator, only where no live track covers the frame; prompts in the manifest are
optional (given objects are tracked as in jobs.segment, under their ids; discovered ones are numbered after
the largest given id of their video). A video longer than --segment-frames is cut into segments that share
--overlap frames and run as independent streams on any actor; the driver stitches their tracks by mean mask
IoU over each overlap (Hungarian, floor --stitch-iou) into global ids that depend only on the input.

Output: the layout of jobs.segment (masklets/, videos.parquet, _run.json, _SUCCESS) plus tracks.parquet, one
row per global object id. Exit codes, resume, claims and failure isolation are jobs.segment's: 0 when every
video succeeded, 2 when some failed (each recorded), 1 for bad arguments or a bad manifest.
"""

import argparse
import sys

from cluster.config import PseudoLabelConfig, RunConfig
from model.auto_masks import AutoMaskConfig
from model.discovery import DiscoveryConfig

from .segment import check_args, config_from_args, new_parser, run_job


def parse_args(argv=None) -> argparse.Namespace:
    ap = new_parser("python -m jobs.pseudo_label", __doc__)
    g = ap.add_argument_group("discovery")
    g.add_argument("--keyframe-every", type=int, default=16,
                   help="discover objects on each segment's first frame and every this many frames (default: "
                        "%(default)s)")
    g.add_argument("--max-missing", type=int, default=45,
                   help="end a discovered track after this many frames in a row with presence < 0.5")
    g.add_argument("--max-objects", type=int, default=64, help="live objects per stream (default: %(default)s)")
    g.add_argument("--match-iou", type=float, default=0.5,
                   help="a proposal with mask IoU above this with a live track is that track")
    g.add_argument("--points-per-side", type=int, default=None,
                   help="grid of clicks per keyframe side (default: 32 for the official presets, sized to the "
                        "model for small ones)")
    g.add_argument("--points-per-batch", type=int, default=64)
    g.add_argument("--pred-iou-thresh", type=float, default=None,
                   help="keep automatic masks whose predicted IoU is above this (default: the model's; SAM 2's "
                        "0.8 for the official presets)")
    g.add_argument("--stability-score-thresh", type=float, default=None,
                   help="... whose stability score is at least this (default: the model's; SAM 2's 0.95)")
    g.add_argument("--stability-score-offset", type=float, default=None,
                   help="logit offset of the stability score (default: the model's; SAM 2's 1.0)")
    g.add_argument("--box-nms-thresh", type=float, default=0.7)
    g.add_argument("--min-region-area", type=int, default=0,
                   help="remove regions and holes smaller than this (pixels of the mask decoder's grid)")
    s = ap.add_argument_group("segments")
    s.add_argument("--segment-frames", type=int, default=600,
                   help="a longer video is cut into segments tracked in parallel (default: %(default)s)")
    s.add_argument("--overlap", type=int, default=32, help="frames neighbouring segments share (default: %(default)s)")
    s.add_argument("--stitch-iou", type=float, default=0.5,
                   help="least mean mask IoU over an overlap for two tracks to be one object (default: %(default)s)")
    args = ap.parse_args(argv)
    check_args(ap, args)
    return args


def pseudo_label_config(args: argparse.Namespace, storage_options: dict) -> RunConfig:
    """The typed config; a bad threshold or segment length raises ValueError naming the value."""
    auto = AutoMaskConfig(args.points_per_side, args.points_per_batch, args.pred_iou_thresh,
                          args.stability_score_thresh, args.stability_score_offset, args.box_nms_thresh,
                          args.min_region_area)
    discovery = DiscoveryConfig(auto, args.keyframe_every, args.match_iou, args.max_missing, args.max_objects)
    pseudo = PseudoLabelConfig(args.segment_frames, args.overlap, args.stitch_iou)
    return config_from_args(args, storage_options, discovery=discovery, pseudo_label=pseudo)


def main(argv=None) -> int:
    return run_job(parse_args(argv), "pseudo-label", pseudo_label_config)


if __name__ == "__main__":
    sys.exit(main())
