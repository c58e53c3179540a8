"""Faults between the worker and the composer (issue #17): an outage delays, a secret never shows."""

from __future__ import annotations

import logging
import os
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from bot.config import MASK, load_settings, redact
from bot.db import Composition, MentionRequest, State, utcnow
from bot.worker.failures import is_outage
from composer.client import HttpComposerClient
from composer.contract import ComposerUnavailable
from composer.serving.local import LocalComposerClient
from tests.bot_helpers import make_models, mock_mastodon
from tests.test_bot_mastodon import jobs, post, worker_factory
from tests.test_service import free_port, running

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

PASSWORD = "hunter2-composer-secret"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with mock_mastodon(tmp_path_factory.mktemp("mock")) as running_server:
        yield running_server


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    return make_models(tmp_path_factory.mktemp("models"))


@pytest.fixture
def make_worker(server, models, tmp_path):
    yield from worker_factory(server, None, tmp_path, f"sqlite:///{tmp_path / 'bot.sqlite3'}")


@pytest.fixture(scope="module")
def busy_composer(models) -> str:
    """The real composer service, too busy for any piece: every composition is a 503 with Retry-After."""
    with running(models, queue_limit=0) as url:
        yield url


class Clock:
    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self):
        return self.now


def test_an_outage_delays_without_spending_attempts_until_the_maximum_age(server, make_worker, busy_composer):
    clock = Clock()
    worker = make_worker(clock=clock, bot_max_attempts=2, bot_retry_base_seconds=30, bot_outage_max_age_seconds=3600)
    worker.composer = HttpComposerClient(busy_composer, retries=0)
    status_id = post(server, "alice", "@band folk please")
    for _ in range(6):  # three times the attempts a real failure gets
        worker.tick()
        job = jobs(make_worker)[status_id]
        assert job.state == State.RECEIVED and job.attempts == 0 and "503" in job.last_error
        assert job.next_attempt_at > clock.now  # delayed, growing with the wait so far
        clock.now = job.next_attempt_at
    assert server.replies_to(status_id) == []  # nobody was told sorry while the composer was only away
    assert clock.now - job.received_at < timedelta(hours=1)
    clock.now = job.received_at + timedelta(seconds=3600)
    worker.tick()
    (sorry,) = server.replies_to(status_id)
    assert "Sorry" in sorry["content"] and jobs(make_worker)[status_id].state == State.FAILED


def test_only_an_unavailable_composer_is_an_outage():
    assert is_outage(ComposerUnavailable("connection refused"))  # a transport error: 503
    assert is_outage(ComposerUnavailable("504: timed out", 504)) and is_outage(ComposerUnavailable("bad gateway", 502))
    assert not is_outage(ComposerUnavailable("500: a bug", 500)) and not is_outage(ValueError("x"))


def test_a_password_in_composer_url_is_in_no_log_line_and_no_stored_error(server, make_worker, busy_composer, caplog):
    with_password = busy_composer.replace("http://", f"http://band:{PASSWORD}@")
    gone = f"http://band:{PASSWORD}@127.0.0.1:{free_port()}"  # nothing listens there
    clock = Clock()
    caplog.set_level(logging.INFO)
    worker = make_worker(clock=clock, composer_url=gone)
    worker.composer = HttpComposerClient(with_password, retries=0)
    status_id = post(server, "alice", "@band folk please")
    worker.tick()  # the mention is stored; its piece waits for the busy composer
    worker.composer = HttpComposerClient(gone, retries=1, backoff_s=0)
    clock.now = jobs(make_worker)[status_id].next_attempt_at
    worker.tick()  # the composer is gone: a connection error, whose message names the URL
    post(server, "bob", "@band pop please")
    worker.tick()  # reading mentions fails too, asking for the genres
    job = jobs(make_worker)[status_id]
    assert "ConnectError" in job.last_error and PASSWORD not in job.last_error
    assert "ConnectError" in caplog.text and "composer" in caplog.text
    assert PASSWORD not in caplog.text
    assert all(PASSWORD not in (r.exc_text or "") for r in caplog.records)


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("ConnectError http://band:s3cret-pw@composer:8000/v1/compositions", "http://band:**********@composer:8000"),
        ("at https://tok3n-value@example.org/x", "https://**********@example.org/x"),
        ("postgresql+psycopg://band:pa55word@db/band down", "postgresql+psycopg://band:**********@db/band down"),
        ("GET /api?access_token=abcdef123&x=1", "/api?access_token=**********&x=1"),
        ("nothing secret http://example.org/a@b", "nothing secret http://example.org/a@b"),
    ],
)
def test_redact_takes_credentials_out_of_urls(text, kept, monkeypatch):
    import bot.config

    monkeypatch.setattr(bot.config, "_known_secrets", set())  # not the secrets other tests in this process loaded
    assert kept in redact(text)
    assert (MASK in redact(text)) == (kept != text)


