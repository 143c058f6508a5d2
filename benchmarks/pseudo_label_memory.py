"""Memory bounded by construction: the pseudo-label actor's peak RSS on a long video against a short one.

Renders two synthetic videos of the same look (`--short` and `--long` frames), pseudo-labels each on one actor
(so the long one's segments run one after another in the same process), and compares the actors' peak
resident memory (`actor_peak_rss_mb` in _run.json: the largest ru_maxrss any chunk reported).

    python -m benchmarks.pseudo_label_memory [--short 300] [--long 3000] [--size 128] [--out out/pl_memory]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from jobs import pseudo_label
from model.synthetic import SyntheticConfig
from workers.synthetic_corpus import write_corpus


def peak_rss(out: Path, frames: int, size: int, start: int) -> dict:
    root = out / f"video-{frames}"
    if not (root / "manifest.jsonl").exists():
        write_corpus(root, "test", 1, SyntheticConfig(height=size, width=size, num_frames=frames), start=start)
    row = json.loads((root / "manifest.jsonl").read_text().splitlines()[0])
    row.pop("prompts")
    manifest = root / "unprompted.jsonl"
    manifest.write_text(json.dumps(row) + "\n")
    started = time.time()
    code = pseudo_label.main(["--manifest", str(manifest), "--out", str(root / "labels"), "--actors", "1",
                              "--no-progress"])
    assert code == 0, code
    record = json.loads((root / "labels" / "_run.json").read_text())
    return {"frames": frames, "peak_rss_mb": record["actor_peak_rss_mb"], "seconds": time.time() - started,
            "chunks": record["chunks_total"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.pseudo_label_memory", description=__doc__.split("\n")[0])
    ap.add_argument("--short", type=int, default=300)
    ap.add_argument("--long", type=int, default=3000)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--out", default="out/pl_memory")
    args = ap.parse_args(argv)
    out = Path(args.out)
    short, long = peak_rss(out, args.short, args.size, 300_000), peak_rss(out, args.long, args.size, 300_001)
    result = {"short": short, "long": long, "ratio": long["peak_rss_mb"] / short["peak_rss_mb"]}
    print(json.dumps(result, indent=1))
    (out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
