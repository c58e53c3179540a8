"""Twitter/X: v2 mentions and replies through tweepy, v2 chunked upload of the MP4 the composer renders.

X has no Idempotency-Key, so exactly-once rests on the stored reply id and on looking
for our reply (our tweets since the mention, replying to it) before posting again.
X takes no bare audio: the piece goes up as a video (H.264 + AAC, made by composer.audio.render),
through X's v2 media endpoints (bot/platforms/x_media.py; X deprecated the v1.1 upload and
tweepy has no v2 one).
Rate limits come back as x-rate-limit-reset (epoch seconds) on a 429.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import requests
import tweepy

from bot.config import BotSettings
from bot.platforms.base import (
    Author,
    ConfigurationError,
    Identity,
    Media,
    Mention,
    PermanentError,
    Posted,
    RateLimited,
    TransientError,
    id_key,
    poll_until,
    wait_or_raise,
)
from bot.platforms.x_media import XMediaUpload

log = logging.getLogger(__name__)
T = TypeVar("T")

TWEET_FIELDS = ["created_at", "conversation_id", "in_reply_to_user_id", "entities", "referenced_tweets", "lang"]
USER_FIELDS = ["description", "name", "username", "url"]
ALT_TEXT_LIMIT = 1000
FIND_REPLY_PAGES = 32  # X keeps a timeline of 3,200 tweets: 32 pages of 100


class TwitterPlatform:
    name = "twitter"
    audio_format = "mp4"
    max_chars = 280

    def __init__(
        self, client: tweepy.Client, media: XMediaUpload, max_rate_limit_wait: float = 60.0, poll_interval: float = 1.0
    ):
        self.client, self.media = client, media
        self.max_rate_limit_wait = max_rate_limit_wait
        self.poll_interval = poll_interval
        self.me: Identity | None = None

    @classmethod
    def from_settings(cls, settings: BotSettings) -> TwitterPlatform:
        def secret(value: Any) -> str | None:
            return value.get_secret_value() if value is not None else None

        keys = dict(
            consumer_key=secret(settings.twitter_api_key),
            consumer_secret=secret(settings.twitter_api_secret),
            access_token=secret(settings.twitter_access_token),
            access_token_secret=secret(settings.twitter_access_token_secret),
        )
        client = tweepy.Client(bearer_token=secret(settings.twitter_bearer_token), wait_on_rate_limit=False, **keys)
        media = XMediaUpload(
            tweepy.OAuth1UserHandler(**keys).apply_auth(),
            timeout=settings.bot_request_timeout_seconds,
            max_rate_limit_wait=settings.bot_max_rate_limit_wait_seconds,
        )
        return cls(client, media, settings.bot_max_rate_limit_wait_seconds)

    def call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        for _ in range(3):
            try:
                return fn(*args, **kwargs)
            except tweepy.TooManyRequests as exc:
                wait_or_raise(what, _reset_in(exc.response), self.max_rate_limit_wait)
            except tweepy.Unauthorized as exc:
                raise ConfigurationError(f"{what}: X refused the credentials ({_brief(exc)})") from None
            except tweepy.TwitterServerError as exc:
                raise TransientError(f"{what}: {_brief(exc)}") from None
            except tweepy.HTTPException as exc:  # 400, 403, 404: this request cannot succeed
                raise PermanentError(f"{what}: {_brief(exc)}") from None
            except (requests.RequestException, ValueError) as exc:  # network trouble, a garbled body
                raise TransientError(f"{what}: {type(exc).__name__}: {exc}") from None
            except tweepy.TweepyException as exc:
                raise TransientError(f"{what}: {exc}") from None
        raise RateLimited(f"{what}: still rate limited after waiting", retry_after=self.max_rate_limit_wait)

    def start(self) -> Identity:
        me = self.call("who am I", self.client.get_me, user_auth=True).data
        self.me = Identity(str(me["id"]), me["username"])
        return self.me

    def fetch_mentions(self, cursor: str | None, not_before: datetime) -> tuple[list[Mention], str | None]:
        me = self.me or self.start()
        params: dict[str, Any] = {
            "expansions": ["author_id"],
            "tweet_fields": TWEET_FIELDS,
            "user_fields": USER_FIELDS,
            "max_results": 100,
            "user_auth": True,
        }
        if cursor:
            params["since_id"] = cursor
        else:
            params["start_time"] = not_before.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        mentions: list[Mention] = []
        newest = cursor
        while True:
            page = self.call("mentions", self.client.get_users_mentions, me.id, **params)
            users = {str(u["id"]): u for u in (page.includes or {}).get("users", [])}
            for tweet in page.data or []:
                mentions.append(to_mention(tweet, users, me))
            meta = page.meta or {}
            if meta.get("newest_id") and (newest is None or id_key(meta["newest_id"]) > id_key(newest)):
                newest = meta["newest_id"]
            if not meta.get("next_token"):
                break
            params["pagination_token"] = meta["next_token"]
        return sorted(mentions, key=lambda m: id_key(m.id)), newest

    def upload(self, media: Media) -> str:
        media_id = self.media.upload(media.path, media.mime or "video/mp4", "tweet_video")
        try:
            self.media.alt_text(media_id, media.description[:ALT_TEXT_LIMIT])
        except PermanentError as exc:  # alt text is a courtesy X may refuse for some media; the piece still goes
            log.warning("media %s: alt text refused (%s)", media_id, exc)
        return media_id

    def wait_for_media(self, media_id: str, timeout: float) -> None:
        def probe() -> float | None:
            info = self.media.status(media_id)
            state = info.get("state", "succeeded")
            if state == "succeeded":
                return None
            if state == "failed":
                raise PermanentError(f"media {media_id}: X could not process it: {info.get('error')}")
            return min(float(info.get("check_after_secs", 1)), 10)  # X's hint, capped at 10 intervals

        poll_until(f"media {media_id}", probe, timeout, self.poll_interval)

    def find_reply(self, mention: Mention | str, me: Identity) -> Posted | None:
        """Our tweets since the mention, every page (a busy bot posts more than 100 between two tries)."""
        mention_id = mention.id if isinstance(mention, Mention) else mention
        params: dict[str, Any] = {
            "since_id": mention_id,
            "max_results": 100,
            "tweet_fields": ["referenced_tweets"],
            "user_auth": True,
        }
        for _ in range(FIND_REPLY_PAGES):
            page = self.call("our recent tweets", self.client.get_users_tweets, me.id, **params)
            for tweet in page.data or []:
                for ref in tweet.get("referenced_tweets") or []:
                    if ref.get("type") == "replied_to" and str(ref.get("id")) == mention_id:
                        return Posted(str(tweet["id"]), f"https://x.com/{me.acct}/status/{tweet['id']}")
            token = (page.meta or {}).get("next_token")
            if not token:
                return None
            params["pagination_token"] = token
        log.warning("mention %s: no reply in %d pages of our tweets", mention_id, FIND_REPLY_PAGES)
        return None

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
        """Tweets are public, whatever the request's visibility; X has no idempotency key and no content warning."""
        mention_id = to.id if isinstance(to, Mention) else to
        response = self.call(
            "post reply",
            self.client.create_tweet,
            text=text,
            in_reply_to_tweet_id=mention_id,
            media_ids=media_ids or None,
            user_auth=True,
        )
        tweet_id = str(response.data["id"])
        acct = self.me.acct if self.me else "i"
        return Posted(tweet_id, f"https://x.com/{acct}/status/{tweet_id}")


