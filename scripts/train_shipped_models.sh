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

# v2 (session 2) continued each v1 with opening crops, one CPU thread each, e.g.:
#   composer train --genre classical --run-name cont-v2 --init-from data/models/classical/v1 --steps 2600 \
#     --batch-size 32 --seq-len 512 --lr 6e-4 --warmup-steps 50 --eval-every 200 --val-max-sequences 30 \
#     --threads 1 --start-fraction 0.1 --publish v2
#   composer train --genre folk --run-name ft-v2 --init-from data/models/folk/v1 --steps 500 --lr 3e-4 \
#     --warmup-steps 20 --eval-every 50 --patience 4 --threads 1 --start-fraction 0.1 --publish v2   # pop alike
#   composer promote --genre G --version v2
# chorale v1: --init-from data/models/classical/v1 --steps 900 --lr 5e-4 --dropout 0.2 --max-minutes 35 --publish v1
# chorale v2: --init-from data/models/chorale/v1 --steps 500 --lr 3e-4 --dropout 0.2 --start-fraction 0.1 --publish v2
# folk v3 (session 3): --init-from data/models/folk/v2 --steps 400 --lr 2e-4 --warmup-steps 20 --eval-every 50
#   --patience 4 --transpose 0 --start-fraction 0.1 --publish v3   (see data/studies/folk-small-corpus)
# classical v3 (session 3): --init-from data/models/classical/v2 --steps 3200 --lr 5e-4 --warmup-steps 50
#   --eval-every 200 --val-max-sequences 30 --start-fraction 0.1 --publish v3
