#!/usr/bin/env bash
# Before the GPU run (scripts/gpu_run.sh): what travels to the device is the whole working tree,
# 64 MiB in all, and every committed model version is 11.6 MiB. So this moves every model version
# but the current ones out of the tree, to .git/set-aside/ (only versions committed and clean:
# nothing uncommitted is touched), then packs the token arrays into what is left (gpu-carry/).
# Afterwards `scripts/gpu_prepare.sh --restore` puts them back. With `--genres a,b` (passed on to
# pack) the other genres' current versions are set aside too: they do not travel, and the room they
# leave carries more training files (session 10: chorale's model out, every training file in).
set -euo pipefail
cd "$(dirname "$0")/.."
aside=.git/set-aside
only=""
args=("$@")
for i in "${!args[@]}"; do
  case "${args[$i]}" in
    --genres) only=",${args[$((i + 1))]:-},";;
    --genres=*) only=",${args[$i]#--genres=},";;
  esac
done
if [ "${1:-}" = "--restore" ]; then
  [ -d "$aside" ] || { echo "nothing set aside"; exit 0; }
  for moved in "$aside"/*/*/; do
    genre=$(basename "$(dirname "$moved")")
    mv "$moved" "data/models/$genre/" && echo "restored data/models/$genre/$(basename "$moved")"
  done
  rm -rf "$aside"
  exit 0
fi
for genre in data/models/*/; do
  current=$(cat "${genre}CURRENT" 2>/dev/null || true)
  for version in "$genre"*/; do
    name=$(basename "$version")
    if [ "$name" = "$current" ] && { [ -z "$only" ] || [[ "$only" == *",$(basename "$genre"),"* ]]; }; then
      continue
    fi
    git ls-files --error-unmatch "$version" >/dev/null 2>&1 || continue
    [ -z "$(git status --porcelain --ignored -- "$version")" ] || continue
    mkdir -p "$aside/$(basename "$genre")"
    mv "$version" "$aside/$(basename "$genre")/"
    echo "set aside $version (scripts/gpu_prepare.sh --restore brings it back)"
  done
done
exec .venv/bin/python -m composer.training.gpu_run pack --stretches 1.0 "$@"
