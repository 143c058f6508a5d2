"""J&F of a model on a synthetic evaluation split, with memory on and with memory off (the ablation).

Generates the split's videos (model.synthetic; "test" by default: seeds never trained on, of the training
families; "heldout": families never trained on at all, shapes, textures, backgrounds and motions; "val": for
choosing settings without touching test) as mp4 files with a manifest of first-frame prompts, runs the real
segment job on it twice (the default memory, then `--num-recent 0`: every frame decoded from its prompted
frame's memory alone), and scores both with jobs.evaluate (DAVIS J&F; the prompted frame left out, as in
DAVIS's semi-supervised protocol; reappearance J&F over the 5 frames after every return from >= 5 hidden
frames).

    python -m benchmarks.synthetic_jf [--videos 50] [--frames 64] [--prompt mask] [--checkpoint URL]
                                      [--out out/synthetic_jf] [--actors 2] [--num-recent 6]
                                      [--split test|heldout|val] [--store-threshold P]
                                      [--memory-args '--num-keyframes 4']

Writes <out>/results.json and <out>/results.md and prints the table. The corpus is reused when present.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

from jobs import segment
from jobs.evaluate import MaskletSource, Options, evaluate, summarize
from model.synthetic import SyntheticConfig
from model.prompts import PROMPT_KINDS
from workers.synthetic_corpus import write_corpus

MODES = {"memory": [], "memory off": ["--num-recent", "0"]}  # "memory" keeps --num-recent recent frames


def corpus(out: Path, videos: int, frames: int, prompt: str, split: str = "test") -> Path:
    """The split's first `videos` videos (rewritten only when the request changed)."""
    root = out / f"{split}-{videos}x{frames}-{prompt}"
    manifest = root / "manifest.jsonl"
    if not manifest.exists():
        write_corpus(root, split, videos, SyntheticConfig(num_frames=frames), prompt_kind=prompt)
    return manifest


def run_mode(manifest: Path, out: Path, name: str, args) -> dict:
    """Segment the corpus with one memory mode and score it -> the evaluate summary plus seconds."""
    pred = out / name.replace(" ", "_")
    job = ["--manifest", str(manifest), "--out", str(pred), "--actors", str(args.actors), "--no-progress",
           "--preset", args.preset] + (["--num-recent", str(args.num_recent)] if name == "memory" else MODES[name])
    job += ["--store-threshold", str(args.store_threshold)] if args.store_threshold is not None else []
    job += shlex.split(args.memory_args) if name == "memory" else []
    job += ["--checkpoint", args.checkpoint] if args.checkpoint else []
    job += ["--image-size", str(args.image_size)] if args.image_size else []
    start = time.time()
    if segment.main(job) != 0:
        raise RuntimeError(f"segment job failed for mode {name!r} (output {pred})")
    seconds = time.time() - start
    table, report = evaluate(MaskletSource(str(manifest.parent / "truth"), {}, "ground truth"),
                             MaskletSource(str(pred), {}, "prediction", extra=["is_prompt"]),
                             Options(exclude_prompts=True))
    return {**summarize(table, report), "seconds": seconds}


def markdown(results: dict, args) -> str:
    selective = "" if args.store_threshold is None else f", selective storing at presence >= {args.store_threshold}"
    selective += f", {args.memory_args}" if args.memory_args else ""
    lines = [f"Synthetic {args.split} split: {args.videos} videos x {args.frames} frames, first-frame {args.prompt} "
             f"prompts, preset {args.preset}, checkpoint {args.checkpoint or 'embedded'}, memory of "
             f"{args.num_recent} recent frames{selective}.", "",
             "| memory | J&F | J | F | reappearance J&F | reappearance objects | frames | job s |",
             "|---|---|---|---|---|---|---|---|"]
    for name, s in results.items():
        lines.append(f"| {name} | {s['J&F']:.4f} | {s['J']:.4f} | {s['F']:.4f} | {s['reappear_J&F']:.4f} | "
                     f"{s['reappear_objects']} | {s['frames']} | {s['seconds']:.0f} |")
    if len(results) == 2:
        on, off = results.values()
        lines += ["", f"Memory off loses {on['J&F'] - off['J&F']:.4f} J&F overall and "
                      f"{on['reappear_J&F'] - off['reappear_J&F']:.4f} on reappearance frames."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.synthetic_jf", description=__doc__.split("\n")[0])
    ap.add_argument("--videos", type=int, default=50)
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--prompt", default="mask", choices=PROMPT_KINDS)
    ap.add_argument("--preset", default="synthetic-tiny")
    ap.add_argument("--checkpoint", default=None, help="weights (default: the preset's embedded ones)")
    ap.add_argument("--image-size", type=int, default=None)
    ap.add_argument("--actors", type=int, default=2)
    ap.add_argument("--num-recent", type=int, default=6, help="recent frames the 'memory' mode keeps (default 6, "
                                                              "the reference's)")
    ap.add_argument("--store-threshold", type=float, default=None,
                    help="selective storing in the 'memory' mode (jobs.segment's --store-threshold)")
    ap.add_argument("--memory-args", default="",
                    help="more jobs.segment memory options for the 'memory' mode, e.g. '--num-keyframes 4'")
    ap.add_argument("--split", default="test", choices=("test", "heldout", "val"),
                    help="the split to score: test (unseen seeds of the training families), heldout (families "
                         "never trained on: model.synthetic.families.HELD_OUT) or val (for choosing settings "
                         "without touching test)")
    ap.add_argument("--modes", default=",".join(MODES), help=f"comma list of {list(MODES)}")
    ap.add_argument("--out", default="out/synthetic_jf")
    args = ap.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",")]
    if any(m not in MODES for m in modes):
        ap.error(f"--modes must be a comma list of {list(MODES)}, got {args.modes!r}")
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # the local Ray stays on loopback
    out = Path(args.out)
    manifest = corpus(out, args.videos, args.frames, args.prompt, args.split)
    results = {m: run_mode(manifest, out, m, args) for m in modes}
    text = markdown(results, args)
    (out / "results.md").write_text(text)
    (out / "results.json").write_text(json.dumps(
        {m: {k: v for k, v in s.items() if k != "missing"} for m, s in results.items()}, indent=1, default=str))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
