"""Work an operator can watch (issue #16): the steps that take minutes show a progress bar and say what they do."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

from composer.codec import scores
from tests.conftest import make_midi, tiny_model
from tests.test_scores import CHORALES, OPTS


def test_converting_a_music21_corpus_shows_its_progress(tmp_path: Path, capsys, caplog):
    root, files = scores.corpus_files("bach")
    picked = [p for p in files if p.name in CHORALES]
    with caplog.at_level(logging.INFO, logger="composer.codec.scores"):
        scores.materialize("bach", root, picked, tmp_path / "cache", OPTS, workers=1)
    assert "music21:bach: performing 3 of 3 scores into MIDI" in caplog.text
    err = capsys.readouterr().err
    assert "convert music21:bach" in err and "3/3" in err
    scores.materialize("bach", root, picked, tmp_path / "cache", OPTS, workers=1)
    assert "convert music21:bach" not in capsys.readouterr().err  # nothing to do: no bar


def test_eval_shows_what_it_scores_as_it_goes(tmp_path: Path):
    folder = tmp_path / "data" / "tunes"
    folder.mkdir(parents=True)
    for i in range(8):
        make_midi(
            folder / f"t{i}.mid", [{"notes": [(60 + (i + k) % 12, 80, k * 0.2, k * 0.2 + 0.15) for k in range(40)]}]
        )
    genres = tmp_path / "genres"
    genres.mkdir()
    (genres / "tunes.toml").write_text(
        'name = "tunes"\nsources = ["tunes"]\nlicense = "CC0-1.0"\nvalidation_fraction = 0.5\n'
    )
    env = {
        **os.environ,
        "COMPOSER_DATA_ROOT": str(tmp_path / "data"),
        "COMPOSER_GENRES_DIR": str(genres),
        "COMPOSER_CACHE_DIR": str(tmp_path / "cache"),
        "OMP_NUM_THREADS": "1",
    }

    def composer(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "composer.cli", *args], env=env, capture_output=True, text=True)

    assert composer("prepare", "--workers", "1").returncode == 0
    model = tiny_model(tmp_path / "model", "tunes")
    on_split = composer("eval", "--genre", "tunes", "--model-dir", str(model), "--device", "cpu")
    assert on_split.returncode == 0, on_split.stderr
    assert "eval tunes on its validation split" in on_split.stderr and "event/s" in on_split.stderr
    on_files = composer("eval", "--genre", "tunes", "--model-dir", str(model), "--data", str(folder))
    assert on_files.returncode == 0, on_files.stderr
    assert f"eval tunes on {folder}: reading MIDI" in on_files.stderr and "8/8" in on_files.stderr
