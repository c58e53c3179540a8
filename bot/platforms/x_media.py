"""X's v2 media upload (api.x.com/2/media/...), called directly: tweepy 4.17 speaks only the deprecated v1.1 one.

The chunked flow for a video: ``initialize`` (JSON: type, size, category) gives a media id;
``{id}/append`` takes each chunk as multipart with its ``segment_index``; ``{id}/finalize``
may answer ``processing_info``, and ``GET upload?command=STATUS&media_id=`` is polled until
the state is ``succeeded``; ``POST /2/media/metadata`` sets the alt text. Requests are
signed with the bot account's OAuth 1.0a user keys (the same ones tweepy uses). Answers
are sorted into the platform errors the worker understands, as TwitterPlatform.call does.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import requests

from bot.platforms.base import ConfigurationError, PermanentError, RateLimited, TransientError, wait_or_raise

log = logging.getLogger(__name__)

API = "https://api.x.com"
CHUNK_BYTES = 4 * 1024 * 1024  # X takes up to 5 MB a segment; 4 MiB leaves room for the multipart framing


class XMediaUpload:
    """The v2 media endpoints over one ``requests`` session signed with ``auth``."""

    def __init__(
        self,
        auth: Any,
        base_url: str = API,
        timeout: float = 60.0,
        max_rate_limit_wait: float = 60.0,
        chunk_bytes: int = CHUNK_BYTES,
        session: requests.Session | None = None,
    ):
        self.auth, self.base_url = auth, base_url.rstrip("/")
        self.timeout, self.max_rate_limit_wait, self.chunk_bytes = timeout, max_rate_limit_wait, chunk_bytes
        self.session = session or requests.Session()

    def upload(self, path: Path, media_type: str, category: str = "tweet_video") -> str:
        """Send the file in chunks; the media id (processing may still be running: see ``status``)."""
        size = path.stat().st_size
        started = self._call(
            "upload media (initialize)",
            "POST",
            "/2/media/upload/initialize",
            json={"media_type": media_type, "total_bytes": size, "media_category": category},
        )
        media_id = str(started["id"])
        with open(path, "rb") as media:
            for index, chunk in enumerate(iter(lambda: media.read(self.chunk_bytes), b"")):
                self._call(
                    f"upload media (append {index})",
                    "POST",
                    f"/2/media/upload/{media_id}/append",
                    data={"segment_index": str(index)},
                    files={"media": ("chunk", chunk, "application/octet-stream")},
                )
        self._call("upload media (finalize)", "POST", f"/2/media/upload/{media_id}/finalize")
        return media_id

    def status(self, media_id: str) -> dict[str, Any]:
        """The media's ``processing_info`` (``{}`` when X reports none: nothing left to process)."""
        data = self._call("media status", "GET", "/2/media/upload", params={"command": "STATUS", "media_id": media_id})
        return data.get("processing_info") or {}

    def alt_text(self, media_id: str, text: str) -> None:
        metadata = {"id": media_id, "metadata": {"alt_text": {"text": text}}}
        self._call("alt text", "POST", "/2/media/metadata", json=metadata)

    def _call(self, what: str, method: str, route: str, **kwargs: Any) -> dict[str, Any]:
        """One request's ``data``; the platform error a failure is, after waiting out a short 429."""
        for _ in range(3):
            try:
                response = self.session.request(
                    method, self.base_url + route, auth=self.auth, timeout=self.timeout, **kwargs
                )
            except requests.RequestException as exc:
                raise TransientError(f"{what}: {type(exc).__name__}: {exc}") from None
            if response.status_code == 429:
                wait_or_raise(what, _reset_in(response), self.max_rate_limit_wait)
                continue
            if response.status_code >= 400:
                raise _error(what, response)
            if not response.content:
                return {}
            try:
                body = response.json()
            except ValueError as exc:
                raise TransientError(f"{what}: a garbled answer ({exc})") from None
            if not isinstance(body, dict) or (body.get("errors") and "data" not in body):
                raise PermanentError(f"{what}: {_messages(body)}")
            data = body.get("data")
            return data if isinstance(data, dict) else {}
        raise RateLimited(f"{what}: still rate limited after waiting", retry_after=self.max_rate_limit_wait)


def _error(what: str, response: requests.Response) -> Exception:
    status = response.status_code
    try:
        detail = _messages(response.json())
    except ValueError:
        detail = ""
    message = f"{what}: HTTP {status}" + (f": {detail}" if detail else "")
    if status == 401:
        return ConfigurationError(f"{what}: X refused the credentials (HTTP 401)")
    if status >= 500:
        return TransientError(message)
    return PermanentError(message)


def _messages(body: Any) -> str:
    """X's v2 error text: ``errors[].message``/``detail`` or the problem's ``title``/``detail``."""
    if not isinstance(body, dict):
        return ""
    parts = [str(e.get("message") or e.get("detail") or "") for e in body.get("errors") or [] if isinstance(e, dict)]
    parts += [str(body[k]) for k in ("title", "detail") if body.get(k)]
    return "; ".join(p for p in parts if p)[:300]


def _reset_in(response: requests.Response) -> float:
    import time

    try:
        reset = float(response.headers.get("x-rate-limit-reset", 0))
    except (TypeError, ValueError):
        return 60.0
    return max(0.0, reset - time.time()) + 0.5 if reset else 60.0
