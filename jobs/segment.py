"""Prompted tracking over a video corpus: manifest -> Ray actors carrying memory across chunks -> Parquet.

    python -m jobs.segment --manifest s3://bucket/corpus.jsonl --out s3://bucket/run1 [--preset ...]

Exit code 0 when every video succeeded, 2 when some failed (each recorded in videos.parquet), 1 for bad
arguments or a bad manifest (before any work). Running the same command on a half-written output computes
only what is missing.
"""

import argparse
import json
import sys
import time

from cluster.manifest import ManifestError, parse_storage_options, read_manifest, redact
from cluster.run import RunConfig, claim_output, run_segment


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on bad arguments; 2 means "some videos failed" here, so bad arguments exit 1."""

    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(1, f"{self.prog}: error: {message}\n")


def parse_args(argv=None) -> argparse.Namespace:
    ap = _Parser(prog="python -m jobs.segment", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manifest", required=True, help="JSON lines or Parquet manifest, any fsspec URL")
    ap.add_argument("--out", required=True, help="output directory, any fsspec URL")
    ap.add_argument("--preset", default="synthetic-tiny", help="model preset (default: %(default)s)")
    ap.add_argument("--checkpoint", default=None,
                    help="weights, any fsspec URL; 'random' for random (seeded) weights (default: the weights "
                         "shipped with the preset, i.e. synthetic-tiny's trained ones, else random)")
    ap.add_argument("--image-size", type=int, default=None)
    ap.add_argument("--dtype", choices=("auto", "fp32", "bf16"), default="auto",
                    help="autocast: auto = bf16 on CUDA, float32 on CPU (bit parity with the reference); bf16 "
                         "on a CPU with AVX512-BF16 is faster, within the last bits")
    ap.add_argument("--compile", action="store_true",
                    help="torch.compile each actor's hot step with static shapes (a one-off compile per actor, "
                         "then faster frames; for long runs on GPUs)")
    ap.add_argument("--no-memory-kv-cache", action="store_true",
                    help="project every memory for memory attention on every frame that reads it, as the reference "
                         "does, instead of once per memory: slower, but saves 2 x layers x hw x 256 values per kept "
                         "memory and object (16 MB per memory at 1024 px in bf16)")
    ap.add_argument("--chunk-frames", type=int, default=64, help="frames per chunk (default: %(default)s)")
    ap.add_argument("--actors", type=int, default=None, help="actors (default: one per GPU, or 1 on CPU)")
    ap.add_argument("--streams-per-actor", type=int, default=None,
                    help="streams stepped together per actor (default: 4 with GPUs; 1 on CPU, where batching "
                         "gains nothing, so results are bit-identical whatever the number of actors)")
    ap.add_argument("--threads-per-actor", type=int, default=1,
                    help="torch threads per actor; on CPU the default pool is CPUs / threads actors")
    ap.add_argument("--num-recent", type=int, default=6)
    ap.add_argument("--max-cond", type=int, default=16)
    ap.add_argument("--decay", type=float, default=0.0,
                    help="temporal decay lambda: attention to a recent memory dt frames old is weighted "
                         "exp(-lambda*dt)")
    ap.add_argument("--store-threshold", type=float, default=None,
                    help="selective storing: remember a tracked frame only when the object's presence probability "
                         "is at least this; the N most recent remembered frames are kept (default: every frame)")
    ap.add_argument("--num-keyframes", type=int, default=0,
                    help="long-term keyframes kept beside the recent frames (default 0: none, as the reference)")
    ap.add_argument("--keyframe-every", type=int, default=8,
                    help="a remembered frame every this many frames after an object's first becomes a keyframe")
    ap.add_argument("--max-retries", type=int, default=3)
    ap.add_argument("--address", default=None, help="Ray address (default: RAY_ADDRESS, else a local Ray)")
    ap.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray started by this job")
    ap.add_argument("--num-gpus", type=int, default=None, help="GPUs of a local Ray (may be logical)")
    ap.add_argument("--storage-options", default=None,
                    help="JSON object of fsspec storage options (endpoint, credentials); never printed")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    for name in ("chunk_frames", "streams_per_actor", "threads_per_actor"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.actors is not None and args.actors < 1:
        ap.error(f"--actors must be >= 1, got {args.actors}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        storage_options = parse_storage_options(args.storage_options)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    try:
        config = RunConfig.from_args(args, storage_options)  # arguments first: they are cheapest to check
        entries = read_manifest(args.manifest, storage_options)
        claim_output(config)
    except (ManifestError, ValueError) as e:
        print(f"error: {redact(str(e), storage_options)}", file=sys.stderr)
        return 1
    start = time.time()
    summary = run_segment(entries, config)
    ok, failed = summary["videos_ok"], summary["videos_failed"]
    print(f"samstream segment: {ok} videos ok, {failed} failed; {summary['frames']} frames in "
          f"{time.time() - start:.1f} s ({summary['frames_per_s']:.1f} frames/s)")
    for vid, err in summary["errors"].items():
        print(f"  failed {vid}: {redact(err, storage_options)}")
    print(f"  output: {redact(config.out, storage_options)}")
    print(json.dumps({"chunks_computed": summary["chunks_computed"], "chunks_skipped": summary["chunks_skipped"]}))
    return 0 if failed == 0 else 2


if __name__ == "__main__":
    sys.exit(main())
