"""composer.training.study's reading of run logs: resumed runs, diverged evaluations, labels."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from composer.training.study import collect_study, describe, evaluations, load_studies


def test_a_resumed_run_counts_each_step_once_and_a_diverged_evaluation_not_at_all():
    records = [
        {"step": 10, "val_nll": 3.0, "train_nll": 2.9},
        {"step": 20, "val_nll": 2.5, "train_nll": 2.3},
        {"step": 20, "train_loss": 2.4},
        {"step": 10, "val_nll": 2.8, "train_nll": 2.7},  # resumed from an earlier checkpoint
        {"step": 30, "val_nll": math.nan},
    ]
    assert [(r["step"], r["val_nll"]) for r in evaluations(records)] == [(10, 2.8), (20, 2.5)]


def test_labels_say_what_guards_a_run():
    assert describe({}) == "from scratch, transpose ±3, no dropout"  # TrainConfig's defaults
    config = {"init_from": "data/models/classical/v2", "transpose": 0, "model": {"dropout": 0.3}}
    assert describe(config) == "from classical/v2, no transposition, dropout 0.3"


def test_collected_study_reads_back_with_its_curves(tmp_path: Path):
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    lines = [{"step": s, "val_nll": 3 - s / 100, "train_nll": 2.9 - s / 50} for s in (10, 20, 30)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    study = collect_study([run], tmp_path / "studies" / "one-run", "folk")
    assert study["runs"][0]["best_step"] == 30 and study["runs"][0]["final_gap"] == pytest.approx(0.4)
    (loaded,) = load_studies(tmp_path / "studies")
    assert loaded["runs"][0]["val"] == [[10, 2.9], [20, 2.8], [30, 2.7]]
    assert len(loaded["runs"][0]["train"]) == 3
    with pytest.raises(ValueError, match="at least one run"):
        collect_study([], tmp_path / "studies" / "empty", "folk")
