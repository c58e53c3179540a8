"""Mastodon through Mastodon.py: mentions by notification cursor, audio replies with alt text.

Rate limits are handled here rather than by Mastodon.py's silent sleeping: a 429 (or a
response saying no requests remain) is logged with its reset time and waited out when
the wait is short; a longer one becomes a TransientError so the job is retried after
the reset instead of a worker sleeping for minutes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import requests
from mastodon import Mastodon, StreamListener
from mastodon.errors import (
    MastodonAPIError,
    MastodonError,
    MastodonNetworkError,
    MastodonNotFoundError,
    MastodonRatelimitError,
    MastodonServerError,
    MastodonUnauthorizedError,
    MastodonVersionError,
)

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
    StreamingOff,
    TransientError,
    id_key,
    poll_until,
    wait_or_raise,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

PAGE = 40  # Mastodon's largest notification page
RETRYABLE_4XX = {408, 409, 425}
QUICK_RETRY_PAUSES = (0.5, 2.0)  # seconds before the second and third try of a call the server fumbled
STREAM_PATH = "/api/v1/streaming/user/notification"  # notifications only: the home timeline is not our business
STREAM_READ_TIMEOUT = 90.0  # servers send a heartbeat every ~15 s: 90 s of silence is a dead link
MEDIA_POLL_RAMP = 0.1  # the first media status check after 0.1 s, doubling to poll_interval: no fixed second's sleep


class MastodonPlatform:
    name = "mastodon"
    audio_format = "mp3"

    def __init__(
        self,
        api: Mastodon,
        max_rate_limit_wait: float = 60.0,
        poll_interval: float = 1.0,
        max_chars: int = 500,
        streaming_url: str | None = None,
    ):
        self.api = api
        self.streaming_url = streaming_url  # overrides the one the server advertises
        self.max_rate_limit_wait = max_rate_limit_wait
        self.poll_interval = poll_interval
        self.max_chars = max_chars
        self.quick_retry_pauses: tuple[float, ...] = QUICK_RETRY_PAUSES
        self.me: Identity | None = None
        self._ready_media: set[str] = set()  # uploads whose answer already had a URL: nothing to wait for

    @classmethod
    def from_settings(cls, settings: BotSettings, session: requests.Session | None = None) -> MastodonPlatform:
        token = settings.mastodon_access_token.get_secret_value() if settings.mastodon_access_token else None
        api = Mastodon(
            access_token=token,
            api_base_url=settings.mastodon_api_base_url,
            ratelimit_method="throw",
            request_timeout=settings.bot_request_timeout_seconds,
            session=session,
            user_agent="band-bot (Mastodon.py)",
        )
        return cls(
            api,
            settings.bot_max_rate_limit_wait_seconds,
            max_chars=settings.bot_reply_limit_chars,
            streaming_url=settings.mastodon_streaming_url,
        )

    # --- calls -----------------------------------------------------------------

    def call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """One API call with errors sorted into transient and permanent, short rate limits waited out, and
        a server error or garbled answer tried again after a moment (QUICK_RETRY_PAUSES) before the job
        is put off: most are single hiccups, and the job's own backoff starts at half a minute. Posts are
        safe to repeat: a status carries its idempotency key."""
        quick_pauses = list(self.quick_retry_pauses)
        for _ in range(4 + len(quick_pauses)):
            self._respect_remaining(what)
            try:
                return fn(*args, **kwargs)
            except MastodonRatelimitError:
                wait_or_raise(what, self._until_reset(), self.max_rate_limit_wait)
            except MastodonUnauthorizedError as exc:
                raise ConfigurationError(f"{what}: the access token was refused ({_status(exc)})") from None
            except MastodonNotFoundError as exc:
                raise PermanentError(f"{what}: not found ({_message(exc)})") from None
            except MastodonServerError as exc:
                self._pause_or_raise(quick_pauses, TransientError(f"{what}: {type(exc).__name__}: {_message(exc)}"))
            except MastodonNetworkError as exc:  # a timeout has cost its time already: the job's backoff decides
                raise TransientError(f"{what}: {type(exc).__name__}: {_message(exc)}") from None
            except MastodonAPIError as exc:
                status = _status(exc)
                if status is None:  # a garbled body
                    self._pause_or_raise(quick_pauses, TransientError(f"{what}: {_message(exc)}"))
                elif status in RETRYABLE_4XX:
                    raise TransientError(f"{what}: {_message(exc)}") from None
                else:
                    raise PermanentError(f"{what}: HTTP {status}: {_message(exc)}") from None
            except MastodonError as exc:
                raise TransientError(f"{what}: {type(exc).__name__}: {exc}") from None
        raise RateLimited(f"{what}: still rate limited after waiting", retry_after=self._until_reset())

    @staticmethod
    def _pause_or_raise(pauses: list[float], error: TransientError) -> None:
        """Sleep the next of ``pauses`` (used up one by one), or raise ``error`` when none is left."""
        if not pauses:
            raise error
        pause = pauses.pop(0)
        log.warning("%s; trying again in %.1f s", error, pause)
        time.sleep(pause)

    def _until_reset(self) -> float:
        reset = getattr(self.api, "ratelimit_reset", None)
        return max(0.0, float(reset) - time.time()) + 0.5 if reset else 5.0

    def _respect_remaining(self, what: str) -> None:
        remaining = getattr(self.api, "ratelimit_remaining", None)
        if remaining is not None and remaining <= 0:
            wait_or_raise(what, self._until_reset(), self.max_rate_limit_wait, "no requests left")
            self.api.ratelimit_remaining = 1  # the reset has passed; the next answer says the truth

    # --- the interface ----------------------------------------------------------

    def start(self) -> Identity:
        # Learn the server's version once, failing loudly: Mastodon.py otherwise guesses on a failed
        # instance fetch (and may recurse without end), then picks endpoints by the guess.
        self.call("server version", self.api.retrieve_mastodon_version, fail_hard=True)
        me = self.call("verify credentials", self.api.account_verify_credentials)
        if not me.get("bot"):
            self.call("set the bot flag", self.api.account_update_credentials, bot=True)
            log.info("marked @%s as a bot account", me["acct"])
        self._accept_private_mentions()
        self.me = Identity(str(me["id"]), me["acct"])
        return self.me

    def _accept_private_mentions(self) -> None:
        """Mastodon 4.3+ filters private mentions from strangers into requests; have them delivered."""
        try:
            self.call(
                "notification policy",
                self.api.update_notifications_policy,
                for_private_mentions="accept",
                for_not_following="accept",
                for_not_followers="accept",
                for_new_accounts="accept",
            )
        except (PermanentError, TransientError, MastodonVersionError) as exc:
            log.info("could not set the notification policy (%s); filtered mentions are accepted per tick", exc)

    def _accept_filtered(self, not_before: datetime) -> list[Any]:
        """Accept pending notification requests; return their mention notifications (ids may be old)."""
        try:
            pending = self.call("notification requests", self.api.notification_requests, limit=PAGE)
        except (PermanentError, MastodonVersionError):
            return []
        found = []
        for item in pending or []:
            self.call("accept notification request", self.api.accept_notification_request, item["id"])
            account = item.get("account") or {}
            if account.get("id") is None:
                continue
            notes = self.call(
                "notifications from an accepted account",
                self.api.notifications,
                account_id=account["id"],
                types=["mention"],
                limit=PAGE,
            )
            found.extend(n for n in notes or [] if _when(n) >= not_before)
        return found

    def fetch_mentions(self, cursor: str | None, not_before: datetime) -> tuple[list[Mention], str | None]:
        notes: list[Any] = []
        if cursor is None:  # first start: walk back from the newest to the lookback horizon
            max_id = None
            while True:
                page = self.call("notifications", self.api.notifications, types=["mention"], max_id=max_id, limit=PAGE)
                if not page:
                    break
                notes.extend(n for n in page if _when(n) >= not_before)
                oldest = min(page, key=lambda n: id_key(str(n["id"])))
                if _when(oldest) < not_before or len(page) < PAGE:
                    break
                max_id = str(oldest["id"])
            newest = max((str(n["id"]) for n in notes), key=id_key, default=None)
            if newest is None:  # nothing recent: start after whatever is there
                latest = self.call("notifications", self.api.notifications, types=["mention"], limit=1)
                newest = str(latest[0]["id"]) if latest else None
            cursor = newest
        else:
            while True:
                page = self.call("notifications", self.api.notifications, types=["mention"], min_id=cursor, limit=PAGE)
                if not page:
                    break
                notes.extend(page)
                cursor = max((str(n["id"]) for n in page), key=id_key)
                if len(page) < PAGE:
                    break
        notes.extend(self._accept_filtered(not_before))
        mentions = {}
        for note in notes:
            if note.get("type") == "mention" and note.get("status"):
                mention = to_mention(note)
                mentions[mention.id] = mention
        return sorted(mentions.values(), key=lambda m: id_key(m.id)), cursor

    def upload(self, media: Media) -> str:
        kwargs: dict[str, Any] = {"mime_type": media.mime, "description": media.description[:1500]}
        if media.thumbnail is not None:
            kwargs |= {"thumbnail": str(media.thumbnail), "thumbnail_mime_type": "image/png"}
        attachment = self.call("upload media", self.api.media_post, str(media.path), **kwargs)
        if attachment.get("url"):  # processed already (200, not 202)
            self._ready_media.add(str(attachment["id"]))
        return str(attachment["id"])

    def wait_for_media(self, media_id: str, timeout: float) -> None:
        """Poll GET /api/v1/media/:id (206 while processing) until the attachment has a URL, first after a
        tenth of ``poll_interval``, then doubling; an upload answered with its URL needs no poll at all."""
        if media_id in self._ready_media:
            self._ready_media.discard(media_id)
            return

        def probe() -> float | None:
            attachment = self.call("media status", self.api.media, media_id)
            return None if attachment.get("url") else 1.0

        poll_until(f"media {media_id}", probe, timeout, self.poll_interval, ramp=MEDIA_POLL_RAMP)

    # --- the stream --------------------------------------------------------------

    def stream_base(self) -> str:
        """The streaming server's http(s) origin: the setting, else what the instance advertises;
        StreamingOff when it advertises none (streaming switched off)."""
        if self.streaming_url:
            return self.streaming_url.rstrip("/")
        instance = self.call("instance", self.api.instance)
        # v1 names it urls.streaming_api; v2 (what Mastodon.py fetches from a 4.x server) configuration.urls.streaming
        advertised = (instance.get("urls") or {}).get("streaming_api") or (
            (instance.get("configuration") or {}).get("urls") or {}
        ).get("streaming")
        if not advertised:
            raise StreamingOff("the instance advertises no streaming API")
        scheme, _, rest = str(advertised).partition("://")
        return {"wss": "https", "ws": "http"}.get(scheme, scheme) + "://" + rest.rstrip("/")

    def listen(
        self, on_mention: Callable[[Mention], None], on_connected: Callable[[], None], stop: threading.Event
    ) -> None:
        """Listen to the notification stream until it ends: each mention to ``on_mention`` as it arrives.

        Parsing is Mastodon.py's (StreamListener): an event is dispatched only once its blank
        line has arrived, so a stream cut mid-event loses that event here, never half of it
        (the catch-up poll after the reconnect finds it). 404: StreamingOff; 401/403:
        ConfigurationError; anything else that ends the stream is raised as it is.
        """
        url = self.stream_base() + STREAM_PATH
        headers = {"Authorization": f"Bearer {self.api.access_token}", "User-Agent": "band-bot (stream)"}
        with requests.Session() as session:
            response = session.get(url, headers=headers, stream=True, timeout=(10.0, STREAM_READ_TIMEOUT))
            done = threading.Event()

            def close_on_stop() -> None:  # a read blocks up to STREAM_READ_TIMEOUT: closing ends it now
                while not done.wait(0.5):
                    if stop.is_set():
                        response.close()
                        return

            threading.Thread(target=close_on_stop, name="bot-stream-stop", daemon=True).start()
            try:
                if response.status_code == 404:
                    raise StreamingOff(f"{STREAM_PATH} answered 404")
                if response.status_code in (401, 403):
                    raise ConfigurationError(f"the stream refused the access token ({response.status_code})")
                if response.status_code != 200:
                    raise TransientError(f"the stream answered HTTP {response.status_code}")
                on_connected()
                _MentionListener(on_mention).handle_stream(response)
            finally:
                done.set()
                response.close()

    def find_reply(self, mention: Mention | str, me: Identity) -> Posted | None:
        status_id = mention.id if isinstance(mention, Mention) else mention
        try:
            context = self.call("thread", self.api.status_context, status_id)
        except PermanentError:
            return None
        for status in context.get("descendants") or []:
            if str(status["account"]["id"]) == me.id and str(status.get("in_reply_to_id")) == status_id:
                return Posted(str(status["id"]), status.get("url") or status.get("uri"))
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
        status = self.call(
            "post reply",
            self.api.status_post,
            text,
            in_reply_to_id=to.id if isinstance(to, Mention) else to,
            media_ids=media_ids or None,
            visibility=visibility,
            spoiler_text=spoiler_text or None,
            language=language,
            idempotency_key=idempotency_key,
        )
        return Posted(str(status["id"]), status.get("url") or status.get("uri"))


class _MentionListener(StreamListener):
    """Passes the stream's mention notifications on as ``Mention``s; every other event is ignored."""

    def __init__(self, on_mention: Callable[[Mention], None]):
        self.on_mention = on_mention

    def on_notification(self, notification: Any) -> None:
        if notification.get("type") == "mention" and notification.get("status"):
            self.on_mention(to_mention(notification))

    def on_unknown_event(self, name: str, unknown_event: Any = None) -> None:
        pass


