"""The composer command line as a user runs it: real processes, real files, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from composer.codec import events
from composer.codec.midi import load_notes
from tests.conftest import DATA_ROOT, make_midi, needs_corpora, tiny_model


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    models = tmp_path / "models"
    tiny_model(models / "folk" / "v1")
    (models / "folk" / "CURRENT").write_text("v1\n")
    return {**os.environ, "COMPOSER_MODELS_DIR": str(models), "OMP_NUM_THREADS": "1"}


def run(env, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "composer.cli", *args], env=env, capture_output=True, text=True)


def test_help_lists_the_commands(env):
    done = run(env, "--help")
    assert done.returncode == 0
    for command in ("encode", "decode", "prepare", "train", "eval", "sample"):
        assert command in done.stdout
    bot = subprocess.run([sys.executable, "-m", "bot.cli", "--help"], capture_output=True, text=True)
    assert bot.returncode == 0


@needs_corpora
def test_encode_then_decode_keeps_the_notes(env, tmp_path: Path):
    source = DATA_ROOT / "asap" / "Chopin"
    midi = sorted(source.rglob("*.mid"))[0]
    assert run(env, "encode", str(midi), "--out", str(tmp_path / "t.npy")).returncode == 0
    tokens = np.load(tmp_path / "t.npy")
    assert tokens.dtype == np.int16 and tokens.max() < events.NUM_EVENTS
    assert run(env, "decode", str(tmp_path / "t.npy"), "--out", str(tmp_path / "back.mid")).returncode == 0
    key = lambda n: (n.pitch, events.quantize(n.start), events.velocity_to_bin(n.velocity))  # noqa: E731
    assert sorted(map(key, load_notes(tmp_path / "back.mid"))) == sorted(map(key, load_notes(midi)))


def test_bad_inputs_give_one_line_errors_and_exit_2(env, tmp_path: Path):
    (tmp_path / "bad.mid").write_bytes(b"garbage")
    np.save(tmp_path / "floats.npy", np.zeros(3, dtype=np.float32))
    np.save(tmp_path / "big.npy", np.array([5000]))
    cases = [
        ("encode", str(tmp_path / "bad.mid"), "--out", str(tmp_path / "x.npy")),
        ("encode", str(tmp_path / "missing.mid"), "--out", str(tmp_path / "x.npy")),
        ("decode", str(tmp_path / "floats.npy"), "--out", str(tmp_path / "x.mid")),
        ("decode", str(tmp_path / "big.npy"), "--out", str(tmp_path / "x.mid")),
        ("sample", "--genre", "opera", "--out", str(tmp_path / "x.mid")),
        ("sample", "--genre", "folk", "--seconds", "0", "--out", str(tmp_path / "x.mid")),
        ("sample", "--genre", "folk", "--seconds", "601", "--out", str(tmp_path / "x.mid")),
        ("sample", "--genre", "folk", "--primer", str(tmp_path / "missing.mid"), "--out", str(tmp_path / "x.mid")),
        ("sample", "--genre", "folk", "--temperature", "0", "--out", str(tmp_path / "x.mid")),
        ("sample", "--genre", "pop", "--out", str(tmp_path / "x.mid")),  # a genre without a model here
    ]
    for args in cases:
        done = run(env, *args)
        assert done.returncode == 2, (args, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, done.stderr)
    assert not (tmp_path / "x.mid").exists()


def test_sample_writes_a_piece_of_the_asked_length_reproducibly(env, tmp_path: Path):
    for name in ("a.mid", "b.mid"):
        done = run(env, "sample", "--genre", "folk", "--seconds", "12", "--seed", "5", "--out", str(tmp_path / name))
        assert done.returncode == 0, done.stderr
    assert (tmp_path / "a.mid").read_bytes() == (tmp_path / "b.mid").read_bytes()
    notes = load_notes(tmp_path / "a.mid")
    assert notes
    end = max(n.end for n in notes)
    assert 12 * 0.85 <= end <= 12 * 1.15 + 1.0


def test_sample_with_primer_and_count(env, tmp_path: Path):
    primer = make_midi(tmp_path / "primer.mid", [{"notes": [(60 + i, 80, i * 0.5, i * 0.5 + 0.4) for i in range(8)]}])
    done = run(
        env,
        "sample",
        "--genre",
        "folk",
        "--seconds",
        "3",
        "--seed",
        "1",
        "--primer",
        str(primer),
        "--count",
        "3",
        "--out",
        str(tmp_path / "p.mid"),
    )
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.glob("p-*.mid")) == ["p-1.mid", "p-2.mid", "p-3.mid"]


@needs_corpora
def test_eval_skips_bad_files_and_ends_with_json(env, tmp_path: Path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for path in sorted((DATA_ROOT / "nottingham").glob("*.mid"))[:3]:
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "sub").mkdir()
    (folder / "sub" / "broken.midi").write_bytes(b"nope")
    done = run(env, "eval", "--genre", "folk", "--data", str(folder), "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["files"] == 3 and result["events"] > 100
    assert 4.0 < result["nll_per_event"] < 7.0  # an untrained model is near log(391) = 5.97
    assert "broken.midi" in done.stderr


def test_sample_refuses_a_key_the_model_cannot_take_and_a_key_it_cannot_read(env, tmp_path: Path):
    out = str(tmp_path / "k.mid")
    asked = run(env, "sample", "--genre", "folk", "--seconds", "2", "--key", "D minor", "--out", out)
    assert asked.returncode == 2 and "takes no key or density" in asked.stderr
    unread = run(env, "sample", "--genre", "folk", "--seconds", "2", "--key", "H dorian", "--out", out)
    assert unread.returncode == 2 and "name one like 'D minor'" in unread.stderr and not (tmp_path / "k.mid").exists()


def test_sample_with_the_services_settings_writes_the_piece_the_composer_sends_for_that_seed(env, tmp_path: Path):
    from composer.serving.local import LocalComposerClient

    out = tmp_path / "cli.mid"
    args = ("--seconds", "6", "--seed", "11", "--candidates", "4", "--top-p", "0.95", "--out", str(out))
    assert run(env, "sample", "--genre", "folk", *args).returncode == 0
    sent = LocalComposerClient(models_dir=Path(env["COMPOSER_MODELS_DIR"])).compose("folk", 6, seed=11)
    assert sent.form == "ABAB" and load_notes(sent.midi) == load_notes(out)  # folk's manifest plan, best of 4
