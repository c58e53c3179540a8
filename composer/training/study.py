"""Training studies: several runs of one genre side by side, kept with the project.

A study answers one question with curves, such as "what keeps the small folk corpus from
overfitting?". ``collect_study`` copies the metrics of finished runs (``runs/<genre>/<run>``)
into ``data/studies/<name>/`` with a summary per run: the best validation NLL and its
step (where early stopping would stop), the validation NLL at the end, and the gap to the
NLL of the fixed training pieces the run also scored (``--train-eval-pieces``), which is
what overfitting looks like. The model report draws every stored study.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from composer.training.config import TrainConfig
from composer.training.train import METRICS_FILE, read_metrics

STUDY_FILE = "study.json"
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")


@dataclass(frozen=True)
class RunSummary:
    run: str
    label: str
    steps: int
    best_val: float
    best_step: int
    final_val: float
    final_train: float | None
    """NLL of the fixed training pieces at the last evaluation (None: the run did not score them)."""

    @property
    def final_gap(self) -> float | None:
        return None if self.final_train is None else self.final_val - self.final_train

    @property
    def rise_after_best(self) -> float:
        """How much worse validation ended than its best: what early stopping saves."""
        return self.final_val - self.best_val


def describe(config: dict) -> str:
    """A run's guards against overfitting, in words, from its ``config.json``."""
    init = config.get("init_from") or ""
    parts = [f"from {Path(init).parent.name}/{Path(init).name}" if init else "from scratch"]
    transpose = int(config.get("transpose", TrainConfig.transpose))
    parts.append(f"transpose ±{transpose}" if transpose else "no transposition")
    dropout = float(config.get("model", {}).get("dropout", 0.0))
    parts.append(f"dropout {dropout:g}" if dropout else "no dropout")
    return ", ".join(parts)


def evaluations(records: list[dict]) -> list[dict]:
    """The evaluation records in step order, one per step (a run resumed from an earlier
    checkpoint logs some steps again: the last word counts), without non-finite NLLs."""
    by_step = {r["step"]: r for r in records if "val_nll" in r and math.isfinite(r["val_nll"])}
    return [by_step[step] for step in sorted(by_step)]


def summarize(run_dir: Path) -> RunSummary:
    evals = evaluations(read_metrics(run_dir))
    if not evals:
        raise ValueError(f"{run_dir}: no validation NLL logged yet")
    config = json.loads((run_dir / "config.json").read_text()) if (run_dir / "config.json").is_file() else {}
    best = min(evals, key=lambda r: r["val_nll"])
    last = evals[-1]
    return RunSummary(
        run=run_dir.name,
        label=describe(config),
        steps=int(last["step"]),
        best_val=float(best["val_nll"]),
        best_step=int(best["step"]),
        final_val=float(last["val_nll"]),
        final_train=float(last["train_nll"]) if "train_nll" in last else None,
    )


def collect_study(run_dirs: list[Path], out_dir: Path, genre: str, question: str = "") -> dict:
    """Copy the runs' metrics and configs into ``out_dir`` and write its ``study.json``."""
    if not _NAME.match(out_dir.name):
        raise ValueError(f"study name {out_dir.name!r}: use lower-case letters, digits and dashes")
    if not run_dirs:
        raise ValueError("a study needs at least one run")
    summaries = [summarize(d) for d in run_dirs]  # every run is checked before anything is written
    out_dir.mkdir(parents=True, exist_ok=True)
    for run_dir in run_dirs:
        target = out_dir / run_dir.name
        target.mkdir(exist_ok=True)
        shutil.copyfile(run_dir / METRICS_FILE, target / METRICS_FILE)
        if (run_dir / "config.json").is_file():
            shutil.copyfile(run_dir / "config.json", target / "config.json")
    study = {
        "name": out_dir.name,
        "genre": genre,
        "question": question,
        "collected": datetime.now(UTC).isoformat(timespec="seconds"),
        "runs": [{**s.__dict__, "final_gap": s.final_gap, "rise_after_best": s.rise_after_best} for s in summaries],
    }
    (out_dir / STUDY_FILE).write_text(json.dumps(study, indent=2) + "\n")
    return study


def load_studies(studies_dir: Path) -> list[dict]:
    """Every stored study with its runs' curves: ``val`` and ``train`` as [step, nll] pairs."""
    studies = []
    for path in sorted(studies_dir.glob(f"*/{STUDY_FILE}")) if studies_dir.is_dir() else []:
        study = json.loads(path.read_text())
        for run in study["runs"]:
            evals = evaluations(read_metrics(path.parent / run["run"]))
            run["val"] = [[r["step"], r["val_nll"]] for r in evals]
            run["train"] = [[r["step"], r["train_nll"]] for r in evals if math.isfinite(r.get("train_nll", math.nan))]
        studies.append(study)
    return studies
