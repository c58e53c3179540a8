"""The Mastodon platform on recorded response shapes (202/206 media processing, errors, rate limits),
and the reply texts and alt text it carries."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from requests.adapters import BaseAdapter

from bot.config import load_settings
from bot.describe import describe
from bot.platforms.base import ConfigurationError, Media, PermanentError, TransientError, narrower_visibility
from bot.platforms.mastodon import MastodonPlatform
from bot.replies import help_reply, limit_reply, not_followed, piece_reply, sorry_reply
from composer.codec.events import Note

# As Mastodon 4.3 answers POST /api/v2/media for audio: 202, url still null.
PROCESSING = {
    "id": "110",
    "type": "audio",
    "url": None,
    "preview_url": None,
    "remote_url": None,
    "description": "alt",
    "blurhash": None,
    "meta": {},
}
INSTANCE = {"version": "4.3.2", "api_versions": {"mastodon": 2}, "uri": "social.example"}
READY = PROCESSING | {"url": "https://files.example/110.mp3", "preview_url": "https://files.example/110.png"}


class Recorded(BaseAdapter):
    """Answers requests from a list of (method, path suffix, status, body, headers), in order."""

    def __init__(self, answers: list[tuple[str, str, int, object, dict[str, str]]]):
        super().__init__()
        self.answers = list(answers)
        self.seen: list[requests.PreparedRequest] = []

    def send(self, request, **kwargs):
        if "/instance" in request.path_url:
            method, suffix, status, body, headers = request.method, "", 200, INSTANCE, {}
        else:
            self.seen.append(request)
            method, suffix, status, body, headers = self.answers.pop(0)
        assert request.method == method and request.path_url.split("?")[0].endswith(suffix), request.path_url
        response = requests.Response()
        response.status_code = status
        response._content = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        response.headers.update({"Content-Type": "application/json", **headers})
        response.url, response.request, response.reason = request.url, request, "recorded"
        return response

    def close(self) -> None:
        pass


def platform(answers) -> tuple[MastodonPlatform, Recorded]:
    adapter = Recorded(answers)
    session = requests.Session()
    session.mount("https://", adapter)
    settings = load_settings(
        mastodon_api_base_url="https://social.example",
        mastodon_access_token="tok",
        bot_max_rate_limit_wait_seconds=3,
    )
    result = MastodonPlatform.from_settings(settings, session=session)
    result.api.retrieve_mastodon_version(fail_hard=True)  # what start() does first
    result.poll_interval = 0.01
    return result, adapter


def answer(method: str, suffix: str, status: int = 200, body: object = None, **headers: str):
    return (method, suffix, status, {} if body is None else body, headers)


def test_upload_then_wait_while_processing(tmp_path: Path):
    audio = tmp_path / "piece.mp3"
    audio.write_bytes(b"ID3" + b"\0" * 100)
    mastodon, adapter = platform(
        [
            answer("POST", "/api/v2/media", 202, PROCESSING),
            answer("GET", "/api/v1/media/110", 206, PROCESSING),
            answer("GET", "/api/v1/media/110", 206, PROCESSING),
            answer("GET", "/api/v1/media/110", 200, READY),
        ]
    )
    media_id = mastodon.upload(Media(audio, "audio/mpeg", "A calm folk piece"))
    assert media_id == "110"
    assert b"A calm folk piece" in adapter.seen[0].body
    mastodon.wait_for_media(media_id, timeout=5)
    assert not adapter.answers


def test_media_still_processing_at_the_timeout_is_transient():
    mastodon, _ = platform([answer("GET", "/api/v1/media/110", 206, PROCESSING)] * 50)
    with pytest.raises(TransientError, match="still processing"):
        mastodon.wait_for_media("110", timeout=0.05)


def test_posting_with_unprocessed_media_422_is_permanent_but_5xx_and_garbage_are_transient():
    error = {"error": "Validation failed: Media attachments are still being processed"}
    mastodon, _ = platform(
        [
            answer("POST", "/api/v1/statuses", 503, {"error": "unavailable"}),
            answer("POST", "/api/v1/statuses", 200, '{"id": "12'),
            answer("POST", "/api/v1/statuses", 422, error),
            answer("POST", "/api/v1/statuses", 404, {"error": "Record not found"}),
            answer("POST", "/api/v1/statuses", 401, {"error": "The access token is invalid"}),
        ]
    )
    mastodon.quick_retry_pauses = ()  # each answer classified alone (the quick retries: the next test)
    kwargs = {"visibility": "public", "idempotency_key": "k"}
    with pytest.raises(TransientError):
        mastodon.reply("1", "hi", **kwargs)
    with pytest.raises(TransientError):
        mastodon.reply("1", "hi", **kwargs)
    with pytest.raises(PermanentError, match="422"):
        mastodon.reply("1", "hi", **kwargs)
    with pytest.raises(PermanentError, match="not found"):
        mastodon.reply("1", "hi", **kwargs)
    with pytest.raises(ConfigurationError):
        mastodon.reply("1", "hi", **kwargs)


def test_a_5xx_or_garbage_is_tried_again_at_once_with_the_same_idempotency_key():
    mastodon, adapter = platform(
        [
            answer("POST", "/api/v1/statuses", 503, {"error": "unavailable"}),
            answer("POST", "/api/v1/statuses", 200, '{"id": "12'),
            answer("POST", "/api/v1/statuses", 200, {"id": "77", "url": "https://s/77"}),
        ]
    )
    mastodon.quick_retry_pauses = (0.0, 0.0)
    assert mastodon.reply("1", "hi", visibility="public", idempotency_key="k").id == "77"
    assert [r.headers["Idempotency-Key"] for r in adapter.seen] == ["k", "k", "k"]


def test_reply_sends_the_idempotency_key_and_thread():
    mastodon, adapter = platform([answer("POST", "/api/v1/statuses", 200, {"id": "77", "url": "https://s/77"})])
    posted = mastodon.reply("5", "@alice hi", visibility="direct", idempotency_key="band-mastodon-5", media_ids=["9"])
    assert posted.id == "77" and posted.url == "https://s/77"
    request = adapter.seen[0]
    assert request.headers["Idempotency-Key"] == "band-mastodon-5"
    body = request.body if isinstance(request.body, str) else request.body.decode()
    assert "in_reply_to_id=5" in body and "visibility=direct" in body and "media_ids" in body


def test_429_is_waited_out_until_the_reset():
    reset = str(int(time.time()) + 1)
    mastodon, _ = platform(
        [
            answer("GET", "/api/v1/media/1", 429, {"error": "Too many requests"}, **{"X-RateLimit-Reset": reset}),
            answer("GET", "/api/v1/media/1", 200, READY),
        ]
    )
    started = time.monotonic()
    mastodon.wait_for_media("1", timeout=5)
    assert time.monotonic() - started >= 0.5


def test_a_long_429_becomes_a_retry_after():
    reset = str(int(time.time()) + 600)
    mastodon, _ = platform(
        [answer("GET", "/api/v1/media/1", 429, {"error": "Too many requests"}, **{"X-RateLimit-Reset": reset})]
    )
    with pytest.raises(TransientError) as caught:
        mastodon.wait_for_media("1", timeout=5)
    assert 590 < caught.value.retry_after < 610


def test_visibility_is_never_wider_than_the_mention():
    assert narrower_visibility("public") == "public"
    assert narrower_visibility("unlisted") == "unlisted"
    assert narrower_visibility("private") == "private"
    assert narrower_visibility("direct") == "direct"
    assert narrower_visibility("something-new") == "direct"
    assert narrower_visibility("public", ceiling="unlisted") == "unlisted"


Check = Callable[[str], bool]


@pytest.mark.parametrize("acct", ["a", "someone_with_a_long_name@a.very.long.instance.domain.example"])
def test_replies_fit_in_500_characters(acct):
    link = "https://band.example/pieces/" + "f" * 36
    notes = ["pieces are 5–120 s long", "that seed is too large, so I picked a new one"]
    texts = [
        piece_reply(acct, "classical", 75.2, "v12", 2**63 - 1, link, notes),
        piece_reply(acct, "folk", 30, "v1", 7, link, continuation=True, limit=200),
        help_reply(acct, ["classical", "folk", "pop"], "x" * 300),
        limit_reply(acct, 3),
        sorry_reply(acct),
    ]
    for text in texts:
        assert text.startswith(f"@{acct} ") and len(text) <= 500
    assert texts[0].endswith(link) and "1:15 min" in texts[0] and "seed 9223372036854775807" in texts[0]
    assert texts[1].endswith(link) and len(texts[1]) <= 200
    assert 'a key ("in D minor"), a pace ("busy")' in help_reply(acct, ["folk"])


@pytest.mark.parametrize("limit", [500, 280, 200])
@pytest.mark.parametrize("acct", ["a", "someone_with_a_long_name@a.very.long.instance.domain.example"])
def test_a_piece_reply_names_the_key_asked_and_owns_up_to_a_model_that_could_not_follow_it(acct, limit):
    link = "https://band.example/pieces/" + "f" * 36
    caveat = not_followed("classical", "F♯ minor", 12.0, "A major")
    assert caveat == "the classical model can't pick keys or set the pace yet, so it chose A major"
    assert not_followed("folk", "D minor", None, None) == "the folk model can't pick keys yet"
    assert not_followed("folk", None, 2.0, "C major") == "the folk model can't set the pace yet"
    again = "wild calm classical in F♯ minor seed 9223372036854775807"
    notes = ["pieces are 5–120 s long", "that seed is too large, so I picked a new one"]
    text = piece_reply(acct, "classical", 75.2, "v12", 2**63 - 1, link, notes, False, limit, "F♯ minor", caveat, again)
    assert len(text) <= limit and text.startswith(f"@{acct} Here is your classical piece in F♯ minor: 1:15 min")
    assert text.endswith(link)
    if limit == 500:
        assert f"({caveat})" in text and f'Ask "{again}" to hear it again' in text
    plain = piece_reply(acct, "folk", 30, "v1", 7, link, limit=limit)
    assert "Here is your folk piece: 30 s" in plain and "can't" not in plain


def test_alt_text_describes_the_composers_summary_of_the_notes():
    from composer.analysis.summary import summarize
    from composer.codec.keys import estimate_key
    from composer.contract import MusicSummary

    scale = [60, 62, 64, 65, 67, 69, 71, 72]  # C major, middle register, steady eighths
    notes = [Note(p, 64, i * 0.5, i * 0.5 + 0.45) for i, p in enumerate(scale * 4)]
    summary = summarize(notes, 16.0)
    assert (summary.notes, summary.lowest_pitch, summary.highest_pitch, summary.key) == (32, 60, 72, "C major")
    text = describe(MusicSummary.from_dict(summary.to_dict()), "folk", 16.0)  # as it travels: JSON and back
    assert text.startswith("A 16-second folk piano piece")
    assert "unhurried (2.0 notes a second)" in text and "middle register (C4 to C5)" in text
    assert "moderately loud" in text and "C major" in text
    assert estimate_key([Note(p, 64, 0, 1) for p in (57, 60, 64, 69, 72, 76)])[0].name == "A minor"
    assert describe(summarize([], 5), "pop", 5).endswith("almost silent.")
    unclear = MusicSummary(30, 2.0, 60, 72, 66.0, 64.0, key="C major", key_clarity=0.4)
    assert "C major" not in describe(unclear, "folk", 15)
    assert "in or around C major, as asked." in describe(summary, "folk", 16.0, asked_key="C major")
    assert "in or around C major (D minor was asked for)." in describe(summary, "folk", 16.0, asked_key="D minor")
    assert "in no clear key (E♭ major was asked for)." in describe(unclear, "folk", 15, asked_key="E♭ major")


def test_wait_or_raise_sleeps_through_a_short_limit_and_raises_on_a_long_one(monkeypatch):
    from bot.platforms import base

    slept: list[float] = []
    monkeypatch.setattr(base.time, "sleep", slept.append)
    base.wait_or_raise("post reply", 2.5, limit=3)
    assert slept == [2.5]
    with pytest.raises(base.RateLimited) as raised:
        base.wait_or_raise("upload media", 120.0, limit=3, reason="no requests left")
    assert raised.value.retry_after == 120.0 and str(raised.value) == "upload media: no requests left for 120 s"
    assert slept == [2.5]  # a long wait is never slept through


def test_poll_until_waits_the_probes_intervals_and_gives_up_at_the_timeout(monkeypatch):
    from bot.platforms import base

    clock = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += seconds

    monkeypatch.setattr(base.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(base.time, "sleep", sleep)
    answers = iter([2.0, 1.0, None])
    base.poll_until("media 7", lambda: next(answers), timeout=10, interval=0.5)
    assert slept == [1.0, 0.5]
    slept.clear()
    with pytest.raises(TransientError) as raised:
        base.poll_until("media 8", lambda: 3.0, timeout=4, interval=1.0)
    assert str(raised.value) == "media 8 still processing after 4 s" and raised.value.retry_after == 30
    assert slept == [3.0, 3.0]  # asked at 0, 3 and 6 s: past the 4 s deadline at the third answer

    def broken() -> float | None:
        raise PermanentError("media 9: X could not process it")

    with pytest.raises(PermanentError):
        base.poll_until("media 9", broken, timeout=10, interval=1.0)
