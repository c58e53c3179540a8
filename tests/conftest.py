"""Shared fixtures: hand-made MIDI files, the real corpora, tiny models."""

from __future__ import annotations

import os
from pathlib import Path

import pretty_midi
import pytest
import torch

from composer.config import PROJECT_ROOT
from composer.nn.model import ModelConfig, PerformanceRNN, save_model

DATA_ROOT = Path(os.environ.get("COMPOSER_DATA_ROOT", PROJECT_ROOT.parent / "shared" / "data"))
CORPORA = {"classical": "asap", "pop": "pop909", "folk": "nottingham"}

needs_corpora = pytest.mark.skipif(not DATA_ROOT.is_dir(), reason=f"corpora not found at {DATA_ROOT}")


def make_midi(path: Path, tracks: list[dict], tempo: float = 120.0) -> Path:
    """Write a MIDI file; each track is {"notes": [(pitch, vel, start, end)], "pedal": [(t, value)], "drum": bool}."""
    pm = pretty_midi.PrettyMIDI(initial_tempo=tempo)
    for spec in tracks:
        inst = pretty_midi.Instrument(program=spec.get("program", 0), is_drum=spec.get("drum", False))
        inst.notes = [pretty_midi.Note(velocity=v, pitch=p, start=s, end=e) for p, v, s, e in spec.get("notes", [])]
        inst.control_changes = [pretty_midi.ControlChange(64, value, t) for t, value in spec.get("pedal", [])]
        pm.instruments.append(inst)
    pm.write(str(path))
    return path


def write_manifest(genres: Path, name: str, settings: str = "") -> Path:
    """A genre manifest with the required fields (its corpus need not exist) and ``settings``,
    TOML lines such as 'form = "AABB"\n', in the folder ``genres`` (made if missing)."""
    genres.mkdir(parents=True, exist_ok=True)
    path = genres / f"{name}.toml"
    path.write_text(f'name = "{name}"\nsources = ["x"]\nlicense = "MIT"\n{settings}')
    return path


def tiny_model(directory: Path, genre: str = "folk", hidden: int = 32, layers: int = 2, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = PerformanceRNN(ModelConfig(embed_dim=16, hidden_size=hidden, num_layers=layers))
    save_model(model, directory, {"genre": genre, "validation_nll": 9.9, "version": directory.name}, half=False)
    return directory


@pytest.fixture
def tiny_model_dir(tmp_path: Path) -> Path:
    return tiny_model(tmp_path / "models" / "folk" / "v1")


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path: Path):
    """An empty archive database, once as a SQLite file and once as a fresh PostgreSQL schema
    (dropped afterwards; the PostgreSQL run is skipped when the server is unreachable)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'bot.sqlite3'}"
    else:
        from tests.bot_helpers import postgres_schema  # imported here: tests.bot_helpers imports this module

        with postgres_schema() as url:
            yield url
