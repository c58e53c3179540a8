"""Versioned models on disk: ``<models_dir>/<genre>/<version>/`` plus a ``CURRENT`` file.

``CURRENT`` names the version that sampling uses; ``HISTORY`` keeps the versions that
were current before, newest last, so a promotion can be rolled back.

The rules about versions live here, not in the command line: publishing a trained run
(``publish_run``: scored on the genre's whole validation split, its learning curves kept,
current when the genre had none), promotion (``promote``: not when the candidate's
validation NLL is worse than the current version's, unless forced) and rollback. A refusal
raises a ``RegistryError`` whose message is one line for the user.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from composer.config import settings
from composer.models.readme import write_model_readme
from composer.nn.model import CARD_FILE, WEIGHTS_FILE, load_model, read_card, save_model

CURRENT_FILE = "CURRENT"
HISTORY_FILE = "HISTORY"


class RegistryError(Exception):
    """A request the registry refuses; the message is one line, fit for the user."""


class NoModelError(RegistryError, LookupError):
    """No such model: the genre has no current version, or not the named one."""


class VersionExistsError(RegistryError, FileExistsError):
    """A version is published once: its name is taken."""


class ComparisonUnavailableError(RegistryError):
    """A promotion cannot compare the two versions: the genre's validation split is not prepared here."""


class InvalidVersionError(RegistryError, ValueError):
    """A version is a name (``v3``, ``v2-long``), never a path."""


class ReadOnlyError(RegistryError, PermissionError):
    """The models folder cannot be written: checked before any work that would end in writing it."""


class NotBetterError(RegistryError):
    """The candidate's validation NLL is worse than the current version's; ``scores`` has both."""

    def __init__(self, message: str, scores: dict[str, float]):
        super().__init__(message)
        self.scores = scores


_VERSION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_GENRE_NAME = _VERSION_NAME


def check_version_name(version: str) -> str:
    """``version`` itself when it is a name a version may have: letters, digits, ``.``, ``_`` and
    ``-``, starting with a letter or digit, never ``CURRENT`` or ``HISTORY``. Anything else
    (``../folk/v3``, ``v1/x``, an empty name) is refused before it is evaluated or written."""
    if not _VERSION_NAME.fullmatch(version) or version in (CURRENT_FILE, HISTORY_FILE):
        shown = version.encode("unicode_escape").decode("ascii")
        raise InvalidVersionError(
            f"'{shown}' is not a version name: use letters, digits, '.', '_' and '-', "
            "starting with a letter or digit (like v3)"
        )
    return version


def genre_dir(genre: str, models_dir: Path | None = None) -> Path:
    if not _GENRE_NAME.fullmatch(genre):  # genres are manifest names; a path would leave the models folder
        shown = genre.encode("unicode_escape").decode("ascii")
        raise NoModelError(f"'{shown}' is not a genre name")
    return (models_dir or settings().models_dir) / genre


def check_writable(genre: str, models_dir: Path | None = None) -> None:
    """Raise ReadOnlyError unless the genre's models folder (or the nearest folder that exists
    above it, where it will be made) can be written, with its HISTORY file: checked before
    evaluating, training or publishing, so the work is not lost to a refusal at the end."""
    root = genre_dir(genre, models_dir)
    folder = root
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    history = root / HISTORY_FILE
    blocked = folder if not os.access(folder, os.W_OK | os.X_OK) else None
    if blocked is None and history.exists() and not os.access(history, os.W_OK):
        blocked = history
    if blocked is not None:
        raise ReadOnlyError(f"{blocked} is not writable: nothing was changed (check its owner and permissions)")


def list_versions(genre: str, models_dir: Path | None = None) -> list[str]:
    root = genre_dir(genre, models_dir)
    if not root.is_dir():
        return []
    return sorted(
        p.name
        for p in root.iterdir()
        if _VERSION_NAME.fullmatch(p.name) and (p / WEIGHTS_FILE).is_file() and (p / CARD_FILE).is_file()
    )


def current_version(genre: str, models_dir: Path | None = None) -> str | None:
    pointer = genre_dir(genre, models_dir) / CURRENT_FILE
    if not pointer.is_file():
        return None
    return pointer.read_text().strip() or None


