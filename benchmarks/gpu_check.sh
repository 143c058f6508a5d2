#!/usr/bin/env bash
# The one script to run when a GPU machine is lent (an H200, no network; see README "GPU check").
#
#   bash benchmarks/gpu_check.sh             on the GPU machine, <= 10 minutes (TOTAL_S)
#   bash benchmarks/gpu_check.sh --dry-run   the same steps on this CPU at tiny sizes (tests/test_gpu_check.py)
#
# Steps, each under its own `timeout`; a failed step does not stop the next ones; exit 1 if any failed:
#   a. env    install the carried wheels (.whl/, from benchmarks/gpu_wheels.sh) into /tmp/site; nvidia-smi,
#             torch version, CUDA, which optional packages import
#   b. tests  pytest -m cuda tests/test_cuda.py (and tests/test_fake_cuda.py when it exists, not on the dry run)
#   c. bench  python -m jobs.benchmark, ref,ours,batched (no Ray), per preset: ours bf16 compiled at B 1,4,16
#             against the reference in its fastest mode (vos_optimized, compiled), 1024 px
#   d. train  a short python -m jobs.train on the device
#   e.        summary.md (each step's status and seconds) beside the logs, in $OUT (default ./out/gpu_check)
# $OUT ends up holding 8 files (what the device tool brings back): summary.md, env.log, tests.log, bench.log,
# bench.md, bench.parquet, train.log, train.jsonl. Work files go to a temp dir outside $OUT.
# Settings (environment): PYTHON (default .venv/bin/python if present, else python3), OUT, TOTAL_S, PRESETS,
# BENCH_FRAMES, BENCH_BATCHES, TRAIN_STEPS, and each step's limit T_ENV, T_TESTS, T_BENCH (per preset), T_TRAIN.
set -u

DRY=0
case "${1:-}" in
  --dry-run) DRY=1 ;;
  "") ;;
  *) echo "usage: bash benchmarks/gpu_check.sh [--dry-run]" >&2; exit 2 ;;
esac

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO" || exit 2
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=$REPO/.venv/bin/python; else PYTHON=python3; fi
fi
OUT=${OUT:-$REPO/out/gpu_check}
mkdir -p "$OUT" || exit 2
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX") || exit 2
SITE=/tmp/site
STEPS=$WORK/steps.tsv
FILES=(summary.md env.log tests.log bench.log bench.md bench.parquet train.log train.jsonl)
for f in "${FILES[@]}"; do rm -f "$OUT/$f"; done  # this run's files only, never a stale one from before

if (( DRY )); then
  TOTAL_S=${TOTAL_S:-600}
  PRESETS=${PRESETS:-sam2.1-tiny sam2.1-base-plus}
  export SAMSTREAM_TEST_DEVICE=cpu  # tests/test_cuda.py runs on the CPU at tiny sizes
  BENCH_ARGS="--image-size 128 --frames ${BENCH_FRAMES:-3} --batch-sizes ${BENCH_BATCHES:-1,2} --device cpu \
    --dtype fp32 --repeats 1 --profile-frames 1 --threads 1"
  TRAIN_ARGS="--steps ${TRAIN_STEPS:-2} --batch 2 --device cpu --image-size 64 --warmup 1 --log-every 1 \
    --eval-every 1000 --save-every 1000 --val-videos 1 --val-frames 4"
  T_ENV=${T_ENV:-60} T_TESTS=${T_TESTS:-240} T_BENCH=${T_BENCH:-240} T_TRAIN=${T_TRAIN:-120}
else
  TOTAL_S=${TOTAL_S:-600}
  PRESETS=${PRESETS:-sam2.1-tiny sam2.1-base-plus}
  # Compiled both sides: the warm-up (8 frames) takes the compile time out of frames/s; 2 repeats (median).
  BENCH_ARGS="--image-size 1024 --frames ${BENCH_FRAMES:-32} --batch-sizes ${BENCH_BATCHES:-1,4,16} --device cuda \
    --dtype bf16 --compile --reference-compile --repeats 2 --profile-frames 8 --threads 8"
  TRAIN_ARGS="--steps ${TRAIN_STEPS:-40} --batch 8 --device cuda --warmup 5 --log-every 5 --eval-every 1000 \
    --save-every 1000 --val-videos 1 --val-frames 8"
  T_ENV=${T_ENV:-45} T_TESTS=${T_TESTS:-150} T_BENCH=${T_BENCH:-170} T_TRAIN=${T_TRAIN:-60}
  if compgen -G ".whl/*.whl" >/dev/null; then export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}; fi
fi
export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}  # the checkout is not pip-installed on a lent machine
export PYTHONUNBUFFERED=1 PYTHON OUT WORK SITE DRY BENCH_ARGS TRAIN_ARGS
DEADLINE=$(( SECONDS + TOTAL_S ))
FAILED=0

# ---------------------------------------------------------------------------------------------- steps

