#!/usr/bin/env bash
# How the shipped models are trained: one model pre-trained on all three corpora, then
# fine-tuned on each genre and published as a version. On a 2-core CPU with bf16 units
# (AMX) each stage runs at about 8,000 events/s per thread; on a GPU raise the batch size
# and steps. Every stage resumes if killed; re-run the script to continue.
set -euo pipefail
cd "$(dirname "$0")/.."
composer=.venv/bin/composer
version=${1:?usage: $0 VERSION [BASE_STEPS] [FINETUNE_MINUTES]}
base_steps=${2:-1800}
finetune_minutes=${3:-30}
export OMP_NUM_THREADS=1

$composer prepare
$composer train --genre classical --run-name "base-$version" --pretrain-on classical,pop,folk \
  --steps "$base_steps" --batch-size 32 --seq-len 512 --warmup-steps 100 \
  --eval-every 200 --val-max-sequences 30 --threads 1 --quiet

finetune() {
  local genre=$1 lr=$2
  $composer train --genre "$genre" --run-name "ft-$version" --init-from "runs/classical/base-$version/best" \
    --steps 550 --batch-size 32 --seq-len 512 --lr "$lr" --warmup-steps 20 \
    --eval-every 50 --val-max-sequences 30 --patience 6 --max-minutes "$finetune_minutes" \
    --threads 1 --quiet --publish "$version"
}
finetune classical 3e-4 &
finetune pop 3e-4 &
finetune folk 5e-4 &
wait
