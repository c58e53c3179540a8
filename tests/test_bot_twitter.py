"""Twitter/X on recorded response shapes (no network): the worker's whole flow, errors and rate limits."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlparse

import pytest
import requests
from requests.adapters import BaseAdapter
from sqlalchemy import select

from bot.config import load_settings
from bot.db import MentionRequest, State, make_engine, session_factory
from bot.migrate import upgrade
from bot.platforms.base import PermanentError, TransientError
from bot.platforms.twitter import TwitterPlatform
from bot.worker import Worker
from composer.client import LocalComposerClient
from tests.bot_helpers import make_models

ME = {"id": "1000", "username": "band", "name": "Band"}
USERS = {
    "2000": {"id": "2000", "username": "alice", "name": "Alice", "description": "pianist"},
    "3000": {"id": "3000", "username": "quiet", "name": "Quiet", "description": "no bots please #nobot"},
}


class FakeX(BaseAdapter):
    """A small stateful stand-in for api.twitter.com and upload.twitter.com, answering in X's shapes."""

    def __init__(self):
        super().__init__()
        self.mentions: list[dict] = []
        self.tweets: list[dict] = []
        self.media: dict[str, int] = {}  # id -> status checks left before "succeeded"
        self.alt_text: dict[str, str] = {}
        self.faults: list[tuple[str, int, dict]] = []  # (path fragment, status, headers), used once each
        self.next_id = 5000

    def mention(self, user_id: str, text: str, reply_to: str | None = None) -> str:
        self.next_id += 1
        tweet = {
            "id": str(self.next_id),
            "text": text,
            "author_id": user_id,
            "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            "entities": {"mentions": [{"start": 0, "end": 5, "username": "band", "id": ME["id"]}]},
            "edit_history_tweet_ids": [str(self.next_id)],
        }
        if reply_to:
            tweet["referenced_tweets"] = [{"type": "replied_to", "id": reply_to}]
        self.mentions.append(tweet)
        return tweet["id"]

    def replies_to(self, tweet_id: str) -> list[dict]:
        return [t for t in self.tweets if t["reply"]["in_reply_to_tweet_id"] == tweet_id]

    def send(self, request, **kwargs):
        url = urlparse(request.url)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        for i, (fragment, status, headers) in enumerate(self.faults):
            if fragment in url.path:
                del self.faults[i]
                return self.respond(request, status, {"title": "fault", "detail": "injected"}, headers)
        path = url.path
        if path == "/2/users/me":
            return self.respond(request, 200, {"data": ME})
        if path == f"/2/users/{ME['id']}/mentions":
            since = int(query.get("since_id", 0))
            data = [t for t in self.mentions if int(t["id"]) > since][::-1]
            meta = {"result_count": len(data)}
            if data:
                meta |= {"newest_id": data[0]["id"], "oldest_id": data[-1]["id"]}
            users = [USERS[uid] for uid in {t["author_id"] for t in data}]
            return self.respond(request, 200, {"data": data, "includes": {"users": users}, "meta": meta})
        if path == f"/2/users/{ME['id']}/tweets":
            since = int(query.get("since_id", 0))
            data = [
                {"id": t["id"], "text": t["text"], "referenced_tweets": [t["ref"]], "edit_history_tweet_ids": [t["id"]]}
                for t in self.tweets
                if int(t["id"]) > since
            ]
            return self.respond(request, 200, {"data": data, "meta": {"result_count": len(data)}})
        if path == "/2/tweets" and request.method == "POST":
            body = json.loads(request.body)
            for media_id in body.get("media", {}).get("media_ids", []):
                assert self.media.get(media_id) == 0, "tweeted before the media was processed"
            self.next_id += 1
            reply_to = body["reply"]["in_reply_to_tweet_id"]
            tweet = {"id": str(self.next_id), **body, "ref": {"type": "replied_to", "id": reply_to}}
            self.tweets.append(tweet)
            return self.respond(request, 201, {"data": {"id": tweet["id"], "text": body["text"]}})
        if path == "/1.1/media/upload.json":
            form = query or {k: v[0] for k, v in parse_qs(_text(request.body)).items()}
            command = form.get("command") or ("APPEND" if b"APPEND" in _bytes(request.body) else None)
            if command == "INIT":
                self.next_id += 1
                self.media[str(self.next_id)] = 2
                return self.respond(request, 202, {"media_id": self.next_id, "media_id_string": str(self.next_id)})
            if command == "APPEND":
                return self.respond(request, 204, None)
            media_id = form["media_id"]
            left = self.media[media_id]
            if command == "STATUS" and left:
                self.media[media_id] = left - 1
            state = "succeeded" if self.media[media_id] == 0 else "in_progress"
            info = {"state": state, "check_after_secs": 1}
            return self.respond(request, 200, {"media_id": int(media_id), "processing_info": info})
        if path == "/1.1/media/metadata/create.json":
            body = json.loads(request.body)
            self.alt_text[body["media_id"]] = body["alt_text"]["text"]
            return self.respond(request, 200, None)
        raise AssertionError(f"unexpected {request.method} {request.url}")

    def respond(self, request, status: int, body, headers: dict | None = None):
        response = requests.Response()
        response.status_code = status
        response._content = b"" if body is None else json.dumps(body).encode()
        response.headers.update({"content-type": "application/json", **(headers or {})})
        response.url, response.request, response.reason = request.url, request, "recorded"
        return response

    def close(self) -> None:
        pass


