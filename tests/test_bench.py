"""composer bench: the figures the speed targets are stated in, from one run of one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from benchmarks.sampling import weight_bytes
from composer.nn.model import load_model
from composer.sampling.sample import Sampler
from tests.conftest import tiny_model


def test_bench_prints_the_target_figures_as_its_last_json_line(tmp_path: Path):
    model_dir = tiny_model(tmp_path / "folk" / "v1", hidden=64, layers=3)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = ["bench", "--model-dir", str(model_dir), "--steps", "30", "--threads", "1", "--json"]
    done = subprocess.run(
        [sys.executable, "-m", "composer.cli", *args], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    for key in ("single_events_per_s", "batch64_events_per_s", "naive_single_events_per_s", "piece30_s"):
        assert result[key] > 0, key
    assert result["device"] == "cpu" and result["threads"] == 1
    assert result["speedup_vs_naive"] == result["single_events_per_s"] / result["naive_single_events_per_s"]
    assert result["products_us_per_event"] > 0 and result["step_us_per_event"] > 0
    assert result["speedup_vs_naive_if_only_products"] == (
        1e6 / result["products_us_per_event"] / result["naive_single_events_per_s"]
    )


def test_weight_bytes_count_every_matrix_a_step_reads(tmp_path: Path):
    model, card = load_model(tiny_model(tmp_path / "m", hidden=64, layers=3))
    h, vocab = 64, model.head.out_features
    int8 = Sampler(model, card, engine="int8w")  # int8 weights, with or without fbgemm
    # layer 0: recurrent weights only (its input is a table row); deeper layers: [input, hidden]; the head
    assert weight_bytes(int8) == 4 * h * h + 2 * (4 * h * 2 * h) + vocab * h
    assert weight_bytes(Sampler(model, card, engine="fused")) == 4 * weight_bytes(int8)
    assert weight_bytes(Sampler(model, card, engine="naive")) is None
