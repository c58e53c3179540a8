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
from sqlalchemy.exc import OperationalError

from bot.config import load_settings
from bot.db import Cursor, MentionRequest, State, make_engine, session_factory
from bot.migrate import upgrade
from bot.platforms.base import PermanentError, TransientError
from bot.platforms.twitter import TwitterPlatform
from bot.worker import Worker
from composer.contract import ComposerUnavailable, CompositionError
from composer.serving.local import LocalComposerClient
from tests.bot_helpers import make_models

ME = {"id": "1000", "username": "band", "name": "Band"}
USERS = {
    "2000": {"id": "2000", "username": "alice", "name": "Alice", "description": "pianist"},
    "3000": {"id": "3000", "username": "quiet", "name": "Quiet", "description": "no bots please #nobot"},
}


class FakeX(BaseAdapter):
    """A small stateful stand-in for api.twitter.com and api.x.com's v2 media upload, answering in X's shapes."""

    def __init__(self):
        super().__init__()
        self.mentions: list[dict] = []
        self.tweets: list[dict] = []
        self.media: dict[str, int] = {}  # id -> status checks left before "succeeded"
        self.alt_text: dict[str, str] = {}
        self.faults: list[tuple[str, int, dict]] = []  # (path fragment, status, headers), used once each
        self.next_id = 5000
        self.queries: list[tuple[str, dict[str, str]]] = []  # (path, query) of every GET

    def mention(
        self, user_id: str, text: str, reply_to: str | None = None, created_at: datetime | None = None, lang: str = "en"
    ) -> str:
        self.next_id += 1
        tweet = {
            "id": str(self.next_id),
            "text": text,
            "author_id": user_id,
            "created_at": (created_at or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            "entities": {"mentions": [{"start": 0, "end": 5, "username": "band", "id": ME["id"]}]},
            "edit_history_tweet_ids": [str(self.next_id)],
            "lang": lang,
        }
        if reply_to:
            tweet["referenced_tweets"] = [{"type": "replied_to", "id": reply_to}]
            if any(t["id"] == reply_to for t in self.tweets):
                tweet["in_reply_to_user_id"] = ME["id"]
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
        if request.method == "GET":
            self.queries.append((path, query))
        if path == "/2/users/me":
            return self.respond(request, 200, {"data": ME})
        if path == f"/2/users/{ME['id']}/mentions":
            since = int(query.get("since_id", 0))
            start = query.get("start_time", "")  # X compares ISO 8601 times; these strings sort the same way
            data = [t for t in self.mentions if int(t["id"]) > since and t["created_at"][:19] >= start[:19]][::-1]
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
            ][::-1]  # newest first, max_results a page, like X
            size, offset = int(query.get("max_results", 10)), int(query.get("pagination_token", 0))
            page = data[offset : offset + size]
            meta = {"result_count": len(page)}
            if offset + size < len(data):
                meta["next_token"] = str(offset + size)
            return self.respond(request, 200, {"data": page, "meta": meta})
        if path == "/2/tweets" and request.method == "POST":
            body = json.loads(request.body)
            for media_id in body.get("media", {}).get("media_ids", []):
                assert self.media.get(media_id) == 0, "tweeted before the media was processed"
            self.next_id += 1
            reply_to = body["reply"]["in_reply_to_tweet_id"]
            tweet = {"id": str(self.next_id), **body, "ref": {"type": "replied_to", "id": reply_to}}
            self.tweets.append(tweet)
            return self.respond(request, 201, {"data": {"id": tweet["id"], "text": body["text"]}})
        if path == "/2/media/upload/initialize":  # X's v2 media upload (the v1.1 one is deprecated)
            body = json.loads(request.body)
            assert body["media_type"] == "video/mp4" and body["media_category"] == "tweet_video"
            self.next_id += 1
            self.media[str(self.next_id)] = 2
            key = f"7_{self.next_id}"
            return self.respond(request, 200, {"data": {"id": str(self.next_id), "media_key": key}})
        if path.startswith("/2/media/upload/") and path.endswith("/append"):
            assert b'name="segment_index"' in _bytes(request.body) and b'name="media"' in _bytes(request.body)
            return self.respond(request, 200, {"data": {"expires_at": 1767225600}})
        if path.startswith("/2/media/upload/") and path.endswith("/finalize"):
            media_id = path.split("/")[4]
            info = {"state": "pending", "check_after_secs": 1}
            return self.respond(request, 200, {"data": {"id": media_id, "processing_info": info}})
        if path == "/2/media/upload" and query.get("command") == "STATUS":
            media_id = query["media_id"]
            left = self.media[media_id]
            if left:
                self.media[media_id] = left - 1
            state = "succeeded" if self.media[media_id] == 0 else "in_progress"
            info = {"state": state, "check_after_secs": 1}
            return self.respond(request, 200, {"data": {"id": media_id, "processing_info": info}})
        if path == "/2/media/metadata":
            body = json.loads(request.body)
            self.alt_text[body["id"]] = body["metadata"]["alt_text"]["text"]
            return self.respond(request, 200, {"data": {"id": body["id"], "associated_metadata": body["metadata"]}})
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


