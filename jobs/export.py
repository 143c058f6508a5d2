"""Export a masklet output to SA-V style per-video JSON or YouTube-VIS JSON.

    python -m jobs.export --format sav|ytvis --pred <out dir of a segment or pseudo-label run> --out <dir>
                          [--every N] [--storage-options JSON]

--pred and --out are any fsspec URLs. sav writes <out>/<video id>_auto.json per video (SA-V's fields and
types; every 4th frame annotated by default, as SA-V annotates 6 fps of 24 fps video); ytvis writes
<out>/ytvis.json for the whole output (every frame by default). Videos the run recorded as failed are skipped
and reported. Exit code 0 on success, 1 for bad arguments or unreadable input (one line naming the value).
Field semantics and their sources: workers/export_sav.py and workers/export_ytvis.py.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback

from model.errors import SamstreamError
from workers.exports import DEFAULT_EVERY, FORMATS, ExportConfig, ExportReport, run_export
from workers.storage_options import parse_storage_options, redact, strip_url_secrets


class _Parser(argparse.ArgumentParser):
    """Bad arguments exit 1 with one line (argparse's default is 2 and a usage block)."""

    def error(self, message):
        self.exit(1, f"{self.prog}: error: {message} (--help for usage)\n")


def parse_args(argv=None) -> argparse.Namespace:
    ap = _Parser(prog="python -m jobs.export", description=__doc__,
                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--format", required=True, help=f"one of {', '.join(FORMATS)}")
    ap.add_argument("--pred", required=True, help="output directory of a segment or pseudo-label run, any URL")
    ap.add_argument("--out", required=True, help="directory to write the export to, any fsspec URL")
    ap.add_argument("--every", type=int, default=None,
                    help="annotate every N-th frame (0, N, 2N, ...); default: "
                         + ", ".join(f"{k} {v}" for k, v in DEFAULT_EVERY.items()))
    ap.add_argument("--storage-options", default=None,
                    help="JSON object of fsspec storage options (endpoint, credentials); never printed")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--debug", action="store_true", help="print tracebacks of errors")
    args = ap.parse_args(argv)
    if args.format not in FORMATS:  # checked here, not with choices=, so the message names the value first
        ap.error(f"--format must be one of {', '.join(FORMATS)}, got {args.format!r}")
    if args.every is not None and args.every < 1:
        ap.error(f"--every must be >= 1, got {args.every}")
    return args


def config_from_args(args: argparse.Namespace, storage_options: dict) -> ExportConfig:
    every = DEFAULT_EVERY[args.format] if args.every is None else args.every
    return ExportConfig(args.format, args.pred, args.out, every, storage_options, progress=not args.no_progress)


def one_line(error: BaseException, args: argparse.Namespace, storage_options: dict) -> str:
    """An error as one line without secrets (storage options, URL passwords and query strings)."""
    text = str(error) if isinstance(error, (SamstreamError, ValueError)) else f"{type(error).__name__}: {error}"
    text = redact(text, storage_options)
    for url in (args.pred, args.out):
        text = strip_url_secrets(text, url)
    return " ".join(text.split())


def print_summary(report: ExportReport, seconds: float, storage_options: dict) -> None:
    for video_id, reason in list(report.skipped.items())[:10]:
        print(f"  skipped {video_id!r}: {reason}")
    if len(report.skipped) > 10:
        print(f"  ... and {len(report.skipped) - 10} more videos skipped")
    if report.unlisted:
        print(f"  not exported: {len(report.unlisted)} masklet folders without a videos.parquet row "
              f"({report.unlisted[:5]})")
    if not report.complete:
        print("  note: --pred has no _SUCCESS (an unfinished run): exported what it holds")
    print(f"samstream export {report.format}: {report.videos} videos, {report.objects} objects, "
          f"{report.annotated_frames} annotated frames exported ({len(report.skipped)} videos skipped, "
          f"{report.hidden_objects} objects never visible on an annotated frame left out) in {seconds:.1f} s "
          f"-> {redact(report.where, storage_options)}")


def main(argv=None) -> int:
    args = parse_args(argv)
    storage_options: dict = {}
    try:
        storage_options = parse_storage_options(args.storage_options)
        start = time.time()
        report = run_export(config_from_args(args, storage_options))
    except Exception as e:  # one line, no traceback (unless --debug): bad input, unreadable storage
        if args.debug:
            traceback.print_exc()
        print(f"error: {one_line(e, args, storage_options)}", file=sys.stderr)
        return 1
    print_summary(report, time.time() - start, storage_options)
    return 0


if __name__ == "__main__":
    sys.exit(main())
