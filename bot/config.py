"""The bot's settings, in one typed place: environment variables, then an optional env file.

Every setting is read once at start and checked there, so a missing token or a malformed
URL stops the bot with a message naming the variable instead of failing mid-reply.
Secrets are ``SecretStr``: they print as ``**********`` in logs, reprs and errors, and
``redact`` takes credentials out of any text (a password in ``COMPOSER_URL`` or
``DATABASE_URL``, a token's value): every log line once settings are loaded, and every error
the worker stores.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = PROJECT_ROOT / "var"
ENV_FILE_VARIABLE = "BOT_ENV_FILE"
MIN_ADMIN_TOKEN_CHARS = 24  # `openssl rand -hex 32` gives 64
MIN_ADMIN_TOKEN_DISTINCT = 8  # "aaaa..." is long but guessed at once
POLL_SECONDS = {"mastodon": 30.0, "twitter": 90.0}  # default polling interval per platform (see poll_seconds)


class ConfigError(Exception):
    """Settings that cannot work; the message names each variable at fault."""


class BotSettings(BaseSettings):
    """Field names are the environment variables' names (case-insensitive)."""

    model_config = SettingsConfigDict(extra="ignore", env_file=None, case_sensitive=False)

    bot_platform: Literal["mastodon", "twitter"] = "mastodon"

    mastodon_api_base_url: str | None = None
    mastodon_access_token: SecretStr | None = None
    mastodon_streaming_url: str | None = Field(
        default=None, description="streaming server origin; default: the one the instance advertises"
    )

    twitter_api_key: SecretStr | None = None
    twitter_api_secret: SecretStr | None = None
    twitter_access_token: SecretStr | None = None
    twitter_access_token_secret: SecretStr | None = None
    twitter_bearer_token: SecretStr | None = None

    bot_data_dir: Path = DEFAULT_DATA_DIR
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; default a SQLite file in BOT_DATA_DIR")
    media_dir: Path | None = Field(default=None, description="MIDI, audio and piano rolls; default BOT_DATA_DIR/media")
    composer_url: str | None = Field(default=None, description="composer service; unset = compose in-process")
    archive_base_url: str = "http://localhost:8080"
    archive_admin_token: SecretStr | None = Field(default=None, description="operators' token to hide or delete pieces")

    bot_worker_id: str = Field(default_factory=lambda: default_worker_id(), min_length=1, max_length=128)
    bot_interval_seconds: float | None = Field(
        default=None, gt=0, description="polling interval; default 30 s on Mastodon, 90 s on X (its rate limit)"
    )
    bot_stream: bool = Field(default=True, description="listen to the platform's stream where it has one (Mastodon)")
    bot_catchup_seconds: float = Field(
        default=300.0, gt=0, description="polling interval while the stream is up: a safety net, not the way in"
    )
    bot_lookback_seconds: float = Field(default=3600.0, ge=0)
    bot_per_account_per_hour: int = Field(default=3, ge=0)
    bot_global_per_hour: int = Field(default=60, ge=0)
    bot_min_seconds: float = Field(default=5.0, gt=0)
    bot_max_seconds: float = Field(default=120.0, gt=0)
    bot_default_seconds: float = Field(default=30.0, gt=0)
    bot_max_attempts: int = Field(default=5, ge=1)
    bot_outage_max_age_seconds: float = Field(
        default=10800.0, ge=0, description="a composer outage delays a job (spending no attempt) until it is this old"
    )
    bot_retry_base_seconds: float = Field(default=30.0, ge=0)
    bot_lease_seconds: float = Field(default=900.0, gt=0)
    bot_max_rate_limit_wait_seconds: float = Field(default=60.0, ge=0)
    bot_media_timeout_seconds: float = Field(default=300.0, gt=0)
    bot_request_timeout_seconds: float = Field(default=60.0, gt=0)
    bot_reply_limit_chars: int = Field(default=500, ge=100)

    @field_validator("mastodon_api_base_url", "mastodon_streaming_url", "composer_url", "database_url", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("mastodon_api_base_url", "mastodon_streaming_url", "composer_url", "archive_base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")  # the value is not echoed: it may hold credentials
        return value.rstrip("/") if value else value

    @field_validator("archive_admin_token")
    @classmethod
    def _strong_admin_token(cls, value: SecretStr | None) -> SecretStr | None:
        """An operator's token long and varied enough not to be guessed, and never an example's placeholder."""
        token = value.get_secret_value().strip() if value is not None else ""
        if not token:
            return None  # unset or blank: takedown off
        if "change_me" in token.lower() or "changeme" in token.lower():
            raise ValueError("is the example's placeholder: generate one, e.g. `openssl rand -hex 32`")
        if len(token) < MIN_ADMIN_TOKEN_CHARS or len(set(token)) < MIN_ADMIN_TOKEN_DISTINCT:
            raise ValueError(
                f"is too weak: use at least {MIN_ADMIN_TOKEN_CHARS} varied characters, e.g. `openssl rand -hex 32`"
            )  # the value is not echoed: it is a secret
        return SecretStr(token)

    @model_validator(mode="after")
    def _consistent(self) -> BotSettings:
        if not self.bot_min_seconds <= self.bot_default_seconds <= self.bot_max_seconds:
            raise ValueError("need BOT_MIN_SECONDS <= BOT_DEFAULT_SECONDS <= BOT_MAX_SECONDS")
        return self

    @property
    def poll_seconds(self) -> float:
        """How often to poll for mentions without a stream: X's Basic tier allows 10 mention reads
        per 15 minutes per user (one each 90 s); Mastodon 300 requests per 5 minutes."""
        if self.bot_interval_seconds is not None:
            return self.bot_interval_seconds
        return POLL_SECONDS[self.bot_platform]

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.bot_data_dir / 'bot.sqlite3'}"

    @property
    def resolved_media_dir(self) -> Path:
        return self.media_dir or self.bot_data_dir / "media"

    def missing_for_platform(self) -> list[str]:
        """Variables the chosen platform needs that are unset."""
        if self.bot_platform == "mastodon":
            needed = ["mastodon_api_base_url", "mastodon_access_token"]
        else:
            needed = [
                "twitter_api_key",
                "twitter_api_secret",
                "twitter_access_token",
                "twitter_access_token_secret",
                "twitter_bearer_token",
            ]
        return [name.upper() for name in needed if not _present(getattr(self, name))]


