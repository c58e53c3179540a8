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

$composer train "${common[@]}" --run-name study-scratch-plain --lr 1e-3 --dropout 0 --transpose 0
$composer train "${common[@]}" --run-name study-scratch-transpose --lr 1e-3 --dropout 0 --transpose 3
$composer train "${common[@]}" --run-name study-scratch-transpose-dropout --lr 1e-3 --dropout 0.3 --transpose 3
$composer train "${common[@]}" --run-name study-pretrained-transpose --lr 5e-4 --dropout 0 --transpose 3 \
  --init-from "$pretrained"
$composer train "${common[@]}" --run-name study-pretrained-transpose-dropout --lr 5e-4 --dropout 0.3 --transpose 3 \
  --init-from "$pretrained"

$composer study --genre folk --name folk-small-corpus --runs study-scratch-plain,study-scratch-transpose,\
study-scratch-transpose-dropout,study-pretrained-transpose,study-pretrained-transpose-dropout
