"""X's v2 media upload against a local HTTP server answering in X's recorded shapes.

The server is real (http.server on 127.0.0.1), so the requests are what goes over the wire:
the OAuth 1.0a signature header, the initialize JSON, each multipart chunk with its
segment index, finalize, the STATUS polls and the alt-text metadata. The answers are X's
documented v2 shapes (``{"data": {...}}`` and problem documents for errors).
"""

from __future__ import annotations

import json
import threading
import time
from email import policy
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import tweepy

from bot.config import load_settings
from bot.platforms.base import ConfigurationError, Media, PermanentError, RateLimited, TransientError
from bot.platforms.twitter import TwitterPlatform
from bot.platforms.x_media import XMediaUpload

KEYS = {"consumer_key": "ck", "consumer_secret": "cs", "access_token": "at", "access_token_secret": "ats"}


def multipart(content_type: str, body: bytes) -> dict[str, bytes]:
    """The fields of a multipart/form-data body, by name."""
    message = BytesParser(policy=policy.default).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    return {
        part.get_param("name", header="content-disposition"): part.get_payload(decode=True)
        for part in message.iter_parts()
    }


class RecordedX:
    """State and scripted answers of the fake api.x.com media endpoints."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.chunks: dict[str, dict[int, bytes]] = {}
        self.declared: dict[str, dict] = {}
        self.checks_left: dict[str, int] = {}
        self.alt: dict[str, str] = {}
        self.script: list[tuple[str, int, dict | str, dict]] = []  # (path fragment, status, body, headers), once each
        self.fail_processing = False
        self.next_id = 1880028106020515840

    def answer(self, method: str, path: str, query: dict, headers, body: bytes) -> tuple[int, dict | str | None, dict]:
        self.requests.append({"method": method, "path": path, "query": query, "auth": headers.get("Authorization")})
        for i, (fragment, status, answer, extra) in enumerate(self.script):
            if fragment in path:
                del self.script[i]
                return status, answer, extra
        if method == "POST" and path == "/2/media/upload/initialize":
            asked = json.loads(body)
            self.next_id += 1
            media_id = str(self.next_id)
            self.declared[media_id], self.chunks[media_id], self.checks_left[media_id] = asked, {}, 2
            return 200, {"data": {"id": media_id, "media_key": f"7_{media_id}", "expires_after_secs": 86400}}, {}
        parts = path.split("/")
        if method == "POST" and path.endswith("/append"):
            form = multipart(headers["Content-Type"], body)
            self.chunks[parts[4]][int(form["segment_index"])] = form["media"]
            return 200, {"data": {"expires_at": 1767225600}}, {}
        if method == "POST" and path.endswith("/finalize"):
            media_id = parts[4]
            size = sum(len(c) for c in self.chunks[media_id].values())
            if size != self.declared[media_id]["total_bytes"]:
                return (
                    400,
                    {"title": "Invalid Request", "detail": "Segments do not add up to provided total file size."},
                    {},
                )
            info = {"state": "pending", "check_after_secs": 1}
            return 200, {"data": {"id": media_id, "size": size, "processing_info": info}}, {}
        if method == "GET" and path == "/2/media/upload" and query.get("command") == "STATUS":
            media_id = query["media_id"]
            if self.fail_processing:
                error = {"code": 1, "name": "InvalidMedia", "message": "Unsupported video format"}
                return 200, {"data": {"id": media_id, "processing_info": {"state": "failed", "error": error}}}, {}
            self.checks_left[media_id] = max(0, self.checks_left[media_id] - 1)
            if self.checks_left[media_id]:
                info = {"state": "in_progress", "check_after_secs": 1, "progress_percent": 45}
                return 200, {"data": {"id": media_id, "processing_info": info}}, {}
            return (
                200,
                {"data": {"id": media_id, "processing_info": {"state": "succeeded", "progress_percent": 100}}},
                {},
            )
        if method == "POST" and path == "/2/media/metadata":
            asked = json.loads(body)
            self.alt[asked["id"]] = asked["metadata"]["alt_text"]["text"]
            return 200, {"data": {"id": asked["id"], "associated_metadata": asked["metadata"]}}, {}
        return 404, {"title": "Not Found Error", "detail": f"no route {method} {path}"}, {}


@pytest.fixture
def x():
    state = RecordedX()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            url = urlsplit(self.path)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            status, answer, extra = state.answer(self.command, url.path, query, self.headers, body)
            payload = (
                answer.encode() if isinstance(answer, str) else b"" if answer is None else json.dumps(answer).encode()
            )
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in extra.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = _serve

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    yield state
    server.shutdown()


def uploader(x: RecordedX, chunk_bytes: int = 1000, wait: float = 3.0) -> XMediaUpload:
    auth = tweepy.OAuth1UserHandler(**KEYS).apply_auth()
    return XMediaUpload(auth, base_url=x.base_url, timeout=10, max_rate_limit_wait=wait, chunk_bytes=chunk_bytes)


@pytest.fixture
def video(tmp_path) -> Path:
    path = tmp_path / "piece.mp4"
    path.write_bytes(bytes(range(256)) * 13 + b"tail")  # 3,332 bytes: four chunks of 1,000
    return path


def platform(x: RecordedX) -> TwitterPlatform:
    client = tweepy.Client(bearer_token="b", **KEYS)
    return TwitterPlatform(client, uploader(x), max_rate_limit_wait=3, poll_interval=0.01)


def test_a_video_goes_up_in_signed_chunks_gets_its_alt_text_and_is_waited_for(x, video):
    bot = platform(x)
    media_id = bot.upload(Media(video, "video/mp4", "A calm folk piano piece"))
    assert x.declared[media_id] == {"media_type": "video/mp4", "total_bytes": 3332, "media_category": "tweet_video"}
    assert sorted(x.chunks[media_id]) == [0, 1, 2, 3]
    assert b"".join(x.chunks[media_id][i] for i in range(4)) == video.read_bytes()
    assert x.alt[media_id] == "A calm folk piano piece"
    assert all(
        r["auth"] and r["auth"].startswith("OAuth ") and 'oauth_consumer_key="ck"' in r["auth"] for r in x.requests
    )
    assert [r["path"].rsplit("/", 1)[-1] for r in x.requests] == [
        "initialize", "append", "append", "append", "append", "finalize", "metadata"
    ]  # fmt: skip
    bot.wait_for_media(media_id, timeout=30)
    assert x.checks_left[media_id] == 0
    statuses = [r for r in x.requests if r["method"] == "GET"]
    assert len(statuses) == 2 and all(r["query"] == {"command": "STATUS", "media_id": media_id} for r in statuses)


def test_processing_that_fails_is_a_permanent_error_and_a_slow_one_a_transient_one(x, video):
    bot = platform(x)
    media_id = bot.upload(Media(video, "video/mp4", "alt"))
    x.checks_left[media_id] = 10**6
    with pytest.raises(TransientError):
        bot.wait_for_media(media_id, timeout=0.2)
    x.fail_processing = True
    with pytest.raises(PermanentError, match="could not process"):
        bot.wait_for_media(media_id, timeout=30)


def test_a_refused_alt_text_does_not_stop_the_piece(x, video):
    x.script = [("/2/media/metadata", 400, {"title": "Invalid Request", "detail": "alt text too long"}, {})]
    media_id = platform(x).upload(Media(video, "video/mp4", "alt"))
    assert media_id in x.declared and media_id not in x.alt


@pytest.mark.parametrize(
    "status,body,error,says",
    [
        (503, {"title": "Service Unavailable", "detail": "try later"}, TransientError, "HTTP 503"),
        (500, "<html>oops</html>", TransientError, "HTTP 500"),
        (401, {"title": "Unauthorized", "detail": "Unauthorized"}, ConfigurationError, "credentials"),
        (403, {"title": "Forbidden", "detail": "not permitted to upload"}, PermanentError, "not permitted"),
        (
            400,
            {"errors": [{"message": "media_type is invalid"}], "title": "Invalid Request"},
            PermanentError,
            "media_type",
        ),
        (200, "{not json", TransientError, "garbled"),
    ],
)
def test_errors_are_sorted_as_the_worker_understands_them(x, video, status, body, error, says):
    x.script = [("/initialize", status, body, {})]
    with pytest.raises(error, match=says):
        uploader(x).upload(video, "video/mp4")


def test_a_short_rate_limit_is_waited_out_and_a_long_one_reschedules(x, video):
    x.script = [("/append", 429, {"title": "Too Many Requests"}, {"x-rate-limit-reset": str(int(time.time()) + 1)})]
    media_id = uploader(x).upload(video, "video/mp4")
    assert sorted(x.chunks[media_id]) == [0, 1, 2, 3]  # the refused chunk was sent again
    x.script = [
        ("/initialize", 429, {"title": "Too Many Requests"}, {"x-rate-limit-reset": str(int(time.time()) + 900)})
    ]
    with pytest.raises(RateLimited) as raised:
        uploader(x).upload(video, "video/mp4")
    assert raised.value.retry_after > 800


def test_an_unreachable_server_is_transient(video):
    from bot.local_mastodon import free_port

    closed = XMediaUpload(None, base_url=f"http://127.0.0.1:{free_port()}", timeout=2)
    with pytest.raises(TransientError):
        closed.upload(video, "video/mp4")


def test_the_platform_built_from_settings_uploads_through_v2_only(tmp_path):
    keys = {f"twitter_{k}": "secret" for k in ("api_key", "api_secret", "access_token", "access_token_secret")}
    settings = load_settings(
        env_file=None, bot_platform="twitter", twitter_bearer_token="b", database_url="sqlite://", **keys
    )
    built = TwitterPlatform.from_settings(settings)
    assert built.media.base_url == "https://api.x.com" and not hasattr(built, "api")
    source = Path(__file__).parents[1] / "bot" / "platforms"
    assert "1.1/media" not in (source / "twitter.py").read_text() + (source / "x_media.py").read_text()
    assert "media_upload" not in (source / "twitter.py").read_text()
