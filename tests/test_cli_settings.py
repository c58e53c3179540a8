"""Every `bot` and `composer` command against broken settings: one line on stderr, a non-zero exit, no traceback.

The commands are read from the typer apps themselves, so a new command without a case here
fails the test. Real processes, a real SQLite file and a closed TCP port for the database
that does not answer.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main

from bot.cli import app as bot_app
from bot.migrate import head_revision, history, upgrade
from composer.cli import app as composer_app
from tests.conftest import make_midi

UNREACHABLE = "postgresql+psycopg://band:hunter2@127.0.0.1:1/band"  # nothing listens on port 1
BROKEN_DATABASES = {
    "unreachable": (UNREACHABLE, "cannot reach the database"),
    "postgres scheme": ("postgres://band:hunter2@127.0.0.1:1/band", "postgresql+psycopg://"),
    "sqlite in a missing folder": ("sqlite:///{tmp}/no/such/folder/bot.sqlite3", "does not exist"),
    "unsupported scheme": ("mysql://band@127.0.0.1/band", "unsupported database"),
    "not a URL": ("band.sqlite3", "not a database URL"),
}
DATABASE_COMMANDS = [
    ["once"],
    ["run"],
    ["web", "--port", "1"],
    ["db", "upgrade"],
    ["db", "current"],
    ["db", "downgrade", "0001", "--yes"],
]


def command_names(app: typer.Typer) -> set[str]:
    """Every leaf command of a typer app, as "db upgrade"."""

    def walk(command, prefix: str) -> set[str]:
        subcommands = getattr(command, "commands", None)
        if not subcommands:
            return {prefix}
        return set().union(*(walk(c, f"{prefix} {name}".strip()) for name, c in subcommands.items()))

    return walk(typer.main.get_command(app), "")


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BOT_", "MASTODON_", "TWITTER_", "COMPOSER_"))}
    env.pop("DATABASE_URL", None)
    env.update(
        BOT_DATA_DIR=str(tmp_path / "var"),
        BOT_PLATFORM="mastodon",
        MASTODON_API_BASE_URL="http://127.0.0.1:1",
        MASTODON_ACCESS_TOKEN="token",
        OMP_NUM_THREADS="1",
    )
    return env | extra


def run(program: str, args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    module = {"bot": "bot.cli", "composer": "composer.cli"}[program]
    return subprocess.run(
        [sys.executable, "-m", module, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )


def assert_one_line(done: subprocess.CompletedProcess, what: str, says: str = "") -> str:
    lines = done.stderr.strip().splitlines()
    assert done.returncode != 0, f"{what}: exit 0\n{done.stderr[-2000:]}"
    assert "Traceback" not in done.stderr and "╭" not in done.stderr, f"{what}:\n{done.stderr[-3000:]}"
    assert len(lines) == 1 and lines[0].startswith("error: "), f"{what}:\n{done.stderr[-3000:]}"
    assert says in lines[0], f"{what}: {lines[0]!r} does not say {says!r}"
    return lines[0]


@pytest.mark.parametrize("broken", sorted(BROKEN_DATABASES))
def test_every_database_command_says_in_one_line_what_is_wrong_with_the_database(broken, tmp_path):
    url, says = BROKEN_DATABASES[broken]
    url = url.format(tmp=tmp_path)
    env = clean_env(tmp_path, DATABASE_URL=url)
    for args in DATABASE_COMMANDS:
        line = assert_one_line(run("bot", args, env, tmp_path), f"bot {' '.join(args)} with {broken}", says)
        assert "hunter2" not in line  # a password in the URL is never printed
    assert not (tmp_path / "no").exists()  # the SQLite file's folder was not made silently


def test_the_default_database_folder_is_made_and_used(tmp_path):
    env = clean_env(tmp_path)
    done = run("bot", ["db", "upgrade"], env, tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "var" / "bot.sqlite3").is_file()
    assert run("bot", ["db", "current"], env, tmp_path).stdout.strip() == f"{head_revision()} (head): up to date"


def test_a_database_behind_or_ahead_of_the_code_is_refused_and_the_db_commands_say_where_it_is(tmp_path):
    url = f"sqlite:///{tmp_path / 'bot.sqlite3'}"
    env = clean_env(tmp_path, DATABASE_URL=url)
    revisions = [r.id for r in history()]
    assert revisions[-1] == head_revision() and len(revisions) >= 2
    listed = run("bot", ["db", "history"], env, tmp_path).stdout.splitlines()
    assert [line.split()[0] for line in listed] == revisions and "(head)" in listed[-1]

    for args in (["once"], ["run"], ["web"]):  # no schema at all
        assert_one_line(run("bot", args, env, tmp_path), f"bot {args[0]} on an empty database", "bot db upgrade")

    behind = revisions[-2]
    upgrade(url, behind)
    current = run("bot", ["db", "current"], env, tmp_path)
    assert current.returncode == 0 and current.stdout.startswith(f"{behind}: behind"), current.stdout
    for args in (["once"], ["run"], ["web"]):
        line = assert_one_line(run("bot", args, env, tmp_path), f"bot {args[0]} behind", f"revision {behind}")
        assert "behind" in line and "bot db upgrade" in line

    assert run("bot", ["db", "upgrade"], env, tmp_path).returncode == 0
    refused = run("bot", ["db", "downgrade", behind], env, tmp_path)  # without --yes: nothing dropped
    assert_one_line(refused, "downgrade without --yes", "--yes")
    assert run("bot", ["db", "current"], env, tmp_path).stdout.startswith(f"{head_revision()} (head)")
    assert run("bot", ["db", "downgrade", behind, "--yes"], env, tmp_path).returncode == 0
    assert run("bot", ["db", "current"], env, tmp_path).stdout.startswith(f"{behind}: behind")
    assert_one_line(run("bot", ["db", "downgrade", "9999", "--yes"], env, tmp_path), "unknown revision", "9999")

    import sqlite3

    with sqlite3.connect(tmp_path / "bot.sqlite3") as connection:  # as newer code would leave it
        connection.execute("UPDATE alembic_version SET version_num = '9999'")
    line = assert_one_line(run("bot", ["once"], env, tmp_path), "bot once ahead", "9999")
    assert "does not know" in line


def test_every_bot_command_has_a_broken_settings_case_and_answers_it_in_one_line(tmp_path):
    """The commands without a database of their own, each against the setting it depends on."""
    import socket

    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    taken = str(busy.getsockname()[1])
    other = {
        "genres": (["genres"], {"COMPOSER_URL": "http://127.0.0.1:1"}, "composer"),
        "demo": (
            ["demo", "--data-dir", str(tmp_path / "demo"), "--mastodon-port", taken, "--no-prompt"],
            {},
            "in use",
        ),
        "bench": (["bench", "--postgres", "postgres://band@127.0.0.1/band", "--mentions", "1"], {}, "psycopg"),
        "bench-web": (["bench-web", "--database", UNREACHABLE, "--rows", "1"], {}, "cannot reach"),
        "bench-latency": (["bench-latency", "--models-dir", str(tmp_path / "none")], {}, "no such folder"),
        "web": (["web", "--port", taken], {"DATABASE_URL": f"sqlite:///{tmp_path / 'w.sqlite3'}"}, "cannot listen"),
        "once": (["once"], {"MASTODON_ACCESS_TOKEN": ""}, "MASTODON_ACCESS_TOKEN"),
        "run": (["run"], {"BOT_INTERVAL_SECONDS": "soon"}, "BOT_INTERVAL_SECONDS"),
    }
    upgrade(f"sqlite:///{tmp_path / 'w.sqlite3'}")
    db_commands = {" ".join(a[:2]) if a[0] == "db" else a[0] for a in DATABASE_COMMANDS}
    assert command_names(bot_app) - db_commands - set(other) == {"db history"}  # history reads no database
    try:
        for name, (args, extra, says) in other.items():
            assert_one_line(run("bot", args, clean_env(tmp_path, **extra), tmp_path), f"bot {name}", says)
    finally:
        busy.close()
    history_with_broken_url = run("bot", ["db", "history"], clean_env(tmp_path, DATABASE_URL=UNREACHABLE), tmp_path)
    assert history_with_broken_url.returncode == 0 and head_revision() in history_with_broken_url.stdout


COMPOSER_ARGS = {
    "encode": ["encode", "in.mid", "--out", "out.npy"],
    "decode": ["decode", "in.npy", "--out", "out.mid"],
    "roundtrip": ["roundtrip", "."],
    "prepare": ["prepare"],
    "train": ["train", "--genre", "folk"],
    "study": ["study", "--genre", "folk", "--name", "s", "--runs", "a"],
    "eval": ["eval", "--genre", "folk"],
    "sample": ["sample", "--genre", "folk", "--out", "out.mid"],
    "baseline": ["baseline", "--genre", "folk"],
    "report": ["report", "--genre", "folk", "--out", "r.html"],
    "fidelity": ["fidelity"],
    "structure": ["structure", "--genre", "folk"],
    "neural-cache": ["neural-cache", "--genre", "folk"],
    "versions": ["versions", "--genre", "folk"],
    "promote": ["promote", "--genre", "folk", "--version", "v1"],
    "rollback": ["rollback", "--genre", "folk"],
    "bench": ["bench", "--genre", "folk"],
    "render": ["render", "in.mid", "--out", "out.mp3"],
    "bench-render": ["bench-render"],
    "serve": ["serve", "--port", "1"],
    "bench-service": ["bench-service"],
}


@pytest.mark.parametrize(
    "broken,says",
    [
        ({"COMPOSER_DEVICE": "gpu0"}, "COMPOSER_DEVICE"),
        ({"COMPOSER_SAMPLE_THREADS": "all"}, "COMPOSER_SAMPLE_THREADS"),
    ],
)
def test_every_composer_command_names_a_wrong_setting_in_one_line(broken, says, tmp_path):
    assert command_names(composer_app) == set(COMPOSER_ARGS)
    env = clean_env(tmp_path, **broken)
    for name, args in COMPOSER_ARGS.items():
        assert_one_line(run("composer", args, env, tmp_path), f"composer {name} with {broken}", says)


def test_composer_commands_writing_into_a_missing_folder_say_so_before_any_work(tmp_path):
    import numpy as np

    make_midi(tmp_path / "in.mid", [{"notes": [(60, 80, 0.0, 0.5), (64, 80, 0.5, 1.0)]}])
    np.save(tmp_path / "in.npy", np.array([356, 60, 300, 188], dtype=np.int16))
    env = clean_env(tmp_path)
    cases = {
        "encode": ["encode", "in.mid", "--out", "missing/out.npy"],
        "decode": ["decode", "in.npy", "--out", "missing/out.mid"],
        "sample": ["sample", "--genre", "folk", "--seconds", "2", "--out", "missing/out.mid"],
        "render": ["render", "in.mid", "--out", "missing/out.mp3"],
        "roundtrip": ["roundtrip", "missing"],
    }
    for name, args in cases.items():
        assert_one_line(run("composer", args, env, tmp_path), f"composer {name}", "missing")
    assert not (tmp_path / "missing").exists()


def test_bot_web_says_where_it_listens_and_logs_requests_only_when_asked(tmp_path):
    import time

    import httpx

    from bot.local_mastodon import free_port

    url = f"sqlite:///{tmp_path / 'bot.sqlite3'}"
    upgrade(url)
    env = clean_env(tmp_path, DATABASE_URL=url, ARCHIVE_BASE_URL="https://band.example")
    for access_log in (False, True):
        port = free_port()
        args = [sys.executable, "-m", "bot.cli", "web", "--port", str(port)] + (["--access-log"] if access_log else [])
        process = subprocess.Popen(args, env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
        try:
            first = process.stderr.readline()
            assert f"archive web listening on http://127.0.0.1:{port}/" in first, first
            assert "public address https://band.example" in first
            deadline = time.monotonic() + 30
            while True:
                try:
                    assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline and process.poll() is None
                    time.sleep(0.1)
        finally:
            process.terminate()
            rest = process.communicate(timeout=30)[1]
        logged = '"GET /healthz HTTP/1.1" 200' in rest
        assert logged == access_log, rest
