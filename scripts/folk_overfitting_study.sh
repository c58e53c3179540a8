#!/usr/bin/env bash
# The small-corpus study behind data/studies/folk-small-corpus: five 400-step runs on the
# folk corpus (about 750k training events) that differ only in what guards against
# overfitting. Each logs validation NLL (all 88 held-out tunes) and the NLL of 16 fixed
# training tunes every 25 steps; the gap between the two is the overfitting. One CPU
# thread each, about 16 minutes a run here; every run resumes if killed.
set -euo pipefail
cd "$(dirname "$0")/.."
composer=.venv/bin/composer
export OMP_NUM_THREADS=1
common=(--genre folk --steps 400 --batch-size 32 --seq-len 512 --warmup-steps 30 --eval-every 25
  --train-eval-pieces 16 --threads 1 --quiet)
pretrained=data/models/classical/v2   # pre-trained on classical, pop and folk (folk's validation tunes kept out)

# A fresh model for the same 400 steps, to show what pre-training buys; then the pre-trained
# model fine-tuned with and without each guard.
$composer train "${common[@]}" --run-name study-scratch-plain --lr 1e-3 --dropout 0 --transpose 0
finetune() {
  local run=$1
  shift
  $composer train "${common[@]}" --run-name "$run" --lr 5e-4 --init-from "$pretrained" "$@"
}
finetune study-pretrained-plain --dropout 0 --transpose 0
finetune study-pretrained-transpose --dropout 0 --transpose 3
finetune study-pretrained-dropout --dropout 0.3 --transpose 0
finetune study-pretrained-transpose-dropout --dropout 0.3 --transpose 3

$composer study --genre folk --name folk-small-corpus --runs study-scratch-plain,study-pretrained-plain,\
study-pretrained-transpose,study-pretrained-dropout,study-pretrained-transpose-dropout
