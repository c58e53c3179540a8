"""Versioned models on disk: ``<models_dir>/<genre>/<version>/`` plus a ``CURRENT`` file.

``CURRENT`` names the version that sampling uses; ``HISTORY`` keeps the versions that
were current before, newest last, so a promotion can be rolled back.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from composer.config import settings
from composer.model import CARD_FILE, WEIGHTS_FILE, load_model, read_card, save_model

CURRENT_FILE = "CURRENT"
HISTORY_FILE = "HISTORY"


class NoModelError(LookupError):
    pass


def genre_dir(genre: str, models_dir: Path | None = None) -> Path:
    return (models_dir or settings().models_dir) / genre


def list_versions(genre: str, models_dir: Path | None = None) -> list[str]:
    root = genre_dir(genre, models_dir)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / WEIGHTS_FILE).is_file() and (p / CARD_FILE).is_file())


def current_version(genre: str, models_dir: Path | None = None) -> str | None:
    pointer = genre_dir(genre, models_dir) / CURRENT_FILE
    if not pointer.is_file():
        return None
    return pointer.read_text().strip() or None


def model_dir(genre: str, version: str | None = None, models_dir: Path | None = None) -> Path:
    """The directory of a genre's model: the named version, or the current one."""
    version = version or current_version(genre, models_dir)
    if version is None:
        raise NoModelError(f"no trained model for genre {genre!r}: train one with `composer train --genre {genre}`")
    path = genre_dir(genre, models_dir) / version
    if not (path / WEIGHTS_FILE).is_file():
        raise NoModelError(
            f"genre {genre!r} has no model version {version!r} (have: {list_versions(genre, models_dir)})"
        )
    return path


def _write_current(root: Path, version: str) -> None:
    """Point CURRENT at ``version`` atomically: a reader sees the old or the new name, never half."""
    tmp = root / f".{CURRENT_FILE}.tmp"
    tmp.write_text(version + "\n")
    tmp.replace(root / CURRENT_FILE)


def set_current(genre: str, version: str, models_dir: Path | None = None) -> None:
    """Point CURRENT at ``version``, remembering the previous one for rollback."""
    root = genre_dir(genre, models_dir)
    previous = current_version(genre, models_dir)
    if previous and previous != version:
        with (root / HISTORY_FILE).open("a") as fh:
            fh.write(previous + "\n")
    _write_current(root, version)


def publish(
    source: Path, genre: str, version: str, models_dir: Path | None = None, card_updates: dict | None = None
) -> Path:
    """Add a trained model directory as a new version, weights in half precision."""
    target = genre_dir(genre, models_dir) / version
    if target.exists():
        raise FileExistsError(f"model version {genre}/{version} exists already")
    model, model_card = load_model(source)
    save_model(model, target, {**model_card, **(card_updates or {}), "genre": genre, "version": version}, half=True)
    return target


TRAINING_DIR = "training"


def record_training(target: Path, run_dir: Path, init_from: str = "") -> None:
    """Keep a version's learning curves beside it: its own run as ``finetune-*`` (``pretrain-*``
    when it started from scratch), after the curves of the model it was fine-tuned from, whose
    own fine-tune is renamed ``<genre>-<version>-finetune-*`` (earlier ancestors keep their
    names), so the whole lineage is there and reads in order."""
    out = target / TRAINING_DIR
    out.mkdir(parents=True, exist_ok=True)
    parent = Path(init_from) if init_from else None
    if parent is not None and (parent / TRAINING_DIR).is_dir():
        prefix = f"{parent.parent.name}-{parent.name}-"
        for f in sorted((parent / TRAINING_DIR).iterdir()):
            own = f.name.startswith(("finetune-", "training-", "metrics", "curve"))
            name = prefix + f.name if own else f.name
            if not (out / name).exists():
                shutil.copyfile(f, out / name)
    stage = "finetune" if init_from else "pretrain"
    for name, kept in (("metrics.jsonl", f"{stage}-metrics.jsonl"), ("curve.png", f"{stage}-curve.png")):
        if (run_dir / name).is_file():
            shutil.copyfile(run_dir / name, out / kept)


def rollback(genre: str, models_dir: Path | None = None) -> str:
    """Make the previously current version current again; returns it."""
    root = genre_dir(genre, models_dir)
    history_file = root / HISTORY_FILE
    history = history_file.read_text().split() if history_file.is_file() else []
    history = [v for v in history if v in list_versions(genre, models_dir)]
    if not history:
        raise NoModelError(f"genre {genre!r} has no earlier version to roll back to")
    previous = history.pop()
    _write_current(root, previous)
    history_file.write_text("".join(v + "\n" for v in history))
    return previous


def card(genre: str, version: str | None = None, models_dir: Path | None = None) -> dict:
    return read_card(model_dir(genre, version, models_dir))