@pytest.fixture(scope="module")
def composer(tmp_path_factory):
    return LocalComposerClient(models_dir=make_models(tmp_path_factory.mktemp("models"), genres=("folk",)))


@pytest.fixture
def make_x(tmp_path, composer):
    """A FakeX with a worker on it; settings overridable per test."""

    def make(**overrides) -> FakeX:
        fake = FakeX()
        url = f"sqlite:///{tmp_path / 'bot.sqlite3'}"
        upgrade(url)
        keys = {f"twitter_{k}": "secret" for k in ("api_key", "api_secret", "access_token", "access_token_secret")}
        settings = load_settings(
            **{
                "bot_platform": "twitter",
                "twitter_bearer_token": "bearer",
                "database_url": url,
                "media_dir": tmp_path / "media",
                "archive_base_url": "https://band.example",
                "bot_default_seconds": 3,
                "bot_min_seconds": 2,
                "bot_max_seconds": 5,
                "bot_retry_base_seconds": 0,
                "bot_max_rate_limit_wait_seconds": 3,
                **keys,
                **overrides,
            }
        )
        platform = TwitterPlatform.from_settings(settings)
        platform.poll_interval = 0.01
        for session in (platform.client.session, platform.media.session):
            session.mount("https://", fake)
        fake.worker = Worker(settings, platform, composer, session_factory(make_engine(url)))
        fake.platform = platform
        return fake

    return make


@pytest.fixture
def x(make_x):
    return make_x()


def rows(x) -> list[MentionRequest]:
    with x.worker.sessions() as session:
        return list(session.scalars(select(MentionRequest).order_by(MentionRequest.id)))


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
    x.mention("2000", "@band folk, from yesterday", created_at=datetime.now(UTC) - timedelta(hours=25))
    first = x.mention("2000", "@band folk")
    not_before = datetime.now(UTC) - timedelta(hours=1)
    mentions, cursor = x.platform.fetch_mentions(None, not_before)
    assert [m.id for m in mentions] == [first] and cursor == first
    query = [q for path, q in x.queries if path.endswith("/mentions")][-1]
    assert query["start_time"] == not_before.strftime("%Y-%m-%dT%H:%M:%SZ") and "since_id" not in query
    assert mentions[0].mentioned_ids == (ME["id"],) and mentions[0].author.acct == "alice"
    second = x.mention("2000", "@band pop", reply_to=first)
    mentions, cursor = x.platform.fetch_mentions(cursor, datetime.now(UTC))
    assert [m.id for m in mentions] == [second] and mentions[0].in_reply_to_id == first


class Composer:
    """The test composer with switches: an outage, and compose calls recorded (or failed) on demand."""

    def __init__(self, real):
        self.real, self.down, self.fail_next, self.seeds = real, False, 0, []

    def genres(self):
        if self.down:
            raise ComposerUnavailable("composer down")
        return self.real.genres()

    def compose(self, genre, **kwargs):
        self.seeds.append(kwargs.get("seed"))
        if self.fail_next:
            self.fail_next -= 1
            raise CompositionError("nearly silent")
        return self.real.compose(genre, **kwargs)


