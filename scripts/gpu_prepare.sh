#!/usr/bin/env bash
# Before the GPU run (scripts/gpu_run.sh): what travels to the device is the whole working tree,
# 64 MiB in all, and every committed model version is 11.6 MiB. So this sets aside every model
# version but the current ones (only versions committed and unchanged: `git checkout --
# data/models` brings them back), then packs the token arrays into what is left (gpu-carry/).
set -euo pipefail
cd "$(dirname "$0")/.."
for genre in data/models/*/; do
  current=$(cat "${genre}CURRENT" 2>/dev/null || true)
  for version in "$genre"*/; do
    name=$(basename "$version")
    [ "$name" = "$current" ] && continue
    if git ls-files --error-unmatch "$version" >/dev/null 2>&1 && git diff --quiet -- "$version"; then
      rm -rf "$version"
      echo "set aside $version (git checkout -- $version brings it back)"
    fi
  done
done
exec .venv/bin/python -m composer.training.gpu_run pack --stretches 1.0 "$@"