def _reset_in(response: Any) -> float:
    try:
        reset = float(response.headers.get("x-rate-limit-reset", 0))
    except (AttributeError, TypeError, ValueError):
        return 60.0
    return max(0.0, reset - time.time()) + 0.5 if reset else 60.0


def _brief(exc: tweepy.HTTPException) -> str:
    status = getattr(exc.response, "status_code", "?")
    messages = "; ".join(str(m) for m in (exc.api_messages or [])[:3])
    return f"HTTP {status}" + (f": {messages}" if messages else "")


def _when(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str):
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    return datetime.now(UTC)


def to_mention(tweet: Any, users: dict[str, Any], me: Identity) -> Mention:
    author_id = str(tweet["author_id"])
    user = users.get(author_id) or {"id": author_id, "username": author_id}
    replied_to = next((r for r in tweet.get("referenced_tweets") or [] if r.get("type") == "replied_to"), None)
    mentions = (tweet.get("entities") or {}).get("mentions") or []
    addressed = tuple(str(m["id"]) for m in mentions if m.get("id"))
    if not addressed and any(str(m.get("username", "")).lower() == me.acct.lower() for m in mentions):
        addressed = (me.id,)
    return Mention(
        id=str(tweet["id"]),
        author=Author(
            id=author_id,
            acct=user["username"],
            display_name=user.get("name") or "",
            url=f"https://x.com/{user['username']}",
            bot=False,  # X exposes no bot flag; #nobot in the bio still counts
            note=user.get("description") or "",
        ),
        text=tweet.get("text") or "",
        created_at=_when(tweet.get("created_at")),
        url=f"https://x.com/{user['username']}/status/{tweet['id']}",
        visibility="public",
        language=tweet.get("lang"),
        in_reply_to_id=str(replied_to["id"]) if replied_to else None,
        in_reply_to_account_id=str(tweet["in_reply_to_user_id"]) if tweet.get("in_reply_to_user_id") else None,
        mentioned_ids=addressed,
    )