def test_loaded_secrets_are_masked_wherever_they_show(tmp_path, caplog):
    load_settings(
        require_platform=False,
        mastodon_access_token="tok-1234567890",
        composer_url="http://u:pw-0987654321@composer:8000",
        bot_data_dir=tmp_path,
    )
    said = redact("the token tok-1234567890 and the password pw-0987654321 alone")
    assert "tok-1234567890" not in said and "pw-0987654321" not in said and said.count(MASK) == 2
    caplog.set_level(logging.INFO)
    logging.getLogger("anything.at.all").warning("asked %s with %s", "http://x:y@h", "tok-1234567890")
    try:
        raise RuntimeError("failed with pw-0987654321")
    except RuntimeError:
        logging.getLogger("httpx").exception("boom")
    assert "asked http://x:**********@h with **********" in caplog.text
    assert "pw-0987654321" not in caplog.text and "failed with **********" in caplog.text


# --- leases and media: a slow composer keeps its job, and no file outlives its row -------------


class HeldComposer:
    """The in-process composer, holding each piece until ``release`` is set."""

    def __init__(self, inner: LocalComposerClient, held: bool = True):
        self.inner, self.calls = inner, 0
        self.composing, self.release = threading.Event(), threading.Event()
        if not held:
            self.release.set()

    def genres(self):
        return self.inner.genres()

    def compose(self, *args, **kwargs):
        self.calls += 1
        self.composing.set()
        assert self.release.wait(60)
        return self.inner.compose(*args, **kwargs)


def piece_files(worker) -> list[str]:
    return sorted(path for path, _ in worker.media.files())


def compose_held(worker, composer: HeldComposer, while_held) -> None:
    """``worker`` ticks in a thread; ``while_held()`` runs while its piece is being composed."""
    ticking = threading.Thread(target=worker.tick)
    ticking.start()
    try:
        assert composer.composing.wait(60)
        while_held()
    finally:
        composer.release.set()
        ticking.join(60)


def test_a_slow_composer_keeps_its_lease_and_no_second_worker_composes(server, make_worker, models):
    local = LocalComposerClient(models_dir=models)
    first = make_worker(bot_lease_seconds=1, bot_worker_id="first")
    first.composer = slow = HeldComposer(local)
    second = make_worker(bot_lease_seconds=1, bot_worker_id="second")
    second.composer = other = HeldComposer(local, held=False)
    status_id = post(server, "alice", "@band folk 2 seconds")
    compose_held(first, slow, lambda: (time.sleep(3), second.tick()))  # three leases long
    assert other.calls == 0  # the job stayed the first worker's
    assert len(server.replies_to(status_id)) == 1 and jobs(make_worker)[status_id].state == State.REPLIED
    with make_worker.sessions() as session:
        (piece,) = session.scalars(select(Composition)).all()
    assert piece_files(first) == sorted([piece.midi_path, piece.audio_path, piece.pianoroll_path])


def test_a_worker_that_lost_its_job_while_composing_leaves_no_files(server, make_worker, models):
    worker = make_worker(bot_worker_id="loser")
    worker.composer = held = HeldComposer(LocalComposerClient(models_dir=models))
    status_id = post(server, "alice", "@band folk 2 seconds")

    def taken_by_another() -> None:
        with make_worker.sessions() as session, session.begin():
            session.execute(update(MentionRequest).values(claimed_by="another"))

    compose_held(worker, held, taken_by_another)
    assert jobs(make_worker)[status_id].composition_id is None and server.replies_to(status_id) == []
    assert piece_files(worker) == []


def test_piece_files_that_no_row_owns_are_swept_after_an_hour(server, make_worker, models):
    worker = make_worker()
    worker.composer = LocalComposerClient(models_dir=models)
    old = time.time() - 2 * 3600
    orphan = [worker.media.write("0f1e2d3c-0000-4000-8000-00000000abcd", ext, b"x") for ext in ("mid", "mp3", "png")]
    fresh = worker.media.write("0f1e2d3c-0000-4000-8000-00000000ffff", "mp3", b"x")  # perhaps about to be committed
    other = worker.media.path("og/site-card.jpg")  # not a piece's file: not the sweep's business
    other.parent.mkdir(parents=True, exist_ok=True)
    other.write_bytes(b"x")
    for path in [*orphan, "og/site-card.jpg"]:
        os.utime(worker.media.path(path), (old, old))
    post(server, "alice", "@band folk 2 seconds")
    worker.tick()  # composes a piece, then sweeps
    with make_worker.sessions() as session:
        (piece,) = session.scalars(select(Composition)).all()
    os.utime(worker.media.path(piece.midi_path), (old, old))  # an old file with a row stays
    assert worker.sweep_orphans() == 0
    owned = [piece.midi_path, piece.audio_path, piece.pianoroll_path]
    assert piece_files(worker) == sorted([*owned, fresh, "og/site-card.jpg"])
