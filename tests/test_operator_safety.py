"""Operators' mistakes cost nothing (issue #16): each is refused at once, in one line, before any work.

Version names that are paths, read-only model folders, genre typos, manifests named unlike
their file and corpora that leave a split empty; the training side (the run lock, the log
after a resume, the time budget of --publish) is in tests/test_train_safety.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from composer.corpus.genres import load_genre_file
from composer.models import registry
from composer.models.registry import InvalidVersionError, ReadOnlyError
from tests.conftest import make_midi
from tests.test_registry import composer, store, version  # noqa: F401  (the store fixture)

VERSION_NAME = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,20}\Z")


def is_version_name(name: str) -> bool:
    try:
        return registry.check_version_name(name) == name
    except InvalidVersionError:
        return False


@contextmanager
def read_only(*paths: Path) -> Iterator[None]:
    """Folders nobody may write, root included: ``chattr +i`` as root (permissions do not stop
    root), ``chmod 555`` otherwise."""
    as_root = os.geteuid() == 0
    if as_root and shutil.which("chattr") is None:
        pytest.skip("running as root without chattr: cannot make a folder read-only")
    for path in paths:
        if as_root:
            if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode:
                pytest.skip("chattr +i is not supported on this file system")
        else:
            path.chmod(0o555)
    try:
        yield
    finally:
        for path in paths:
            if as_root:
                subprocess.run(["chattr", "-i", str(path)], check=True)
            else:
                path.chmod(0o755)


def lines(done: subprocess.CompletedProcess) -> list[str]:
    return done.stderr.strip().splitlines()


# ---------------------------------------------------------------- versions are names


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(
    name=st.one_of(
        st.text(max_size=24), st.sampled_from(["..", ".", "../folk/v3", "v1/..", "/v1", "CURRENT", "v1\n"])
    ).filter(lambda s: not is_version_name(s))
)
def test_a_version_that_is_not_a_name_is_refused_everywhere(store, name):  # noqa: F811
    models = store["models_dir"]
    for attempt in (
        lambda: registry.promote("folk", name, force=True, **store),
        lambda: registry.check_new_version("folk", name, models),
        lambda: registry.set_current("folk", name, models),
    ):
        with pytest.raises(InvalidVersionError, match="is not a version name"):
            attempt()
    assert registry.current_version("folk", models) == "v1"
    assert sorted(p.name for p in (models / "folk").iterdir()) == ["CURRENT", "v1", "v2", "v3"]


@settings(max_examples=50, deadline=None)
@given(name=VERSION_NAME)
def test_every_plain_name_is_a_version_name(name):
    if name not in ("CURRENT", "HISTORY"):
        assert registry.check_version_name(name) == name


def test_promote_refuses_a_path_before_evaluating_even_forced(store):  # noqa: F811
    models = store["models_dir"]
    for extra in ([], ["--force"]):
        done = composer(store, "promote", "--genre", "folk", "--version", "../folk/v3", *extra)
        assert done.returncode == 2 and done.stdout == ""  # no scores: nothing was evaluated
        assert lines(done) == [
            "error: '../folk/v3' is not a version name: use letters, digits, '.', '_' and '-', "
            "starting with a letter or digit (like v3)"
        ]
    assert registry.current_version("folk", models) == "v1"


# ---------------------------------------------------------------- a models folder nobody may write


def test_a_read_only_models_folder_is_one_line_before_any_work(store):  # noqa: F811
    models = store["models_dir"]
    registry.promote("folk", "v3", **store)  # v3 current, v1 to roll back to
    with read_only(models / "folk"):
        for args in (
            ["promote", "--genre", "folk", "--version", "v2", "--force"],
            ["promote", "--genre", "folk", "--version", "v1"],
            ["rollback", "--genre", "folk"],
            ["train", "--genre", "folk", "--run-name", "r", "--steps", "1", "--publish", "v9"],
        ):
            done = composer(store, *args)
            assert done.returncode == 2, (args, done.stderr)
            assert lines(done) == [f"error: {models / 'folk'} is not writable: nothing was changed "
                                   "(check its owner and permissions)"], args  # fmt: skip
        assert registry.current_version("folk", models) == "v3"
    assert not (models.parent / "runs").exists()  # refused before training: no run folder


def test_the_writable_check_looks_at_the_folder_that_will_hold_the_genre(tmp_path: Path):
    models = tmp_path / "models"
    models.mkdir()
    with read_only(models), pytest.raises(ReadOnlyError, match=f"{models} is not writable"):
        registry.check_new_version("folk", "v1", models)
    assert registry.check_new_version("folk", "v1", models) == models / "folk" / "v1"


# ---------------------------------------------------------------- genres: typos, names, messages


def test_a_genre_typo_is_an_unknown_genre_with_the_known_ones(store):  # noqa: F811
    for args in (["promote", "--version", "v1"], ["rollback"], ["versions"]):
        done = composer(store, args[0], "--genre", "iris", *args[1:])
        assert done.returncode == 2
        [line] = lines(done)
        assert line.startswith("error: unknown genre 'iris' (known: ") and "folk" in line, line


def test_missing_versions_are_listed_without_python_reprs(store):  # noqa: F811
    done = composer(store, "promote", "--genre", "folk", "--version", "v9")
    assert lines(done) == ["error: genre 'folk' has no model version 'v9' (have: v1, v2, v3)"]


def test_a_manifest_named_unlike_its_file_is_refused(tmp_path: Path):
    path = tmp_path / "iris.toml"
    path.write_text('name = "irish"\nsources = ["music21:oneills1850"]\nlicense = "PD"\n')
    with pytest.raises(ValueError, match=r"iris\.toml: name 'irish' differs from the file's name 'iris'"):
        load_genre_file(path)
    path.write_text('name = "iris"\nsources = ["music21:oneills1850"]\nlicense = "PD"\n')
    assert load_genre_file(path).name == "iris"


# ---------------------------------------------------------------- prepare: a corpus that cannot train


def prepare(tmp_path: Path, files: dict[str, list | bytes]) -> subprocess.CompletedProcess:
    """``composer prepare`` of a genre ``tunes`` whose folder holds ``files`` (notes, or raw bytes)."""
    folder = tmp_path / "data" / "tunes"
    folder.mkdir(parents=True)
    for name, content in files.items():
        if isinstance(content, bytes):
            (folder / name).write_bytes(content)
        else:
            make_midi(folder / name, [{"notes": content}] if content else [])
    genres = tmp_path / "genres"
    genres.mkdir()
    (genres / "tunes.toml").write_text('name = "tunes"\nsources = ["tunes"]\nlicense = "CC0-1.0"\n')
    env = {
        **os.environ,
        "COMPOSER_DATA_ROOT": str(tmp_path / "data"),
        "COMPOSER_GENRES_DIR": str(genres),
        "COMPOSER_CACHE_DIR": str(tmp_path / "cache"),
        "OMP_NUM_THREADS": "1",
    }
    args = [sys.executable, "-m", "composer.cli", "prepare", "--workers", "1"]
    return subprocess.run(args, env=env, capture_output=True, text=True)


TUNE = [(60 + i % 7, 80, i * 0.25, i * 0.25 + 0.2) for i in range(32)]


def test_prepare_of_a_corpus_without_a_usable_file_is_an_error(tmp_path: Path):
    done = prepare(tmp_path, {"broken.mid": b"MThd garbage", "silent.mid": []})
    assert done.returncode == 2
    assert (
        lines(done)[-1]
        == "error: genre tunes: no usable MIDI file (2 of 2 unreadable or empty): add readable MIDI files"
    )
    assert not (tmp_path / "cache" / "genres" / "tunes" / "train.npz").exists()


def test_prepare_of_a_corpus_of_one_file_names_the_empty_split(tmp_path: Path):
    done = prepare(tmp_path, {"only.mid": TUNE})
    assert done.returncode == 2
    line = lines(done)[-1]
    assert (
        line.startswith("error: genre tunes: 1 usable file(s), none in the ")
        and "validation_fraction (now 0.1)" in line
    )
    assert not (tmp_path / "cache" / "genres" / "tunes" / "validation.npz").exists()


def test_prepare_of_an_empty_folder_names_it_plainly(tmp_path: Path):
    done = prepare(tmp_path, {})
    assert done.returncode == 2
    assert lines(done) == [f"error: genre tunes: no MIDI files under {tmp_path / 'data' / 'tunes'}"]