step_env() {
  if (( DRY )); then
    echo "dry run: carried wheels are not installed"
  elif compgen -G ".whl/*.whl" >/dev/null; then
    ls -l .whl
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
      .whl/*.whl || return 1
  else
    echo "no .whl/ here: the reference (sam2) and the worker tests need benchmarks/gpu_wheels.sh's wheels"
  fi
  nvidia-smi || (( DRY )) || return 1
  "$PYTHON" - <<'EOF'
import importlib, os, sys
import torch
print("python", sys.version.split()[0], sys.executable)
missing = []
for name in ("sam2", "hydra", "omegaconf", "iopath", "av", "pycocotools", "pyarrow", "ray", "s3fs"):
    try:
        m = importlib.import_module(name)
        print(f"  {name} {getattr(m, '__version__', '?')} ({os.path.dirname(m.__file__)})")
    except Exception as e:  # noqa: BLE001 - a report
        print(f"  {name} missing: {type(e).__name__}: {e}")
        missing.append(name)
device = "no CUDA device"
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    device = f"{p.name}, {p.total_memory / 2**30:.0f} GiB, sm_{p.major}{p.minor}, {p.multi_processor_count} SMs"
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), {device}; missing: {', '.join(missing) or 'none'}")
sys.exit(0 if torch.cuda.is_available() or os.environ["DRY"] == "1" else 1)
EOF
}

step_tests() {
  local rc=0 log=$WORK/test_cuda.log
  "$PYTHON" -m pytest -q -rs -p no:cacheprovider -m cuda tests/test_cuda.py 2>&1 | tee "$log"
  (( PIPESTATUS[0] == 0 )) || rc=1
  # On the GPU machine a skipped CUDA test is a gap in the check (no CUDA, or a wheel not carried): a failure.
  if (( ! DRY )) && grep -qE '[0-9]+ skipped' "$log"; then
    echo "tests/test_cuda.py: tests were skipped on the GPU machine (reasons above)"
    rc=1
  fi
  # The fake-CUDA tests run on any CPU (the ordinary suite has them): on the dry run they would only add minutes.
  if [[ -f tests/test_fake_cuda.py ]] && (( ! DRY )); then
    "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_fake_cuda.py || rc=1
  fi
  return $rc
}

step_bench() {  # step_bench PRESET
  local dir=$WORK/bench-$1
  # shellcheck disable=SC2086 # BENCH_ARGS is a list of flags
  "$PYTHON" -m jobs.benchmark --preset "$1" --which ref,ours,batched --out "$dir" $BENCH_ARGS || return 1
  "$PYTHON" -m benchmarks.gpu_check_report bench "$WORK/check-$1" "$dir"  # its ref, ours and batched rows
}

step_train() {
  # shellcheck disable=SC2086
  "$PYTHON" -m jobs.train --out "$WORK/train" $TRAIN_ARGS || return 1
  "$PYTHON" -m benchmarks.gpu_check_report train "$WORK/train/log.jsonl"
}
export -f step_env step_tests step_bench step_train

# run_step NAME LOG LIMIT_S COMMAND...: COMMAND under `timeout` (the whole process group), appended to $OUT/LOG;
# its status, seconds and a one-line detail go to $STEPS. Never more than what is left of TOTAL_S.
run_step() {
  local name=$1 log=$OUT/$2 limit=$3
  shift 3
  local left=$(( DEADLINE - SECONDS ))
  if (( left < 20 )); then
    printf '%s\tskipped\t0\tno time left of TOTAL_S=%s\n' "$name" "$TOTAL_S" >> "$STEPS"
    FAILED=1
    return
  fi
  (( limit > left )) && limit=$left
  echo "=== $name: $* (limit ${limit}s, $(date -u +%FT%TZ))" | tee -a "$log"
  local t0=$SECONDS
  timeout -k 10 "$limit" bash -c "$*" >> "$log" 2>&1
  local rc=$? secs=$(( SECONDS - t0 )) status=passed
  if (( rc == 124 || rc == 137 )); then status="timed out"; elif (( rc != 0 )); then status="failed (exit $rc)"; fi
  [[ $status == passed ]] || FAILED=1
  # Detail: pytest's summary line when there is one, else the log's last line.
  local detail
  detail=$(grep -E '[0-9]+ (passed|failed|skipped|error)' "$log" | tail -n 2 | tr '\n' ' ')
  [[ -n $detail ]] || detail=$(grep -v '^\s*$' "$log" | tail -n 1)
  printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$secs" "$(echo "$detail" | tr '\t' ' ' | cut -c1-200)" >> "$STEPS"
  echo "=== $name: $status in ${secs}s"
  tail -n 4 "$log"
}

run_step "a. env" env.log "$T_ENV" step_env
run_step "b. tests" tests.log "$T_TESTS" step_tests
for preset in $PRESETS; do
  run_step "c. bench $preset" bench.log "$T_BENCH" step_bench "$preset"
done
run_step "d. train" train.log "$T_TRAIN" step_train

# e. what comes back: the benchmark runs merged, the training log, the summary.
runs=()
for preset in $PRESETS; do [[ -d $WORK/bench-$preset ]] && runs+=("$WORK/bench-$preset"); done
if (( ${#runs[@]} )); then
  "$PYTHON" -m benchmarks.gpu_check_report bench "$OUT" "${runs[@]}" >> "$OUT/bench.log" 2>&1
fi
[[ -f $WORK/train/log.jsonl ]] && cp "$WORK/train/log.jsonl" "$OUT/train.jsonl"
"$PYTHON" -m benchmarks.gpu_check_report summary "$OUT" "$STEPS" || FAILED=1
rm -rf "$WORK"
exit $FAILED
