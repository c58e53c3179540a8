"""The model registry's rules: publishing, the promotion gate, rollback (the CLI only reports them)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from composer.models import registry
from composer.models.registry import (
    ComparisonUnavailableError,
    NoModelError,
    NotBetterError,
    RegistryError,
    VersionExistsError,
)
from composer.nn.model import CARD_FILE
from tests.conftest import tiny_model

SPLIT = "abc123"


def version(models: Path, name: str, nll: float | None = None, split: str = SPLIT) -> Path:
    """A tiny folk model version whose card says it scored ``nll`` on the validation split ``split``."""
    directory = tiny_model(models / "folk" / name)
    card = json.loads((directory / CARD_FILE).read_text())
    card.pop("validation_nll")
    if nll is not None:
        card.update(validation_nll=nll, validation={"genre": "folk", "split": split})
    (directory / CARD_FILE).write_text(json.dumps(card))
    return directory


@pytest.fixture
def store(tmp_path: Path) -> dict[str, Path]:
    """v1 current (NLL 2.0), v2 worse (3.0), v3 better (1.5), all measured on the split prepared here."""
    models, cache = tmp_path / "models", tmp_path / "cache"
    for name, nll in (("v1", 2.0), ("v2", 3.0), ("v3", 1.5)):
        version(models, name, nll)
    registry.set_current("folk", "v1", models)
    index = cache / "genres" / "folk" / "index.json"
    index.parent.mkdir(parents=True)
    index.write_text(json.dumps({"fingerprint": SPLIT}))
    return {"models_dir": models, "cache_dir": cache}


def current(store) -> str | None:
    return registry.current_version("folk", store["models_dir"])


def test_a_worse_version_is_refused_with_both_scores_unless_forced(store):
    with pytest.raises(NotBetterError, match="v2 is worse than the current v1") as refused:
        registry.promote("folk", "v2", **store)
    assert list(refused.value.scores.items()) == [("v1", 2.0), ("v2", 3.0)]  # the current one first
    assert current(store) == "v1"

    forced = registry.promote("folk", "v2", force=True, **store)
    assert forced.changed and forced.previous == "v1" and forced.scores == {}
    assert current(store) == "v2"


def test_a_better_version_is_promoted_and_rolled_back(store):
    done = registry.promote("folk", "v3", **store)
    assert done.changed and done.scores == {"v1": 2.0, "v3": 1.5}
    assert done.directory == store["models_dir"] / "folk" / "v3"
    again = registry.promote("folk", "v3", **store)
    assert not again.changed and current(store) == "v3"
    assert registry.rollback("folk", store["models_dir"]) == "v1"
    with pytest.raises(NoModelError, match="no earlier version"):
        registry.rollback("folk", store["models_dir"])


def test_the_first_version_needs_no_comparison(tmp_path: Path):
    models = tmp_path / "models"
    version(models, "v1")  # no NLL on its card, no split prepared: nothing to compare with
    done = registry.promote("folk", "v1", models_dir=models, cache_dir=tmp_path / "cache")
    assert done.changed and done.previous is None and done.scores == {}


def test_cards_from_another_split_need_the_split_here(store):
    version(store["models_dir"], "v4", 1.0, split="an-older-split")
    (store["cache_dir"] / "genres" / "folk" / "index.json").unlink()
    with pytest.raises(ComparisonUnavailableError, match="or use --force"):
        registry.promote("folk", "v4", **store)
    assert current(store) == "v1"


def test_missing_versions_and_taken_names_are_registry_errors(store):
    with pytest.raises(NoModelError):
        registry.promote("folk", "v9", **store)
    with pytest.raises(VersionExistsError, match="folk/v1 exists already") as taken:
        registry.check_new_version("folk", "v1", store["models_dir"])
    assert isinstance(taken.value, FileExistsError) and isinstance(taken.value, RegistryError)
    assert registry.check_new_version("folk", "v9", store["models_dir"]) == store["models_dir"] / "folk" / "v9"
    assert list(registry.version_cards("folk", store["models_dir"])) == ["v1", "v2", "v3"]
    with pytest.raises(NoModelError, match="has no model versions"):
        registry.version_cards("pop", store["models_dir"])


def composer(store, *args) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "COMPOSER_MODELS_DIR": str(store["models_dir"]),
        "COMPOSER_CACHE_DIR": str(store["cache_dir"]),
        "COMPOSER_RUNS_DIR": str(store["models_dir"].parent / "runs"),
        "OMP_NUM_THREADS": "1",
    }
    return subprocess.run([sys.executable, "-m", "composer.cli", *args], env=env, capture_output=True, text=True)


def test_publishing_to_a_taken_version_is_refused_before_training(store):
    done = composer(store, "train", "--genre", "folk", "--run-name", "r", "--steps", "1", "--publish", "v2")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["error: model version folk/v2 exists already"]
    assert not (store["models_dir"].parent / "runs").exists()  # nothing trained, not even a run folder


def test_the_promote_command_prints_the_scores_and_exits_1_when_refused(store):
    refused = composer(store, "promote", "--genre", "folk", "--version", "v2")
    assert refused.returncode == 1
    assert refused.stdout == "folk: validation NLL v1 2.0000, v2 3.0000\n"
    assert refused.stderr.strip() == "error: v2 is worse than the current v1; not promoted (use --force to override)"
    promoted = composer(store, "promote", "--genre", "folk", "--version", "v3")
    assert promoted.returncode == 0
    assert promoted.stdout.splitlines() == [
        "folk: validation NLL v1 2.0000, v3 1.5000",
        f"folk: v3 is now current ({store['models_dir'] / 'folk' / 'v3'})",
    ]
    missing = composer(store, "promote", "--genre", "folk", "--version", "v9")
    assert missing.returncode == 2 and missing.stderr.startswith("error: genre 'folk' has no model version 'v9'")


def test_a_published_version_has_a_hugging_face_style_readme_beside_its_card(tmp_path: Path):
    import yaml

    from composer.models.readme import README_FILE

    source = tiny_model(tmp_path / "run" / "best")
    card = json.loads((source / CARD_FILE).read_text())
    card.update(
        description="British and American folk tunes",
        training={"step": 450, "init_from": "data/models/folk/v3", "data": [
            {"genre": "folk", "sources": ["nottingham"], "license": "GPL-3.0", "attribution": "NMD"},
            {"genre": "classical", "sources": ["asap"], "license": "CC BY-NC-SA 4.0", "attribution": "ASAP"},
            {"genre": "chorale", "sources": ["music21:bach"], "license": "Public domain; music21 corpus terms"},
        ]},
        validation={"pieces": 88, "events": 78180},
    )  # fmt: skip
    (source / CARD_FILE).write_text(json.dumps(card))
    target = registry.publish(source, "folk", "v5", tmp_path / "models", card_updates={"validation_nll": 0.6996})
    text = (target / README_FILE).read_text()
    _, header, body = text.split("---\n", 2)
    meta = yaml.safe_load(header)
    assert meta["license"] == "CC-BY-NC-SA-4.0 AND GPL-3.0-only AND LicenseRef-chorale-corpus"
    assert meta["datasets"] == ["nottingham", "asap", "music21:bach"]  # the genre's own corpus first
    [result] = meta["model-index"][0]["results"]
    assert result["metrics"][0]["value"] == 0.6996 and result["dataset"]["type"] == "nottingham"
    for section in ("# folk v5", "## Intended use", "## Training data", "## Evaluation", "## Limitations"):
        assert section in body
    assert "Validation NLL 0.6996 nats per event" in body and "88 whole held-out pieces (78,180 events)" in body
    assert "non-commercial use only" in body and "other traditions" in body


@given(st.text(max_size=60), st.text(max_size=20))
def test_every_license_becomes_an_spdx_identifier(text, genre):
    from composer.models.readme import spdx_id

    assert re.fullmatch(r"(LicenseRef-)?[A-Za-z0-9.-]+", spdx_id(text, genre))