def test_a_composer_outage_keeps_new_mentions_for_the_next_tick(x):
    composer = x.worker.composer = Composer(x.worker.composer)
    composer.down = True
    wanted = x.mention("2000", "@band folk")
    assert x.worker.tick().stored == 0
    assert rows(x) == [] and x.tweets == []  # not stored as failed, nobody answered
    with x.worker.sessions() as session:
        assert session.get(Cursor, ("twitter", "band")) is None  # the cursor stayed: read again next tick
    composer.down = False
    assert x.worker.tick().replied == 1
    assert len(x.replies_to(wanted)) == 1


def test_one_bad_mention_does_not_stop_the_others(x, monkeypatch):
    monkeypatch.setitem(USERS, "4000", {"id": "4000", "username": "u" * 300, "name": "L", "description": "#nobot"})
    x.mention("4000", "@band folk")  # an account name PostgreSQL would refuse in full
    poison = x.mention("2000", "@band folk, the mention the database refuses")
    fine = x.mention("2000", "@band help")
    new_job = x.worker.new_job

    def refused_by_the_database(session, mention, me):
        job = new_job(session, mention, me)
        if mention.id == poison:
            job.parse_notes = [object()]  # fails at INSERT, as a too-long value fails on PostgreSQL
        return job

    monkeypatch.setattr(x.worker, "new_job", refused_by_the_database)
    report = x.worker.tick()
    assert report.replied == 1 and len(x.replies_to(fine)) == 1 and x.replies_to(poison) == []
    stored = {r.mention_id: r for r in rows(x)}
    assert stored[poison].state == State.FAILED and "could not be stored" in stored[poison].reason
    assert max(len(r.requester_acct) for r in stored.values()) == 255
    with x.worker.sessions() as session:
        assert session.get(Cursor, ("twitter", "band")).last_id == fine  # the cursor moved past it


def test_jobs_already_stored_run_when_reading_mentions_fails(x, monkeypatch):
    wanted = x.mention("2000", "@band help")
    x.worker.tick()
    with x.worker.sessions.begin() as session:  # as if a retry were due now
        row = session.scalars(select(MentionRequest)).one()
        row.state, row.reply_id, row.reply_started_at = State.RECEIVED, None, None
    x.tweets.clear()

    def locked(*args):
        raise OperationalError("UPDATE cursors", {}, Exception("database is locked"))

    monkeypatch.setattr(x.worker, "save_cursor", locked)
    assert x.worker.tick().replied == 1
    assert len(x.replies_to(wanted)) == 1


def test_every_kind_of_reply_counts_against_the_per_account_limit(make_x):
    x = make_x(bot_per_account_per_hour=2)
    ids = [x.mention("2000", f"@band help {i}") for i in range(4)]
    x.worker.tick()
    assert [len(x.replies_to(i)) for i in ids] == [1, 1, 1, 0]
    assert "limit" in x.replies_to(ids[2])[0]["text"]


def test_a_reply_to_our_post_that_asks_for_nothing_gets_no_answer(x):
    first = x.mention("2000", "@band folk")
    x.worker.tick()
    (ours,) = x.replies_to(first)
    thanks = x.mention("2000", "@band thanks!", reply_to=ours["id"])
    other_bot = x.mention("2000", "@band I did not understand. Reply help for commands.", reply_to=ours["id"])
    assert x.worker.tick().replied == 0
    assert x.replies_to(thanks) == [] and x.replies_to(other_bot) == [] and len(x.tweets) == 1
    stored = {r.mention_id: r for r in rows(x)}
    assert stored[thanks].state == State.SKIPPED and stored[other_bot].state == State.SKIPPED
    more = x.mention("2000", "@band more please", reply_to=ours["id"])  # a request still gets its piece
    assert x.worker.tick().replied == 1 and x.replies_to(more)[0]["media"]


