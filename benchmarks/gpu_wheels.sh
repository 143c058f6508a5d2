#!/usr/bin/env bash
# Run HERE (where pip reaches PyPI), before a GPU check: fetches into .whl/ the wheels the GPU image lacks
# (cp312, manylinux x86_64; see the device README), which the `device` tool's `carry: [".whl"]` takes along and
# benchmarks/gpu_check.sh installs there with --no-index --no-deps --target /tmp/site.
#   the reference (ref mode, the parity test): sam2 1.1.0 (built here from its sdist without its CUDA
#     extension: pure Python), hydra-core, omegaconf, antlr4-python3-runtime 4.9.3, iopath (portalocker, tqdm,
#     pyyaml, packaging are in the image)
#   workers/ (the stream worker tests, jobs.train's clip renderer): av (PyAV), pycocotools
# Versions are the ones this repo's .venv runs. .whl/ is ignored (.gitignore and .git/info/exclude): never
# committed. About 37 MB, av most of it; the working tree plus what `carry` takes must stay under 64 MiB.
#   bash benchmarks/gpu_wheels.sh [--no-av]
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
PY=${PYTHON:-python3}
BUILD_PY=${BUILD_PYTHON:-$([[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python3)}  # has torch
DEST=.whl
BINARY=(hydra-core==1.3.8 omegaconf==2.3.1 pycocotools==2.0.11)
[[ "${1:-}" == "--no-av" ]] || BINARY+=(av==18.1.0)
SDIST_PURE=(antlr4-python3-runtime==4.9.3 iopath==0.1.10)  # published as sdists only: built here, pure Python

mkdir -p "$DEST" .git/info
grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
rm -f "$DEST"/*.whl  # one version of each: two stop the install there

PLATFORMS=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  PLATFORMS+=(--platform "$p")
done
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${PLATFORMS[@]}" \
  -d "$DEST" "${BINARY[@]}"
"$PY" -m pip wheel -q --no-deps -w "$DEST" "${SDIST_PURE[@]}"
# sam2's setup.py imports torch (for its extension); without SAM2_BUILD_CUDA it builds none: a py3-none-any wheel.
SAM2_BUILD_CUDA=0 "$BUILD_PY" -m pip wheel -q --no-deps --no-build-isolation -w "$DEST" sam2==1.1.0

# Installable on python 3.12 x86_64: pure Python, abi3 of 3.11 / 3.12, or cp312.
ok='-(py3-none-any|cp31[12]-abi3-.*manylinux.*x86_64|cp312-cp312-.*manylinux.*x86_64)\.whl$'
bad=$(ls "$DEST" | grep -vE -- "$ok" || true)
if [[ -n $bad ]]; then
  echo "gpu_wheels: not installable on the GPU image (python 3.12, x86_64): $bad" >&2
  exit 1
fi
ls -l "$DEST"
du -sh "$DEST"