def model_dir(genre: str, version: str | None = None, models_dir: Path | None = None) -> Path:
    """The directory of a genre's model: the named version, or the current one."""
    version = version or current_version(genre, models_dir)
    if version is None:
        raise NoModelError(f"no trained model for genre '{genre}': train one with `composer train --genre {genre}`")
    path = genre_dir(genre, models_dir) / check_version_name(version)
    if not (path / WEIGHTS_FILE).is_file():
        have = ", ".join(list_versions(genre, models_dir)) or "none"
        raise NoModelError(f"genre '{genre}' has no model version '{version}' (have: {have})")
    return path


def genres_with_models(models_dir: Path | None = None, loadable: bool = False) -> list[str]:
    """The genres whose ``CURRENT`` names a version: the ones to serve (a version that turns out
    missing is reported when loading fails). ``loadable``: only those whose current version has
    its weights, the ones a report can load."""
    root = models_dir or settings().models_dir
    if not root.is_dir():
        return []
    found = []
    for path in sorted(p for p in root.iterdir() if p.is_dir() and _GENRE_NAME.fullmatch(p.name)):
        if current_version(path.name, root) is None:
            continue
        if loadable and not (path / current_version(path.name, root) / WEIGHTS_FILE).is_file():
            continue
        found.append(path.name)
    return found


def _write_current(root: Path, version: str) -> None:
    """Point CURRENT at ``version`` atomically: a reader sees the old or the new name, never half."""
    tmp = root / f".{CURRENT_FILE}.tmp"
    tmp.write_text(version + "\n")
    tmp.replace(root / CURRENT_FILE)


def set_current(genre: str, version: str, models_dir: Path | None = None) -> None:
    """Point CURRENT at ``version``, remembering the previous one for rollback."""
    root = genre_dir(genre, models_dir)
    check_version_name(version)
    previous = current_version(genre, models_dir)
    if previous and previous != version:
        with (root / HISTORY_FILE).open("a") as fh:
            fh.write(previous + "\n")
    _write_current(root, version)


def check_new_version(genre: str, version: str, models_dir: Path | None = None) -> Path:
    """Where ``version`` would be published; raises InvalidVersionError for a name that is not one,
    VersionExistsError when it is taken and ReadOnlyError when the folder cannot be written
    (checked before training, so hours of training do not end in a refusal)."""
    target = genre_dir(genre, models_dir) / check_version_name(version)
    if target.exists():
        raise VersionExistsError(f"model version {genre}/{version} exists already")
    check_writable(genre, models_dir)
    return target


def publish(
    source: Path, genre: str, version: str, models_dir: Path | None = None, card_updates: dict | None = None
) -> Path:
    """Add a trained model directory as a new version, weights in half precision, with its model
    card twice: ``card.json`` and a Hugging Face style ``README.md``."""
    target = check_new_version(genre, version, models_dir)
    model, model_card = load_model(source)
    save_model(model, target, {**model_card, **(card_updates or {}), "genre": genre, "version": version}, half=True)
    write_model_readme(target)  # the card for people, beside card.json
    return target


def publish_run(
    source: Path, genre: str, version: str, cache_dir: Path | None = None, models_dir: Path | None = None
) -> Path:
    """Publish a training run's best model (``source``, inside its run directory) as ``version``.

    Its card carries the NLL on the genre's whole validation split (training may have scored a
    subset, or other genres' pieces too) with the split's fingerprint, so a later promotion can
    trust the figure; the run's learning curves are kept beside it with those of the model it
    was fine-tuned from. The first version of a genre becomes current."""
    from composer.training.evaluate import validation_nll

    check_new_version(genre, version, models_dir)
    model, run_card = load_model(source)
    result = validation_nll(
        model, cache_dir or settings().cache_dir, genre, progress=f"publish {genre}/{version}: validation NLL"
    )
    updates = {
        "validation_nll": result.nll_per_event,
        "validation": {
            "genre": genre,
            "pieces": result.files,
            "events": result.events,
            "split": prepared_split(genre, cache_dir),
        },
        "training_validation_nll": run_card.get("validation_nll"),
    }
    target = publish(source, genre, version, models_dir, card_updates=updates)
    record_training(target, source.parent, run_card.get("training", {}).get("init_from", ""))
    if current_version(genre, models_dir) is None:
        set_current(genre, version, models_dir)
    return target