def _bytes(body) -> bytes:
    return body if isinstance(body, bytes) else (body or "").encode()


def _text(body) -> str:
    try:
        return _bytes(body).decode()
    except UnicodeDecodeError:
        return ""


@pytest.fixture(scope="module")
def composer(tmp_path_factory):
    return LocalComposerClient(models_dir=make_models(tmp_path_factory.mktemp("models"), genres=("folk",)))


@pytest.fixture
def x(tmp_path, composer):
    fake = FakeX()
    url = f"sqlite:///{tmp_path / 'bot.sqlite3'}"
    upgrade(url)
    keys = {f"twitter_{k}": "secret" for k in ("api_key", "api_secret", "access_token", "access_token_secret")}
    settings = load_settings(
        bot_platform="twitter",
        twitter_bearer_token="bearer",
        database_url=url,
        media_dir=tmp_path / "media",
        archive_base_url="https://band.example",
        bot_default_seconds=3,
        bot_min_seconds=2,
        bot_max_seconds=5,
        bot_retry_base_seconds=0,
        bot_max_rate_limit_wait_seconds=3,
        **keys,
    )
    platform = TwitterPlatform.from_settings(settings)
    platform.poll_interval = 0.01
    for session in (platform.client.session, platform.api.session):
        session.mount("https://", fake)
    fake.worker = Worker(settings, platform, composer, session_factory(make_engine(url)))
    fake.platform = platform
    return fake


def test_a_tick_answers_with_video_alt_text_and_link_then_nothing(x):
    wanted = x.mention("2000", "@band a calm folk tune please")
    helped = x.mention("2000", "@band help")
    x.mention("3000", "@band folk")  # #nobot in the bio
    report = x.worker.tick()
    assert report.replied == 2 and report.skipped == 0
    (reply,) = x.replies_to(wanted)
    assert reply["text"].startswith("@alice Here is your folk piece") and len(reply["text"]) <= 280
    assert "https://band.example/pieces/" in reply["text"]
    (media_id,) = reply["media"]["media_ids"]
    assert "folk piano piece" in x.alt_text[media_id]
    (help_reply,) = x.replies_to(helped)
    assert "media" not in help_reply and "folk" in help_reply["text"]
    assert x.worker.tick().replied == 0 and len(x.tweets) == 2
    with x.worker.sessions() as session:
        rows = session.scalars(select(MentionRequest)).all()
        assert {r.state for r in rows} == {State.REPLIED, State.SKIPPED}
        assert all(r.reply_url.startswith("https://x.com/band/status/") for r in rows if r.reply_id)


def test_a_reply_posted_before_a_crash_is_found_not_repeated(x):
    wanted = x.mention("2000", "@band help")
    x.worker.tick()
    with x.worker.sessions.begin() as session:  # as if the worker died after posting, before storing the id
        row = session.scalars(select(MentionRequest)).one()
        row.state, row.reply_id, row.reply_started_at = State.RECEIVED, None, datetime.now(UTC)
    x.worker.tick()
    assert len(x.replies_to(wanted)) == 1
    with x.worker.sessions() as session:
        assert session.scalars(select(MentionRequest)).one().reply_id == x.replies_to(wanted)[0]["id"]


def test_server_errors_and_short_rate_limits_retry_to_exactly_one_reply(x):
    wanted = x.mention("2000", "@band folk")
    reset = str(int(time.time()) + 1)
    x.faults = [("/mentions", 429, {"x-rate-limit-reset": reset}), ("/2/tweets", 503, {}), ("/media/upload", 500, {})]
    started = time.monotonic()
    first = x.worker.tick()
    assert time.monotonic() - started >= 0.5 and first.retried == 1
    for _ in range(3):
        x.worker.tick()
    assert len(x.replies_to(wanted)) == 1 and not x.faults


def test_errors_are_sorted(x):
    x.platform.start()
    x.faults = [("/2/tweets", 403, {}), ("/2/tweets", 429, {"x-rate-limit-reset": str(int(time.time()) + 900)})]
    with pytest.raises(PermanentError, match="403"):
        x.platform.reply("1", "hi", visibility="public", idempotency_key="k")
    with pytest.raises(TransientError) as caught:
        x.platform.reply("1", "hi", visibility="public", idempotency_key="k")
    assert caught.value.retry_after > 800


def test_first_start_asks_only_for_the_lookback_window(x):
    x.platform.start()
    mentions, cursor = x.platform.fetch_mentions(None, datetime.now(UTC) - timedelta(hours=1))
    assert mentions == [] and cursor is None
    first = x.mention("2000", "@band folk")
    mentions, cursor = x.platform.fetch_mentions(None, datetime.now(UTC) - timedelta(hours=1))
    assert [m.id for m in mentions] == [first] and cursor == first
    assert mentions[0].mentioned_ids == (ME["id"],) and mentions[0].author.acct == "alice"
    second = x.mention("2000", "@band pop", reply_to=first)
    mentions, cursor = x.platform.fetch_mentions(cursor, datetime.now(UTC))
    assert [m.id for m in mentions] == [second] and mentions[0].in_reply_to_id == first
