#!/usr/bin/env bash
# The GPU run, as one command on a lent NVIDIA H100/H200 machine (see composer/training/gpu_run.py).
#
# Here, first:   .venv/bin/python -m composer.training.gpu_run pack        # -> gpu-carry/ (git-ignored)
# There:         bash scripts/gpu_run.sh [--conditioned] [run options]    # carry=["gpu-carry"], $OUT set
# Back here:     .venv/bin/python -m composer.training.gpu_run publish --from DIR --version V [--promote]
#
# It installs the carried wheels (what the training path imports and that machine lacks)
# into a private folder unless they import already, then trains, evaluates and measures within GPU_RUN_BUDGET seconds
# counted from this script's start (default 510: the command's limit is 600), writing
# every result to $OUT as soon as it exists. Extra arguments go to `gpu_run run`.
# Environment: OUT (required), PYTHON (python3), GPU_CARRY (gpu-carry), GPU_WORK (/tmp/gpu-run).
set -uo pipefail
started=$(date +%s.%N)
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to the folder whose files come back}"
python=${PYTHON:-python3}
carry=${GPU_CARRY:-gpu-carry}
work=${GPU_WORK:-/tmp/gpu-run}
budget=${GPU_RUN_BUDGET:-510}
mkdir -p "$OUT" "$work"
if [ ! -f "$carry/data.tar.xz" ]; then
  echo "no $carry/data.tar.xz: run '.venv/bin/python -m composer.training.gpu_run pack' here and carry $carry" >&2
  exit 2
fi
if compgen -G "$carry/wheels/*.whl" >/dev/null && ! "$python" -c "import pydantic_settings, array_api_compat" 2>/dev/null; then
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$work/site" "$carry"/wheels/*.whl || { echo "installing the carried wheels failed" >&2; exit 2; }
  export PYTHONPATH="$work/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
command -v nvidia-smi >/dev/null && nvidia-smi -L
"$python" -m composer.training.gpu_run run --carry "$carry" --work "$work" --out "$OUT" \
  --started "$started" --budget-s "$budget" "$@" 2>&1 | tee "$OUT/run.log"
