"""Pseudo-label quality on held-out synthetic videos: recall, precision, ID switches, HOTA / OWTA, matched J&F.

Renders synthetic videos (model.synthetic; split "test" by default: never trained on), drops their prompts,
runs the real pseudo-label job on them (jobs.pseudo_label, in process, local Ray), and scores the output with
`jobs.evaluate --unsupervised` against the truth. Optionally also:
- `--ceiling`: the same videos tracked from ground-truth boxes on their first frame (jobs.segment), scored the
  same way: what tracking alone reaches when every object is given;
- `--long-videos K --long-frames N`: K long videos cut into segments (--segment-frames), scored, and the same
  videos again as one segment each, for "parallel segments vs one segment" (matched J&F both ways).

    python -m benchmarks.pseudo_label_recall [--videos 30] [--frames 64] [--long-videos 3] [--long-frames 640]
        [--segment-frames 256] [--ceiling] [--split test] [--out out/pseudo_label] [--actors 2] [--label-args '...']

Prints each run's summary and writes <out>/results.json.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shlex
import time
from pathlib import Path

from jobs import evaluate, pseudo_label, segment
from model.synthetic import SyntheticConfig
from workers.synthetic_corpus import write_corpus


def corpus(root: Path, split: str, videos: int, frames: int, start: int, prompt: str) -> Path:
    manifest = root / "manifest.jsonl"
    if not manifest.exists():
        write_corpus(root, split, videos, SyntheticConfig(num_frames=frames), prompt_kind=prompt, start=start)
    return manifest


def unprompted(manifest: Path) -> Path:
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    path = manifest.with_name("manifest-unprompted.jsonl")
    path.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "prompts"}) + "\n" for r in rows))
    return path


def score(pred: Path, truth: Path) -> dict:
    """jobs.evaluate --unsupervised, its printed summary kept; returns the pooled figures."""
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        code = evaluate.main(["--unsupervised", "--pred", str(pred), "--gt", str(truth), "--no-progress"])
    print(text.getvalue(), end="")
    if code != 0:
        raise SystemExit(f"evaluation of {pred} failed ({code})")
    return _figures(text.getvalue())


def _figures(summary: str) -> dict:
    """The numbers of jobs.evaluate --unsupervised's summary lines (name value pairs)."""
    words = summary.replace("(", " ").replace(")", " ").split()
    wanted = ("recall", "precision", "HOTA", "DetA", "AssA", "DetRe", "OWTA", "IDF1", "J&F")
    out = {}
    for i, w in enumerate(words[:-1]):
        if w in wanted and w not in out:
            try:
                out[w] = float(words[i + 1])
            except ValueError:
                pass
    if "switches" in words:
        i = words.index("switches")
        out["id_switches"], out["id_switches_per_100_frames"] = int(words[i + 1]), float(words[i + 2])
    return out


def label(manifest: Path, out: Path, args, extra: list[str]) -> float:
    started = time.time()
    code = pseudo_label.main(["--manifest", str(manifest), "--out", str(out), "--no-progress",
                              "--actors", str(args.actors), *shlex.split(args.label_args), *extra])
    if code != 0:
        raise SystemExit(f"pseudo-label run {out} failed ({code})")
    return time.time() - started


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.pseudo_label_recall", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=30)
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--long-videos", type=int, default=0)
    ap.add_argument("--long-frames", type=int, default=640)
    ap.add_argument("--segment-frames", type=int, default=256)
    ap.add_argument("--split", default="test")
    ap.add_argument("--ceiling", action="store_true")
    ap.add_argument("--actors", type=int, default=2)
    ap.add_argument("--label-args", default="", help="more jobs.pseudo_label arguments (thresholds)")
    ap.add_argument("--out", default="out/pseudo_label")
    args = ap.parse_args(argv)
    out, results = Path(args.out), {"args": vars(args)}
    short = corpus(out / f"{args.split}-{args.videos}x{args.frames}", args.split, args.videos, args.frames, 0, "box")
    tag = f"labels-{abs(hash(args.label_args)) % 10**6}"
    results["seconds"] = label(unprompted(short), short.parent / tag, args, [])
    results["short"] = score(short.parent / tag, short.parent / "truth")
    if args.ceiling:
        code = segment.main(["--manifest", str(short), "--out", str(short.parent / "boxes"), "--no-progress",
                             "--actors", str(args.actors)])
        assert code == 0, code
        results["ceiling"] = score(short.parent / "boxes", short.parent / "truth")
    if args.long_videos:
        long = corpus(out / f"{args.split}-long-{args.long_videos}x{args.long_frames}", args.split,
                      args.long_videos, args.long_frames, 10_000, "box")
        for name, seg in (("segments", args.segment_frames), ("one_segment", args.long_frames + 1)):
            results[f"long_{name}_seconds"] = label(unprompted(long), long.parent / f"{tag}-{name}", args,
                                                    ["--segment-frames", str(seg)])
            results[f"long_{name}"] = score(long.parent / f"{tag}-{name}", long.parent / "truth")
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
