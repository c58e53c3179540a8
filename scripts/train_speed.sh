#!/usr/bin/env bash
# Training speed on this CPU: one process (one torch thread) against two under torchrun (gloo,
# one thread each), the same global batch (16 x 512 crops), 50 steps from the shipped folk model.
# Prints events/s of each, as `composer train` logs them at step 50. Needs folk prepared.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1
rm -rf runs/folk/speed-1p runs/folk/speed-2p
common=(--genre folk --init-from "data/models/folk/$(cat data/models/folk/CURRENT)" --controls --steps 50
  --eval-every 1000 --train-eval-pieces 0 --val-max-sequences 2 --warmup-steps 5 --lr 1e-4 --threads 1 --quiet)
.venv/bin/python -m composer.cli train "${common[@]}" --run-name speed-1p --batch-size 16 > /dev/null
.venv/bin/torchrun --standalone --nproc-per-node 2 -m composer.cli train "${common[@]}" --run-name speed-2p --batch-size 8 > /dev/null
for run in 1p 2p; do
  .venv/bin/python -c 'import json, sys; rows = [json.loads(l) for l in open(sys.argv[1]) if "events_per_s" in l]; print(sys.argv[2], round(rows[-1]["events_per_s"]), "events/s")' \
    "runs/folk/speed-$run/metrics.jsonl" "$run"
done