MASK = "**********"
_USERINFO = re.compile(r"(?P<scheme>\b[a-z][a-z0-9+.\-]*://)(?:(?P<user>[^\s/?#@:]*):)?[^\s/?#@]*@", re.IGNORECASE)
_SECRET_PARAMETER = re.compile(
    r"(?P<name>[?&;](?:access_token|token|password|passwd|pass|secret|api_key|apikey|key|sig)=)[^&;#\s]+", re.IGNORECASE
)
_known_secrets: set[str] = set()  # values of the loaded settings' secrets; short ones could mask ordinary words
MIN_SECRET_TO_MASK = 6


def redact(text: str, known: Iterable[str] = ()) -> str:
    """``text`` without credentials: a URL's password (or a user part alone, often a token), a secret
    query parameter, and every secret value of the settings loaded (and ``known``)."""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user'] + ':' if m['user'] else ''}{MASK}@", text)
    text = _SECRET_PARAMETER.sub(lambda m: m["name"] + MASK, text)
    for secret in sorted({*_known_secrets, *known}, key=len, reverse=True):
        if len(secret) >= MIN_SECRET_TO_MASK:
            text = text.replace(secret, MASK)
    return text


def _secret_values(settings: BotSettings) -> set[str]:
    values = {v.get_secret_value() for v in vars(settings).values() if isinstance(v, SecretStr)}
    for url in (settings.composer_url, settings.database_url):
        match = _USERINFO.search(url or "")
        userinfo = match.group(0).removeprefix(match["scheme"]).removesuffix("@") if match else ""
        if ":" in userinfo:  # the password the URL carries, wherever it shows up alone (a user name is no secret)
            values.add(userinfo.split(":", 1)[1])
    return {v for v in values if v}


_redacting = False


def redact_logs(settings: BotSettings | None = None) -> None:
    """From now on, every log record's message and traceback is ``redact``ed (whatever logger, whatever
    handler), knowing the secrets of ``settings``. Idempotent: a second call only adds secrets."""
    global _redacting
    if settings is not None:
        _known_secrets.update(_secret_values(settings))
    if _redacting:
        return
    _redacting = True
    make_record = logging.getLogRecordFactory()
    formatter = logging.Formatter()

    def redacting_record(*args: object, **kwargs: object) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a malformed call: logging reports it itself
            return record
        clean = redact(message)
        if clean != message:
            _redact_record(record, clean)
        if record.exc_info and record.exc_info[0] is not None:  # formatters use exc_text when it is set
            record.exc_text = redact(formatter.formatException(record.exc_info))
        return record

    logging.setLogRecordFactory(redacting_record)


def _redact_record(record: logging.LogRecord, clean: str) -> None:
    """``record`` made to say ``clean``: its arguments redacted one by one where that is enough (formatters
    such as uvicorn's access log read them), else the whole message in their place."""
    if isinstance(record.msg, str) and isinstance(record.args, tuple):
        msg, args = record.msg, record.args
        record.msg = redact(msg)
        record.args = tuple(redact(a) if isinstance(a, str) else a for a in args)
        try:
            if record.getMessage() == clean:
                return
        except Exception:
            pass
    record.msg, record.args = clean, None


def default_worker_id() -> str:
    """Unique per process (host, pid, random), so two workers never share leases by accident.

    A worker restarted with the same explicit BOT_WORKER_ID frees its old leases at start;
    with this default, a dead process's leases expire after BOT_LEASE_SECONDS instead.
    """
    return f"{os.uname().nodename[:80]}:{os.getpid()}:{secrets.token_hex(4)}"


def _present(value: object) -> bool:
    if isinstance(value, SecretStr):
        return bool(value.get_secret_value().strip())
    return value is not None and value != ""


def load_settings(
    env_file: str | Path | None = None, require_platform: bool = True, **overrides: object
) -> BotSettings:
    """Read and check the settings; ConfigError names every variable at fault.

    ``env_file`` (or BOT_ENV_FILE) adds a dotenv file under the environment. The
    platform's credentials are required only for commands that talk to the platform.
    """
    env_file = env_file or os.environ.get(ENV_FILE_VARIABLE) or None
    if env_file is not None and not Path(env_file).is_file():
        raise ConfigError(f"{ENV_FILE_VARIABLE}: no such file {str(env_file)!r}")
    try:
        settings = BotSettings(_env_file=env_file, **overrides)  # type: ignore[call-arg]
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"]).upper()
            message = error["msg"].removeprefix("Value error, ")
            problems.append(f"{where}: {message}" if where else message)
        raise ConfigError("; ".join(problems)) from None
    if require_platform and (missing := settings.missing_for_platform()):
        raise ConfigError(f"BOT_PLATFORM={settings.bot_platform} needs {', '.join(missing)} (unset or empty)")
    redact_logs(settings)
    return settings
