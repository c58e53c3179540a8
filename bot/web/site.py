"""What every request handler shares: settings, database sessions, the media store, caches, the genre catalogue."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from fastapi import Request
from sqlalchemy.orm import Session, sessionmaker

from bot.config import BotSettings
from bot.media import MediaStore
from bot.web.archive import public_handles
from bot.web.cache import TTLCache

log = logging.getLogger(__name__)


@dataclass
class Site:
    settings: BotSettings
    sessions: sessionmaker[Session]
    genre_catalog: Callable[[], list[Any]]  # composer.client's genres(): GenreInfo with model cards
    cache: TTLCache = field(default_factory=lambda: TTLCache(60.0))

    @property
    def media(self) -> MediaStore:
        return MediaStore(self.settings.resolved_media_dir)

    @property
    def base_url(self) -> str:
        return self.settings.archive_base_url

    def genres(self) -> tuple[list[dict[str, Any]], str | None]:
        """The composer's genres as plain dicts, and an error message when the composer cannot be asked."""

        def fetch() -> tuple[list[dict[str, Any]], str | None]:
            try:
                return [asdict(info) for info in self.genre_catalog()], None
            except Exception as exc:  # the archive stays up when the composer is away
                log.warning("genre catalogue unavailable: %s", exc)
                return [], f"The composer could not be asked just now ({type(exc).__name__})."

        return self.cache.get("genres", fetch)

    def public_handles(self) -> list[str]:
        """The searchable requesters' handles, cached for a minute (search by requester matches these)."""

        def fetch() -> list[str]:
            with self.sessions() as session:
                return public_handles(session)

        return self.cache.get("handles", fetch)

    def admin_allowed(self, token: str | None) -> bool:
        """Whether ``token`` is the operators' token; always False when none is configured. Constant time."""
        configured = self.settings.archive_admin_token
        if configured is None or not configured.get_secret_value() or not token:
            return False
        return hmac.compare_digest(token.encode(), configured.get_secret_value().encode())


def site_of(request: Request) -> Site:
    return request.app.state.site