def test_a_job_taken_over_after_its_lease_ran_out_is_left_alone(x):
    wanted = x.mention("2000", "@band folk")
    composer = x.worker.composer
    real = composer.compose

    def slow_compose(genre, **kwargs):  # outlasts the lease; another worker takes the job meanwhile
        piece = real(genre, **kwargs)
        with x.worker.sessions.begin() as session:
            row = session.scalars(select(MentionRequest)).one()
            row.claimed_by, row.lease_until = "other-worker", datetime.now(UTC) + timedelta(minutes=15)
        return piece

    try:
        composer.compose = slow_compose
        report = x.worker.tick()
    finally:
        del composer.compose
    assert report.replied == 0 and x.replies_to(wanted) == []
    (row,) = rows(x)
    assert row.claimed_by == "other-worker" and row.state == State.RECEIVED and row.composition_id is None


def test_the_row_not_memory_says_whether_a_reply_may_be_out(x, monkeypatch):
    wanted = x.mention("2000", "@band folk")
    wait = x.platform.wait_for_media

    def meanwhile_a_reply_went_out(media_id, timeout):  # e.g. a former life of this worker id posted it
        wait(media_id, timeout)
        x.platform.reply(wanted, "@alice here it is", visibility="public", idempotency_key="k")
        with x.worker.sessions.begin() as session:
            session.scalars(select(MentionRequest)).one().reply_started_at = datetime.now(UTC)

    monkeypatch.setattr(x.platform, "wait_for_media", meanwhile_a_reply_went_out)
    assert x.worker.tick().replied == 1
    (reply,) = x.replies_to(wanted)
    assert rows(x)[0].reply_id == reply["id"]


def test_a_rate_limit_costs_no_attempt_and_waits_for_the_reset_itself(make_x):
    x = make_x(bot_max_attempts=1)
    x.mention("2000", "@band help")
    reset = int(time.time()) + 7200
    x.faults = [("/2/tweets", 429, {"x-rate-limit-reset": str(reset)})]
    assert x.worker.tick().retried == 1
    (row,) = rows(x)
    assert row.state == State.RECEIVED and row.attempts == 0 and x.tweets == []
    assert abs(row.next_attempt_at.timestamp() - reset) < 5


def test_a_requesters_seed_is_never_replaced(x):
    composer = x.worker.composer = Composer(x.worker.composer)
    composer.fail_next = 1
    wanted = x.mention("2000", "@band folk seed 42 - and which genres do you have?")
    x.worker.tick()
    assert composer.seeds == [42]  # not silently retried with another seed
    (reply,) = x.replies_to(wanted)
    assert "Sorry" in reply["text"]
    composer.fail_next = 1
    ours = x.mention("2000", "@band folk")
    x.worker.tick()
    assert len(composer.seeds) >= 3 and composer.seeds[1] != composer.seeds[2]  # a seed we picked may change
    assert f"seed {composer.seeds[-1]}" in x.replies_to(ours)[0]["text"]


def test_replies_are_tagged_english_whatever_the_mention(x, monkeypatch):
    x.mention("2000", "@band folk bitte", lang="de")
    languages = []
    reply = x.platform.reply

    def record(*args, **kwargs):
        languages.append(kwargs.get("language"))
        return reply(*args, **kwargs)

    monkeypatch.setattr(x.platform, "reply", record)
    assert x.worker.tick().replied == 1 and languages == ["en"]


def test_find_reply_reads_every_page_of_our_tweets(x):
    me = x.platform.start()
    mention = x.mention("2000", "@band folk")
    for i in range(150):  # our reply, then 149 more tweets of ours: the reply is on the second page
        x.next_id += 1
        target = mention if i == 0 else str(i)
        ref = {"type": "replied_to", "id": target}
        x.tweets.append({"id": str(x.next_id), "text": "hi", "reply": {"in_reply_to_tweet_id": target}, "ref": ref})
    found = x.platform.find_reply(mention, me)
    assert found is not None and found.id == x.replies_to(mention)[0]["id"]
    pages = [q for path, q in x.queries if path.endswith("/tweets")]
    assert len(pages) == 2 and pages[1]["pagination_token"]
