"""Exactly once under kill -9, with two workers at once, and `bot run` stopping on SIGTERM (PostgreSQL)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from bot.db import Composition, MentionRequest, State, make_engine, session_factory
from bot.migrate import upgrade
from tests.bot_helpers import bot_env, make_models, mock_mastodon, postgres_schema

BOT = [sys.executable, "-m", "bot.cli"]
CRASHING = [sys.executable, str(Path(__file__).with_name("crash_worker.py"))]  # `bot once`, killed at checkpoints
CHECKPOINTS = "composed,rendered,media-posted,uploaded,posted,replied"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with mock_mastodon(tmp_path_factory.mktemp("mock")) as running:
        yield running


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    return make_models(tmp_path_factory.mktemp("models"), genres=("folk",))


@pytest.fixture
def database(server):
    server.reset()
    with postgres_schema() as url:
        upgrade(url)
        yield url


def post(server, user: str, text: str, **kwargs) -> str:
    return str(server.client(user).status_post(text, **kwargs)["id"])


def states(url: str) -> tuple[dict[str, MentionRequest], int]:
    engine = make_engine(url)
    with session_factory(engine)() as session:
        rows = {r.mention_id: r for r in session.scalars(select(MentionRequest))}
        pieces = session.scalar(select(func.count()).select_from(Composition))
    engine.dispose()
    return rows, pieces


def test_kill_9_after_every_step_still_replies_exactly_once(server, models, database, tmp_path):
    piece = post(server, "alice", "@band folk, 2 seconds", visibility="direct")
    helped = post(server, "bob", "@band help")
    env = bot_env(server, tmp_path, database, models)
    kills = 0
    for _ in range(20):
        done = subprocess.run([*CRASHING, CHECKPOINTS], env=env, capture_output=True, text=True, timeout=300)
        if done.returncode == 0:
            break
        assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]
        kills += 1
    assert kills == 6 + 2  # every checkpoint of the piece, then the help reply's two
    rows, pieces = states(database)
    assert {r.state for r in rows.values()} == {State.REPLIED}
    assert pieces == 1  # a piece composed before a crash is not composed again
    assert len(server.replies_to(piece)) == 1 and len(server.replies_to(helped)) == 1
    (reply,) = server.replies_to(piece)
    assert reply["visibility"] == "direct" and len(reply["media_attachments"]) == 1
    assert rows[piece].reply_id == str(reply["id"])


def test_a_crash_after_posting_finds_the_reply_instead_of_posting_again(server, models, database, tmp_path):
    status_id = post(server, "alice", "@band folk, 2 seconds")
    env = bot_env(server, tmp_path, database, models)
    done = subprocess.run([*CRASHING, "posted"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == -signal.SIGKILL
    rows, _ = states(database)
    assert rows[status_id].reply_id is None and rows[status_id].reply_started_at is not None
    done = subprocess.run([*BOT, "once"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "found our earlier reply" in done.stderr
    (reply,) = server.replies_to(status_id)
    assert states(database)[0][status_id].reply_id == str(reply["id"])


def test_two_workers_share_a_burst_without_duplicates(server, models, database, tmp_path):
    users = ["alice", "bob", "carol", "eve"]
    ids = [post(server, users[i % 4], f"@band folk {2 + i % 2} seconds") for i in range(8)]
    workers = [
        subprocess.Popen(
            [*BOT, "once"],
            env=bot_env(server, tmp_path, database, models, BOT_WORKER_ID=name, BOT_PER_ACCOUNT_PER_HOUR="10"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("worker-a", "worker-b")
    ]
    outputs = [w.communicate(timeout=300) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], [o[1][-2000:] for o in outputs]
    replied = [int(out.split("replied ")[1].split(",")[0]) for out, _ in outputs]
    print("replies per worker:", replied)
    assert sum(replied) == 8
    assert [len(server.replies_to(i)) for i in ids] == [1] * 8
    rows, pieces = states(database)
    assert pieces == 8 and {r.state for r in rows.values()} == {State.REPLIED}


def test_bot_run_ticks_until_sigterm(server, models, database, tmp_path):
    env = bot_env(server, tmp_path, database, models, BOT_INTERVAL_SECONDS="1")
    process = subprocess.Popen([*BOT, "run"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1)
        status_id = post(server, "alice", "@band folk, 2 seconds")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not server.replies_to(status_id):
            time.sleep(0.5)
        assert len(server.replies_to(status_id)) == 1
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err[-3000:]
    assert "finishing the current tick" in err and "bot stopped" in err
