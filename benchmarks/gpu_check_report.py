"""benchmarks/gpu_check.sh's checks of what its steps wrote, and its summary.md.

    python -m benchmarks.gpu_check_report bench OUT RUN_DIR...   merge runs into OUT/bench.{parquet,md}; exit 1
                                                                 unless each run has the ref, ours and batched rows
    python -m benchmarks.gpu_check_report train LOG              exit 1 unless LOG (log.jsonl) has finite losses
    python -m benchmarks.gpu_check_report summary OUT STEPS_TSV  write OUT/summary.md from the steps' records

Only pyarrow and the standard library: it runs before anything else is known to work on a lent machine.
"""

from __future__ import annotations

import json
import math
import platform
import sys
from pathlib import Path

# (system, mode) rows every benchmark run of the check must have: the reference, ours alone, ours batched.
REQUIRED_ROWS = (("reference", "single"), ("samstream", "single"), ("samstream", "batched"))


def check_bench(out: Path, runs: list[Path]) -> int:
    """Concatenate the runs' results into out/bench.parquet and out/bench.md; 1 when a run lacks a row."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out.mkdir(parents=True, exist_ok=True)
    tables, texts, problems = [], [], []
    for run in runs:
        path = run / "results.parquet"
        if not path.exists():
            problems.append(f"{run.name}: no results.parquet (the run did not finish)")
            continue
        table = pq.read_table(path)
        tables.append(table)
        texts.append((run / "results.md").read_text() if (run / "results.md").exists() else "")
        print(headline(table))
        have = set(zip(table.column("system").to_pylist(), table.column("mode").to_pylist()))
        missing = [f"{s}/{m}" for s, m in REQUIRED_ROWS if (s, m) not in have]
        if missing:
            problems.append(f"{run.name}: no {', '.join(missing)} rows (see its notes)")
    if tables:
        pq.write_table(pa.concat_tables(tables), out / "bench.parquet")
    (out / "bench.md").write_text("\n\n".join(texts) + ("\n## Problems\n\n" + "\n".join(f"- {p}" for p in problems)
                                                         if problems else ""))
    for p in problems:
        print(f"bench check: {p}", file=sys.stderr)
    return 1 if problems or not tables else 0


def headline(table) -> str:
    """One line of a run's frames/s: the reference, then ours per batch size with the speed-up against it."""
    rows = table.to_pylist()
    parts = []
    for r in rows:
        if r["frames_per_s"] is None:
            continue
        name = "reference" if r["system"] == "reference" else f"ours B={r['streams']}"
        ratio = f" ({r['speedup_vs_reference']:.2f}x)" if r["speedup_vs_reference"] else ""
        if r["mode"] != "single" or r["system"] == "reference":  # ours single is batched B=1 again
            parts.append(f"{name} {r['frames_per_s']:.1f}{ratio}")
    first = rows[0] if rows else {}
    return f"{first.get('preset')} {first.get('image_size')} px {first.get('dtype')}: frames/s " + ", ".join(parts)


def check_train(log: Path) -> int:
    """1 unless the training log has at least one step record whose loss is finite, and none that is not."""
    try:
        records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    except (OSError, ValueError) as e:
        print(f"train check: cannot read {log}: {e}", file=sys.stderr)
        return 1
    losses = [r["loss"] for r in records if "loss" in r]
    bad = [x for x in losses if not math.isfinite(x)]
    print(f"train check: {len(losses)} logged steps, last loss {losses[-1] if losses else None}")
    if not losses or bad:
        print(f"train check: {'no loss logged' if not losses else f'non-finite losses {bad}'}", file=sys.stderr)
        return 1
    return 0


def write_summary(out: Path, steps_tsv: Path) -> int:
    """summary.md: one row per step (name, status, seconds, detail), read from the tab-separated records."""
    rows = [line.split("\t") for line in steps_tsv.read_text().splitlines() if line.strip()]
    failed = [r[0] for r in rows if r[1] != "passed"]
    lines = ["# GPU check", "", f"machine: {platform.node()}, {platform.platform()}", "",
             f"result: {'all steps passed' if not failed else 'FAILED: ' + ', '.join(failed)}", "",
             "| step | status | seconds | detail |", "|---|---|---|---|"]
    lines += [f"| {r[0]} | {r[1]} | {r[2]} | {(r[3] if len(r) > 3 else '').replace('|', '/')} |" for r in rows]
    files = sorted(p.name for p in out.iterdir() if p.is_file() and p.name != "summary.md")
    lines += ["", f"files: {', '.join(files + ['summary.md'])}", ""]
    (out / "summary.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


def main(argv: list[str]) -> int:
    if len(argv) >= 3 and argv[0] == "bench":
        return check_bench(Path(argv[1]), [Path(a) for a in argv[2:]])
    if len(argv) == 2 and argv[0] == "train":
        return check_train(Path(argv[1]))
    if len(argv) == 3 and argv[0] == "summary":
        return write_summary(Path(argv[1]), Path(argv[2]))
    print(__doc__, file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
