"""Training end to end on a tiny corpus: outputs, resuming after a kill, DDP on two CPU processes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from composer.nn.model import load_model
from composer.training.train import TrainConfig, lr_factor
from tests.conftest import DATA_ROOT, needs_corpora

pytestmark = needs_corpora

TINY = [
    "--hidden-size",
    "32",
    "--num-layers",
    "2",
    "--embed-dim",
    "16",
    "--batch-size",
    "4",
    "--seq-len",
    "64",
    "--warmup-steps",
    "2",
    "--val-max-sequences",
    "3",
    "--quiet",
]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> dict[str, str]:
    """Environment for a composer whose only genre is a handful of folk tunes, prepared."""
    root = tmp_path_factory.mktemp("project")
    tunes = root / "data" / "tunes"
    tunes.mkdir(parents=True)
    for path in sorted((DATA_ROOT / "nottingham").glob("*.mid"))[:12]:
        shutil.copy(path, tunes / path.name)
    genres = root / "genres"
    genres.mkdir()
    (genres / "tunes.toml").write_text(
        'name = "tunes"\ndescription = "test"\nsources = ["tunes"]\nlicense = "GPL-3.0"\nvalidation_fraction = 0.4\n'
    )
    env = {
        **os.environ,
        "COMPOSER_DATA_ROOT": str(root / "data"),
        "COMPOSER_GENRES_DIR": str(genres),
        "COMPOSER_CACHE_DIR": str(root / "cache"),
        "COMPOSER_RUNS_DIR": str(root / "runs"),
        "COMPOSER_MODELS_DIR": str(root / "models"),
        "OMP_NUM_THREADS": "1",
    }
    subprocess.run(
        [sys.executable, "-m", "composer.cli", "prepare", "--workers", "1"], env=env, check=True, capture_output=True
    )
    return env


def composer(env, *args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "composer.cli", *args], env=env, capture_output=True, text=True, **kw)


def metrics(env, run: str) -> list[dict]:
    path = Path(env["COMPOSER_RUNS_DIR"]) / "tunes" / run / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_lr_schedule_warms_up_then_decays():
    cfg = TrainConfig(steps=100, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_factor(0, cfg) == pytest.approx(0.1)
    assert lr_factor(9, cfg) == pytest.approx(1.0)
    assert lr_factor(55, cfg) == pytest.approx(0.55, abs=0.01)
    assert lr_factor(100, cfg) == pytest.approx(0.1)


def test_training_writes_model_card_curve_and_publishes(project):
    done = composer(
        project,
        "train",
        "--genre",
        "tunes",
        "--run-name",
        "r1",
        "--steps",
        "6",
        "--eval-every",
        "3",
        "--publish",
        "v1",
        *TINY,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.splitlines()[0])
    assert summary["finished"] and summary["step"] == 6
    run_dir = Path(project["COMPOSER_RUNS_DIR"]) / "tunes" / "r1"
    for name in ("checkpoint.pt", "metrics.jsonl", "curve.png", "best/model.safetensors", "best/card.json"):
        assert (run_dir / name).is_file(), name
    vals = [m["val_nll"] for m in metrics(project, "r1") if "val_nll" in m]
    assert len(vals) == 2 and all(0 < v < 7 for v in vals)

    published = Path(project["COMPOSER_MODELS_DIR"]) / "tunes"
    assert (published / "CURRENT").read_text().strip() == "v1"
    model, card = load_model(published / "v1")
    assert card["genre"] == "tunes" and card["version"] == "v1"
    assert card["training_validation_nll"] == pytest.approx(min(vals))
    assert card["validation"]["pieces"] >= 1 and card["validation"]["split"]
    assert card["training"]["data"][0]["license"] == "GPL-3.0"
    assert card["config"]["hidden_size"] == 32 and card["vocabulary"]["events"] == 388
    assert card["training"]["step"] == 6 and "date" in card
    assert model.config.num_layers == 2

    evaluated = composer(project, "eval", "--genre", "tunes", "--data", project["COMPOSER_DATA_ROOT"], "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    result = json.loads(evaluated.stdout.strip().splitlines()[-1])
    assert result["files"] == 12 and result["events"] > 1000 and 0 < result["nll_per_event"] < 7
    on_validation = composer(project, "eval", "--genre", "tunes", "--json")
    assert json.loads(on_validation.stdout.strip().splitlines()[-1])["nll_per_event"] == pytest.approx(
        card["validation_nll"], abs=2e-3
    )  # the card's figure, from fp16 weights


def test_promote_only_when_not_worse_and_rollback(project):
    # v-long trains longer than v-short from the same start: it should be better.
    for run, steps, version in (("short", "2", "v-short"), ("long", "12", "v-long")):
        done = composer(
            project,
            "train",
            "--genre",
            "tunes",
            "--run-name",
            run,
            "--steps",
            steps,
            "--eval-every",
            "100",
            "--lr",
            "3e-3",
            "--publish",
            version,
            *TINY,
        )
        assert done.returncode == 0, done.stderr
    models = Path(project["COMPOSER_MODELS_DIR"]) / "tunes"
    start = (models / "CURRENT").read_text().strip()
    assert composer(project, "promote", "--genre", "tunes", "--version", "v-long").returncode == 0
    assert (models / "CURRENT").read_text().strip() == "v-long"
    refused = composer(project, "promote", "--genre", "tunes", "--version", "v-short")
    assert refused.returncode == 1 and "worse" in refused.stderr
    assert (models / "CURRENT").read_text().strip() == "v-long"
    assert composer(project, "promote", "--genre", "tunes", "--version", "v-short", "--force").returncode == 0
    assert (models / "CURRENT").read_text().strip() == "v-short"
    listing = composer(project, "versions", "--genre", "tunes").stdout
    assert "* v-short" in listing and "v-long" in listing
    assert composer(project, "rollback", "--genre", "tunes").returncode == 0
    assert (models / "CURRENT").read_text().strip() == "v-long"
    assert composer(project, "rollback", "--genre", "tunes").returncode == 0
    assert (models / "CURRENT").read_text().strip() == start


def test_training_resumes_after_kill_9(project):
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "composer.cli",
            "train",
            "--genre",
            "tunes",
            "--run-name",
            "r2",
            "--steps",
            "100000",
            "--checkpoint-every",
            "5",
            "--eval-every",
            "1000",
            *TINY,
        ],
        env=project,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    checkpoint = Path(project["COMPOSER_RUNS_DIR"]) / "tunes" / "r2" / "checkpoint.pt"
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert checkpoint.exists()
    import torch

    saved_step = torch.load(checkpoint, weights_only=False)["state"]["step"]
    assert saved_step >= 5
    again = composer(
        project,
        "train",
        "--genre",
        "tunes",
        "--run-name",
        "r2",
        "--steps",
        str(saved_step + 3),
        "--eval-every",
        "1000",
        *TINY,
    )
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout.splitlines()[0])["step"] == saved_step + 3
    assert "resumed" in again.stderr


def test_data_parallel_ranks_stay_in_sync(project):
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "composer.cli",
            "train",
            "--genre",
            "tunes",
            "--run-name",
            "ddp",
            "--steps",
            "4",
            "--eval-every",
            "2",
            "--device",
            "cpu",
            *TINY,
        ],
        env=project,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    sync = [m for m in metrics(project, "ddp") if "ranks_in_sync" in m]
    assert sync == [{"step": 4, "ranks": 2, "ranks_in_sync": True, "time": sync[0]["time"]}]


def test_a_published_version_keeps_its_lineage_of_learning_curves(tmp_path):
    from composer.models.registry import record_training

    parent = tmp_path / "models" / "folk" / "v1"
    (parent / "training").mkdir(parents=True)
    (parent / "training" / "pretrain-metrics.jsonl").write_text('{"step": 1}\n')
    (parent / "training" / "finetune-metrics.jsonl").write_text('{"step": 2}\n')
    run = tmp_path / "runs" / "ft-v2"
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text('{"step": 3}\n')
    target = tmp_path / "models" / "folk" / "v2"
    record_training(target, run, str(parent))
    kept = {f.name: f.read_text() for f in (target / "training").iterdir()}
    assert kept == {
        "pretrain-metrics.jsonl": '{"step": 1}\n',
        "folk-v1-finetune-metrics.jsonl": '{"step": 2}\n',
        "finetune-metrics.jsonl": '{"step": 3}\n',
    }
    scratch = tmp_path / "models" / "folk" / "v0"
    record_training(scratch, run)
    assert [f.name for f in (scratch / "training").iterdir()] == ["pretrain-metrics.jsonl"]


def test_training_pieces_are_scored_beside_validation_and_a_study_keeps_the_runs(project, tmp_path):
    env = {**project, "COMPOSER_STUDIES_DIR": str(tmp_path / "studies")}
    for run, extra in (("plain", ["--transpose", "0"]), ("dropout", ["--dropout", "0.3"])):
        done = composer(
            env, "train", "--genre", "tunes", "--run-name", f"study-{run}", "--steps", "4", "--eval-every", "2",
            "--train-eval-pieces", "3", *extra, *TINY,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    evals = [m for m in metrics(env, "study-plain") if "val_nll" in m]
    assert [m["step"] for m in evals] == [2, 4]
    assert all(0 < m["train_nll"] < 7 and m["train_events"] > 0 for m in evals)

    done = composer(env, "study", "--genre", "tunes", "--name", "tiny-study", "--runs", "study-plain,study-dropout")
    assert done.returncode == 0, done.stderr
    study = json.loads((tmp_path / "studies" / "tiny-study" / "study.json").read_text())
    plain, dropout = study["runs"]
    assert plain["label"] == "from scratch, no transposition, no dropout"
    assert dropout["label"] == "from scratch, transpose ±3, dropout 0.3"
    assert plain["best_val"] == min(m["val_nll"] for m in evals)
    assert plain["final_gap"] == pytest.approx(evals[-1]["val_nll"] - evals[-1]["train_nll"])
    assert (tmp_path / "studies" / "tiny-study" / "study-dropout" / "metrics.jsonl").is_file()
    assert "study-plain" in done.stdout and "best" in done.stdout

    missing = composer(env, "study", "--genre", "tunes", "--name", "x", "--runs", "study-plain,nope")
    assert missing.returncode == 2 and "no such run" in missing.stderr
    bad_name = composer(env, "study", "--genre", "tunes", "--name", "Bad Name", "--runs", "study-plain")
    assert bad_name.returncode == 2 and "lower-case" in bad_name.stderr


def test_conditioned_training_scores_with_and_without_controls(project):
    done = composer(
        project, "train", "--genre", "tunes", "--run-name", "keys", "--steps", "4", "--eval-every", "2",
        "--controls", "--control-dropout", "0.5", *TINY,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    evals = [m for m in metrics(project, "keys") if "val_nll" in m]
    assert len(evals) == 2 and all(0 < m["val_nll_controlled"] < 7 and 0 < m["val_nll"] < 7 for m in evals)
    best = Path(project["COMPOSER_RUNS_DIR"]) / "tunes" / "keys" / "best"
    model, card = load_model(best)
    assert card["config"]["control_dim"] == 22 and model.config.control_dim == 22
    # a conditioned model fine-tunes as it is (no second warm start)
    again = composer(
        project, "train", "--genre", "tunes", "--run-name", "keys-ft", "--steps", "2", "--eval-every", "2",
        "--init-from", str(best), "--controls", *TINY,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert load_model(Path(project["COMPOSER_RUNS_DIR"]) / "tunes" / "keys-ft" / "best")[0].config.control_dim == 22

    measured = composer(
        project, "structure", "--genre", "tunes", "--model-dir", str(best), "--samples", "3", "--forms", "free,ABAB",
        "--caches", "0,0.5", "--echoes", "0,1",
    )  # fmt: skip
    assert measured.returncode == 0, measured.stderr
    result = json.loads(measured.stdout.strip().splitlines()[-1])
    plain = {"free", "ABAB", "free, cache 0.5", "ABAB, cache 0.5"}
    assert set(result["samples"]) == plain | {f"{name}, echo 1 s" for name in plain}
    assert result["real"]["windows"] >= 1
    assert 0 <= result["key_accuracy"] <= result["relative_key_accuracy"] <= 1
    assert [asked for asked, _ in result["density_asked_played"]] == [2.0, 5.0, 12.0]
    assert "key asked = key heard" in measured.stdout and "gap to real, ABAB" in measured.stdout
    refused = composer(project, "structure", "--genre", "tunes", "--model-dir", str(best), "--forms", "ABCD")
    assert refused.returncode == 2 and "not among free, ABAB" in refused.stderr
    refused = composer(project, "structure", "--genre", "tunes", "--model-dir", str(best), "--caches", "0,1")
    assert refused.returncode == 2 and "--caches" in refused.stderr
    refused = composer(project, "structure", "--genre", "tunes", "--model-dir", str(best), "--echoes", "0,11")
    assert refused.returncode == 2 and "--echoes" in refused.stderr

    cached = composer(project, "neural-cache", "--genre", "tunes", "--model-dir", str(best), "--weights", "0.2,0.5")
    assert cached.returncode == 0, cached.stderr
    nll = json.loads(cached.stdout.strip().splitlines()[-1])
    assert nll["events"] > 0 and 0 < nll["model_alone"] < 7 and set(nll["with_cache"]) == {"0.2", "0.5"}
    assert "cache weight 0.5" in cached.stdout
    refused = composer(project, "neural-cache", "--genre", "tunes", "--model-dir", str(best), "--weights", "1.5")
    assert refused.returncode == 2 and "--weights" in refused.stderr


def test_weight_average_is_validated_kept_and_resumed(project):
    import torch
    from safetensors.torch import load_file

    run = ("train", "--genre", "tunes", "--run-name", "ema", "--eval-every", "2", "--checkpoint-every", "2")
    run = (*run, "--ema", "0.5")
    first = composer(project, *run, "--steps", "2", *TINY)
    assert first.returncode == 0, first.stderr
    run_dir = Path(project["COMPOSER_RUNS_DIR"]) / "tunes" / "ema"
    saved = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    assert int(saved["average"]["n_averaged"]) == 2
    best = load_file(str(run_dir / "best" / "model.safetensors"))
    averaged = {k.removeprefix("module."): v for k, v in saved["average"].items() if k.startswith("module.")}
    assert best.keys() == saved["model"].keys() == averaged.keys()
    assert all(torch.equal(best[k].float(), averaged[k].float()) for k in best)  # the average is what is kept
    assert not all(torch.equal(best[k].float(), saved["model"][k].float()) for k in best)

    again = composer(project, *run, "--steps", "4", *TINY)  # resumes: the average goes on from the checkpoint's
    assert again.returncode == 0, again.stderr
    assert int(torch.load(run_dir / "checkpoint.pt", weights_only=False)["average"]["n_averaged"]) == 4
    evals = [m for m in metrics(project, "ema") if "val_nll" in m]
    assert [m["step"] for m in evals] == [2, 4]
    assert all(0 < m["val_nll_latest"] < 7 and m["val_nll_latest"] != m["val_nll"] for m in evals)