def prepared_split(genre: str, cache_dir: Path | None = None) -> str:
    """The fingerprint of the genre's validation split as prepared here, or "" when it is not."""
    from composer.corpus.data import split_fingerprint

    try:
        return split_fingerprint(cache_dir or settings().cache_dir, genre)
    except FileNotFoundError:
        return ""


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


@dataclass
class Promotion:
    """What ``promote`` did: ``previous`` was current before; ``scores`` holds both versions'
    validation NLL when they were compared (not when forced, or when the genre had no current
    version); ``changed`` is False when the version was current already."""

    genre: str
    version: str
    directory: Path
    previous: str | None
    changed: bool = True
    scores: dict[str, float] = field(default_factory=dict)


def validation_scores(
    genre: str, versions: tuple[str, ...], cache_dir: Path | None = None, models_dir: Path | None = None
) -> dict[str, float]:
    """Each version's NLL on the genre's validation split as prepared here: the card's figure
    when it was measured on this very split at publication, else measured now.

    Raises ComparisonUnavailableError when the split is needed and not prepared."""
    from composer.training.evaluate import validation_nll

    cache_dir = cache_dir or settings().cache_dir
    split = prepared_split(genre, cache_dir)
    scores = {}
    for version in versions:
        directory = model_dir(genre, version, models_dir)
        version_card = read_card(directory)
        if split and version_card.get("validation", {}).get("split") == split and "validation_nll" in version_card:
            scores[version] = version_card["validation_nll"]
            continue
        try:
            model = load_model(directory)[0]
            measured = validation_nll(model, cache_dir, genre, progress=f"{genre}/{version}: validation NLL")
            scores[version] = measured.nll_per_event
        except FileNotFoundError as exc:
            raise ComparisonUnavailableError(
                f"{exc} (needed to compare the two versions on the same validation data; or use --force)"
            ) from exc
    return scores


def promote(
    genre: str,
    version: str,
    force: bool = False,
    cache_dir: Path | None = None,
    models_dir: Path | None = None,
) -> Promotion:
    """Make ``version`` current, unless its validation NLL is worse than the current version's
    (both on the split prepared here; ``force`` skips the comparison). Raises NoModelError for
    a missing version, NotBetterError (with the scores) when refused, ComparisonUnavailableError
    when the split to compare on is not prepared."""
    directory = model_dir(genre, check_version_name(version), models_dir)
    current = current_version(genre, models_dir)
    if current == version:
        return Promotion(genre, version, directory, current, changed=False)
    check_writable(genre, models_dir)  # before the comparison, which may take minutes
    scores: dict[str, float] = {}
    if current and not force:
        scores = validation_scores(genre, (current, version), cache_dir, models_dir)
        if scores[version] > scores[current]:
            raise NotBetterError(
                f"{version} is worse than the current {current}; not promoted (use --force to override)", scores
            )
    set_current(genre, version, models_dir)
    return Promotion(genre, version, directory, current, scores=scores)


def rollback(genre: str, models_dir: Path | None = None) -> str:
    """Make the previously current version current again; returns it."""
    root = genre_dir(genre, models_dir)
    history_file = root / HISTORY_FILE
    history = history_file.read_text().split() if history_file.is_file() else []
    history = [v for v in history if v in list_versions(genre, models_dir)]
    if not history:
        raise NoModelError(f"genre '{genre}' has no earlier version to roll back to")
    check_writable(genre, models_dir)
    previous = history.pop()
    _write_current(root, previous)
    history_file.write_text("".join(v + "\n" for v in history))
    return previous


def card(genre: str, version: str | None = None, models_dir: Path | None = None) -> dict:
    return read_card(model_dir(genre, version, models_dir))


def version_cards(genre: str, models_dir: Path | None = None) -> dict[str, dict]:
    """Every version of the genre with its model card, oldest name first; NoModelError when there is none."""
    found = list_versions(genre, models_dir)
    if not found:
        raise NoModelError(f"genre '{genre}' has no model versions")
    return {version: read_card(genre_dir(genre, models_dir) / version) for version in found}
