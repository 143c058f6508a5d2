"""The README's first command: a synthetic corpus with ground truth, a local Ray, the segment job with the
embedded model, J&F against the truth, and a preview.

Generates held-out synthetic videos (model.synthetic, split "test": never trained on) as mp4 files with
each object's true mask on the first frame it is visible (DAVIS's semi-supervised protocol; --prompt box or
points for the other kinds): a few short clips and two long videos in which objects pass
behind occluders, leave the frame and come back. Runs jobs.segment on them with the embedded `synthetic-tiny`
weights on 2 actors, scores the output with jobs.evaluate (DAVIS J&F; reappearance J&F), prints a summary,
and writes an overlay mp4 and a PNG contact sheet of the first long video under <out>/preview/.
Then pseudo-labels: the first long video without its prompts through jobs.pseudo_label, cut into segments of
--segment-frames on the same actors and stitched, scored with jobs.evaluate --unsupervised (recall, HOTA,
...), with its own contact sheet (<out>/preview/<id>-pseudo.png).

    python -m jobs.demo [--out out/demo] [--short 4] [--short-frames 64] [--long 2] [--long-frames 600]
                        [--segment-frames 256] [--no-pseudo-label]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from jobs import evaluate as evaluate_job
from jobs import pseudo_label, segment
from jobs.evaluate import MaskletSource, Options, evaluate, print_summary, summarize
from workers.masklets import escape_video_id
from workers.output import read_masklets
from workers.preview import write_contact_sheet, write_preview_video
from model.synthetic import SyntheticConfig
from model.prompts import PROMPT_KINDS
from workers.synthetic_corpus import write_corpus

SHORT_START, LONG_START = 100_000, 200_000  # test-split indices of the demo's videos (the J&F benchmark uses 0..)


def make_corpus(out: Path, args) -> tuple[Path, dict[str, Path]]:
    """Both groups of videos (reused when present) -> (merged manifest, {group: its truth directory})."""
    groups = {"short": (args.short, args.short_frames, SHORT_START), "long": (args.long, args.long_frames, LONG_START)}
    lines, truth = [], {}
    for name, (count, frames, start) in groups.items():
        if count < 1:
            continue
        root = out / "corpus" / f"{name}-{count}x{frames}-{args.prompt}"
        if not (root / "manifest.jsonl").exists():
            cfg = SyntheticConfig(height=args.size, width=args.size, num_frames=frames)
            write_corpus(root, "test", count, cfg, prompt_kind=args.prompt, start=start)
        lines += (root / "manifest.jsonl").read_text().splitlines()
        truth[name] = root / "truth"
    manifest = out / "corpus" / "manifest.jsonl"
    manifest.write_text("".join(line + "\n" for line in lines))
    return manifest, truth


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m jobs.demo", description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="out/demo", help="where the corpus, the masks and the preview go")
    ap.add_argument("--short", type=int, default=4, help="short clips")
    ap.add_argument("--short-frames", type=int, default=64)
    ap.add_argument("--long", type=int, default=2, help="long videos")
    ap.add_argument("--long-frames", type=int, default=600)
    ap.add_argument("--size", type=int, default=256, help="frame height and width (even)")
    ap.add_argument("--prompt", default="mask", choices=PROMPT_KINDS,
                    help="first-frame prompt kind (default: the true mask, DAVIS's semi-supervised protocol)")
    ap.add_argument("--actors", type=int, default=2)
    ap.add_argument("--preset", default="synthetic-tiny")
    ap.add_argument("--checkpoint", default=None, help="weights (default: the preset's embedded ones)")
    ap.add_argument("--segment-frames", type=int, default=256,
                    help="pseudo-label step: segment length for the long video (default: %(default)s)")
    ap.add_argument("--no-pseudo-label", action="store_true", help="skip the pseudo-label step")
    args = ap.parse_args(argv)
    if args.short + args.long < 1:
        ap.error(f"need at least one video, got --short {args.short} --long {args.long}")
    out = Path(args.out)
    start = time.time()
    manifest, truth = make_corpus(out, args)
    print(f"corpus: {manifest} ({time.time() - start:.0f} s)")
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # the local Ray stays on loopback
    masks = out / "masks"
    job = ["--manifest", str(manifest), "--out", str(masks), "--preset", args.preset, "--actors", str(args.actors)]
    code = segment.main(job + (["--checkpoint", args.checkpoint] if args.checkpoint else []))
    if code not in (0, 2):  # bad arguments, or interrupted: nothing to score
        return code
    opts = Options(exclude_prompts=True)  # DAVIS: the prompted frame is not scored
    for name, gt in truth.items():
        print(f"\n{name} videos:")
        table, report = evaluate(MaskletSource(str(gt), {}, "ground truth"),
                                 MaskletSource(str(masks), {}, "prediction", extra=["is_prompt"]), opts)
        report["extra_videos"] = []  # the other group's videos are scored in its own summary
        print_summary(summarize(table, report), opts, f"(not written; python -m jobs.evaluate --pred {masks} "
                                                      f"--gt {gt})")
    group = "long" if args.long else "short"
    preview(out, manifest, masks, group)
    if not args.no_pseudo_label:
        code = max(code, pseudo_label_step(out, manifest, truth[group], group, args))
    print(f"\nread the masks back: pandas.read_parquet('{masks / 'masklets'}')   ({time.time() - start:.0f} s in all)")
    return code


def _first(manifest: Path, group: str) -> dict:
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    return next(r for r in rows if f"/corpus/{group}-" in r["url"].replace(os.sep, "/"))


def preview(out: Path, manifest: Path, masks: Path, group: str, suffix: str = "", video: bool = True) -> None:
    """Overlay mp4 + contact sheet of the first video of `group`."""
    first = _first(manifest, group)
    clip = read_masklets(str(masks), video_id=first["video_id"]).to_pandas()
    name = out / "preview" / f"{first['video_id']}{suffix}"
    shown = [write_preview_video(first["url"], clip, name.with_suffix(".mp4"))] if video else []
    shown.append(write_contact_sheet(first["url"], clip, name.with_suffix(".png")))
    print(f"preview: {' and '.join(map(str, shown))}")


def pseudo_label_step(out: Path, manifest: Path, truth: Path, group: str, args) -> int:
    """The first video of `group` without prompts: discovered, tracked in segments on the actors, stitched."""
    first = {k: v for k, v in _first(manifest, group).items() if k != "prompts"}
    unprompted = out / "corpus" / "pseudo-label.jsonl"
    unprompted.write_text(json.dumps(first) + "\n")
    labels = out / "pseudo_labels"
    print(f"\npseudo-labels of {first['video_id']} (no prompts; segments of {args.segment_frames} frames):")
    job = ["--manifest", str(unprompted), "--out", str(labels), "--preset", args.preset, "--actors",
           str(args.actors), "--segment-frames", str(args.segment_frames),
           "--overlap", str(min(32, args.segment_frames // 4))]  # short demo segments: a shorter overlap
    code = pseudo_label.main(job + (["--checkpoint", args.checkpoint] if args.checkpoint else []))
    if code not in (0, 2):
        return code
    # The truth of that one video (the group's truth holds all of the group's videos).
    escaped = f"video_id={escape_video_id(first['video_id'])}"
    one = out / "corpus" / "pseudo-label-truth" / "masklets" / escaped
    shutil.rmtree(one, ignore_errors=True)
    shutil.copytree(truth / "masklets" / escaped, one)
    evaluate_job.main(["--unsupervised", "--pred", str(labels), "--gt", str(one.parent.parent), "--no-progress",
                       "--out", str(labels / "metrics_unsupervised.parquet")])
    preview(out, unprompted, labels, group, "-pseudo", video=False)
    return code


if __name__ == "__main__":
    sys.exit(main())
