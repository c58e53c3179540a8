"""The platform interface the worker talks to, and the plain data it exchanges.

The worker never sees Mastodon.py or tweepy objects: a platform turns its API's answers
into ``Mention``s and its failures into ``TransientError`` (try again later, perhaps
after ``retry_after`` seconds) or ``PermanentError`` (this request cannot succeed).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)


def id_key(value: str) -> tuple[int, str]:
    """Order numeric string ids (Mastodon's, X's) of any length without converting them."""
    return (len(value), value)


VISIBILITY_ORDER = ("direct", "private", "unlisted", "public")


def narrower_visibility(mention: str, ceiling: str = "public") -> str:
    """The reply's visibility: the mention's, never wider than ``ceiling``."""
    rank = {v: i for i, v in enumerate(VISIBILITY_ORDER)}
    mention = mention if mention in rank else "direct"
    return min(mention, ceiling, key=lambda v: rank.get(v, 0))


class PlatformError(Exception):
    """A platform call that failed."""


class TransientError(PlatformError):
    """Worth retrying: rate limits, 5xx, timeouts, garbled answers, media still processing."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class RateLimited(TransientError):
    """The platform's rate limit: wait until ``retry_after`` (the reset); not the request's fault, no attempt spent."""


class PermanentError(PlatformError):
    """Retrying cannot help (the status is gone, the request is invalid)."""


class ConfigurationError(PlatformError):
    """The platform refuses our credentials: no retry can help, the operator must act."""


class StreamingOff(PlatformError):
    """The server has no streaming API (switched off, or none advertised): the bot polls instead."""


def wait_or_raise(what: str, wait: float, limit: float, reason: str = "rate limited") -> None:
    """Sleep ``wait`` seconds for a rate limit's reset when that is at most ``limit``, else raise RateLimited.

    A short wait is cheaper than a retry; a long one must not hold a worker, so the job is
    retried after the reset instead (``retry_after``).
    """
    if wait > limit:
        raise RateLimited(f"{what}: {reason} for {wait:.0f} s", retry_after=wait)
    log.warning("%s: %s; waiting %.1f s for the reset", what, reason, wait)
    time.sleep(wait)


def poll_until(
    what: str, probe: Callable[[], float | None], timeout: float, interval: float, ramp: float = 1.0
) -> None:
    """Ask ``probe`` until it answers None (ready); TransientError (retry in 30 s) once ``timeout`` has passed.

    Any other answer is how many ``interval``s to wait before asking again (1.0 for a
    steady poll; a platform's own hint, such as X's ``check_after_secs``, otherwise).
    With ``ramp`` < 1 the first waits are that fraction of it, doubling up to the whole:
    a short clip is often ready within a fraction of a second, and a fixed second's
    sleep would be most of its wait. Errors ``probe`` raises pass through.
    """
    deadline = time.monotonic() + timeout
    scale = ramp
    while True:
        again = probe()
        if again is None:
            return
        if time.monotonic() >= deadline:
            raise TransientError(f"{what} still processing after {timeout:.0f} s", retry_after=30)
        time.sleep(again * interval * scale)
        scale = min(1.0, scale * 2)


@dataclass(frozen=True)
class Author:
    id: str
    acct: str  # user@domain for remote accounts, user for local ones: the handle to address
    display_name: str = ""
    url: str | None = None
    bot: bool = False
    note: str = ""  # the bio, as the platform gives it (HTML on Mastodon)


@dataclass(frozen=True)
class Mention:
    id: str  # the status (tweet) that mentions the bot
    author: Author
    text: str  # as posted (HTML on Mastodon)
    created_at: datetime
    notification_id: str | None = None
    url: str | None = None
    visibility: str = "public"  # public, unlisted, private, direct (X: always public)
    spoiler_text: str = ""
    language: str | None = None
    in_reply_to_id: str | None = None
    in_reply_to_account_id: str | None = None
    mentioned_ids: tuple[str, ...] = field(default_factory=tuple)  # accounts addressed, from the API, not the text


@dataclass(frozen=True)
class Media:
    path: Path
    mime: str
    description: str  # alt text
    thumbnail: Path | None = None


@dataclass(frozen=True)
class Posted:
    id: str
    url: str | None = None


@dataclass(frozen=True)
class Identity:
    id: str
    acct: str


class Platform(Protocol):
    name: str
    max_chars: int
    audio_format: str  # what the platform takes: mp3 on Mastodon, mp4 video on X

    def start(self) -> Identity:
        """Log in, announce the account as a bot where the platform has such a flag."""
        ...

    def fetch_mentions(self, cursor: str | None, not_before: datetime) -> tuple[list[Mention], str | None]:
        """Mentions after ``cursor`` (or, without one, since ``not_before``), oldest first, and the new cursor."""
        ...

    def upload(self, media: Media) -> str:
        """Upload ``media`` and return its id (it may still be processing)."""
        ...

    def wait_for_media(self, media_id: str, timeout: float) -> None:
        """Return once the media can be attached; TransientError if it is still processing at ``timeout``."""
        ...

    def find_reply(self, mention: Mention | str, me: Identity) -> Posted | None:
        """Our reply to the mention if one exists (checked before posting again)."""
        ...

    def reply(
        self,
        to: Mention | str,
        text: str,
        *,
        visibility: str,
        idempotency_key: str,
        media_ids: list[str] | None = None,
        spoiler_text: str = "",
        language: str | None = None,
    ) -> Posted:
        """Post ``text`` as a reply in the mention's thread."""
        ...