def _status(exc: MastodonError) -> int | None:
    return exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], int) else None


def _message(exc: MastodonError) -> str:
    parts = [str(a) for a in exc.args if a is not None]
    return " ".join(parts)[:300]


def _when(note: Any) -> datetime:
    created = note.get("created_at") or (note.get("status") or {}).get("created_at")
    if isinstance(created, str):
        created = datetime.fromisoformat(created.replace("Z", "+00:00"))
    if created is None:
        return datetime.now(UTC)
    return created if created.tzinfo else created.replace(tzinfo=UTC)


def to_mention(note: Any) -> Mention:
    status, account = note["status"], note["status"]["account"]
    return Mention(
        id=str(status["id"]),
        notification_id=str(note["id"]),
        author=Author(
            id=str(account["id"]),
            acct=account["acct"],
            display_name=account.get("display_name") or "",
            url=account.get("url"),
            bot=bool(account.get("bot")),
            note=account.get("note") or "",
        ),
        text=status.get("content") or "",
        created_at=_when(status),
        url=status.get("url") or status.get("uri"),
        visibility=status.get("visibility") or "public",
        spoiler_text=status.get("spoiler_text") or "",
        language=status.get("language"),
        in_reply_to_id=str(status["in_reply_to_id"]) if status.get("in_reply_to_id") else None,
        in_reply_to_account_id=str(status["in_reply_to_account_id"]) if status.get("in_reply_to_account_id") else None,
        mentioned_ids=tuple(str(m["id"]) for m in status.get("mentions") or []),
    )
