"""Prompted tracking over a video corpus: manifest -> Ray actors carrying memory across chunks -> Parquet.

    python -m jobs.segment --manifest s3://bucket/corpus.jsonl --out s3://bucket/run1 [--preset ...]

Exit code 0 when every video succeeded, 2 when some failed (each recorded in videos.parquet), 1 for bad
arguments or a bad manifest (before any work). Running the same command on a half-written output computes
only what is missing.
"""

import argparse
import json
import sys
import traceback

from cluster.config import RunConfig
from cluster.manifest import read_manifest
from cluster.run import RunInterrupted, RunSummary, run_segment
from model import SamstreamError, check_checkpoint, get_config, resolve_checkpoint
from workers.storage_options import parse_storage_options, redact
from workers.tasks import ModelSpec

from .memory_cli import add_memory_args, policy_from_args

EXIT_INTERRUPTED = {"SIGINT": 130, "SIGTERM": 143}


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on bad arguments; 2 means "some videos failed" here, so bad arguments exit 1."""

    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(1, f"{self.prog}: error: {message}\n")


def parse_args(argv=None) -> argparse.Namespace:
    ap = new_parser("python -m jobs.segment", __doc__)
    args = ap.parse_args(argv)
    check_args(ap, args)
    return args


def new_parser(prog: str, doc: str) -> argparse.ArgumentParser:
    """The arguments every tracking job shares (jobs.pseudo_label adds its own)."""
    ap = _Parser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    add_memory_args(ap, segment=prog.endswith("segment"))
    ap.add_argument("--max-retries", type=int, default=3,
                    help="failed attempts of a chunk (storage errors, dead actors) before its video is recorded "
                         "failed; each retry waits --retry-backoff x 2^(n-1) s (default: %(default)s)")
    ap.add_argument("--retry-backoff", type=float, default=1.0, help="seconds (default: %(default)s)")
    ap.add_argument("--claim-timeout", type=float, default=60.0,
                    help="seconds without a heartbeat after which another driver's claim on --out is taken over "
                         "(default: %(default)s)")
    ap.add_argument("--debug", action="store_true", help="print tracebacks of errors")
    ap.add_argument("--address", default=None, help="Ray address (default: RAY_ADDRESS, else a local Ray)")
    ap.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray started by this job")
    ap.add_argument("--num-gpus", type=int, default=None, help="GPUs of a local Ray (may be logical)")
    ap.add_argument("--storage-options", default=None,
                    help="JSON object of fsspec storage options (endpoint, credentials); never printed")
    ap.add_argument("--no-progress", action="store_true")
    return ap


def check_args(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    for name in ("chunk_frames", "streams_per_actor", "threads_per_actor"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.actors is not None and args.actors < 1:
        ap.error(f"--actors must be >= 1, got {args.actors}")
    if args.max_retries < 0 or args.retry_backoff < 0 or args.claim_timeout <= 0:
        ap.error(f"--max-retries and --retry-backoff must be >= 0 and --claim-timeout > 0, got "
                 f"{args.max_retries}, {args.retry_backoff}, {args.claim_timeout}")


def config_from_args(args: argparse.Namespace, storage_options: dict, **extra) -> RunConfig:
    """The typed run config; fails on an unknown preset or a bad image size before any work. `extra`:
    ModelSpec.discovery and RunConfig.pseudo_label for jobs.pseudo_label."""
    get_config(args.preset, args.image_size)
    policy = policy_from_args(args)
    if policy.coarse_after and args.no_memory_kv_cache:
        raise ValueError(f"--coarse-after {policy.coarse_after} needs the memory key/value cache: drop "
                         "--no-memory-kv-cache")
    spec = {"discovery": extra["discovery"]} if "discovery" in extra else {}
    model = ModelSpec(args.preset, resolve_checkpoint(args.preset, args.checkpoint), args.image_size, policy,
                      dtype=args.dtype, compile=args.compile, memory_kv_cache=not args.no_memory_kv_cache, **spec)
    return RunConfig(pseudo_label=extra.get("pseudo_label"), out=args.out.rstrip("/"), model=model, chunk_frames=args.chunk_frames, actors=args.actors,
                     streams_per_actor=args.streams_per_actor, threads_per_actor=args.threads_per_actor,
                     max_retries=args.max_retries, retry_backoff_s=args.retry_backoff,
                     claim_timeout_s=args.claim_timeout, address=args.address, num_cpus=args.num_cpus,
                     num_gpus=args.num_gpus, progress=not args.no_progress, storage_options=storage_options)


def main(argv=None) -> int:
    args = parse_args(argv)
    return run_job(args, "segment", config_from_args)


def run_job(args: argparse.Namespace, name: str, make_config) -> int:
    """Build the config, check the checkpoint, read the manifest, run; errors as one line, exit codes."""
    storage_options: dict = {}
    try:
        storage_options = parse_storage_options(args.storage_options)
        config = make_config(args, storage_options)  # arguments first: they are cheapest to check
        if config.model.checkpoint is not None:  # a wrong or damaged checkpoint fails here, not in every actor
            check_checkpoint(config.model.preset, config.model.checkpoint, config.model.image_size, storage_options)
        entries = read_manifest(args.manifest, storage_options)
        summary = run_segment(entries, config)
    except RunInterrupted as e:
        print(f"samstream {name}: {redact(str(e), storage_options)}", file=sys.stderr)
        return EXIT_INTERRUPTED[e.signal_name]
    except KeyboardInterrupt:  # before any chunk ran (reading the manifest, probing the videos)
        print(f"samstream {name}: interrupted by SIGINT before any chunk ran; run the same command again",
              file=sys.stderr)
        return EXIT_INTERRUPTED["SIGINT"]
    except Exception as e:  # one line, no traceback (unless --debug): bad input, a claimed output, storage
        if args.debug:
            traceback.print_exc()
        print(f"error: {one_line(e, storage_options)}" + ("" if args.debug else " (--debug shows the traceback)"),
              file=sys.stderr)
        return 1
    print_summary(summary, storage_options, name)
    return 0 if summary.videos_failed == 0 else 2


def one_line(error: BaseException, storage_options: dict) -> str:
    """An error as one line without secrets: our errors' messages name their values; others get their type."""
    text = str(error) if isinstance(error, (SamstreamError, ValueError)) else f"{type(error).__name__}: {error}"
    return " ".join(redact(text, storage_options).split())


def print_summary(summary: RunSummary, storage_options: dict, name: str = "segment") -> None:
    print(f"samstream {name}: {summary.videos_ok} videos ok, {summary.videos_failed} failed; {summary.frames} "
          f"frames in {summary.seconds:.1f} s ({summary.frames_per_s:.1f} frames/s)")
    for vid, err in summary.errors.items():
        print(f"  failed {vid}: {redact(err, storage_options)}")
    for vid, note in summary.notes.items():
        print(f"  note {vid}: {redact(note, storage_options)}")
    print(f"  output: {redact(summary.out, storage_options)}")
    if summary.took_over:
        print(f"  took over the output from run {summary.took_over}, whose driver stopped sending heartbeats")
    print(json.dumps({"chunks_computed": summary.chunks_computed, "chunks_skipped": summary.chunks_skipped,
                      "chunks_recomputed": summary.chunks_recomputed}))


if __name__ == "__main__":
    sys.exit(main())
