"""Faults between the worker and the composer (issue #17): an outage delays, a secret never shows."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

import pytest

from bot.config import MASK, load_settings, redact
from bot.db import State, utcnow
from bot.worker.failures import is_outage
from composer.client import HttpComposerClient
from composer.contract import ComposerUnavailable
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
def test_redact_takes_credentials_out_of_urls(text, kept):
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
