"""Operators' takedown: hide a piece (reversible) or delete it with its files.

Every action needs ``Authorization: Bearer <ARCHIVE_ADMIN_TOKEN>``; with no token
configured the actions are off. Wrong tokens are throttled (``GuessThrottle``): after a few
from one client, or many from everyone, further attempts get 429 without being checked, so
guessing costs minutes per handful of tries. Hidden pieces vanish from pages, feeds, media
and the API because every public query filters on ``hidden``.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable

from fastapi import APIRouter, Depends, Header, HTTPException, Request
from sqlalchemy import update

from bot.db import Composition, MentionRequest, transaction
from bot.web.archive import valid_id
from bot.web.site import Site, site_of

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1/admin", tags=["operators"])


class GuessThrottle:
    """Wrong operator tokens in the last ``window`` seconds: ``per_client`` from one address, ``overall`` from
    all (guesses spread over many addresses), after which ``wait`` says how long until one more is heard."""

    def __init__(
        self,
        per_client: int = 5,
        overall: int = 50,
        window: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.per_client, self.overall, self.window, self.clock = per_client, overall, window, clock
        self._failures: dict[str, deque[float]] = {}
        self._all: deque[float] = deque()
        self._lock = threading.Lock()

    def _expire(self, times: deque[float], now: float) -> None:
        while times and times[0] <= now - self.window:
            times.popleft()

    def wait(self, client: str) -> float:
        """Seconds before ``client`` may try a token again; 0 when it may now."""
        now = self.clock()
        with self._lock:
            mine = self._failures.get(client, deque())
            self._expire(mine, now)
            self._expire(self._all, now)
            if not mine:
                self._failures.pop(client, None)
            waits = [0.0]
            if len(mine) >= self.per_client:
                waits.append(mine[len(mine) - self.per_client] + self.window - now)
            if len(self._all) >= self.overall:
                waits.append(self._all[len(self._all) - self.overall] + self.window - now)
            return max(waits)

    def failed(self, client: str) -> None:
        now = self.clock()
        with self._lock:
            self._failures.setdefault(client, deque()).append(now)
            self._all.append(now)


_throttle_lock = threading.Lock()


def throttle_of(site: Site) -> GuessThrottle:
    """The site's throttle (one per app: its counts live in this process)."""
    with _throttle_lock:
        throttle = getattr(site, "_admin_throttle", None)
        if throttle is None:
            throttle = GuessThrottle()
            site._admin_throttle = throttle  # type: ignore[attr-defined]
        return throttle


def operator(request: Request, authorization: str | None = Header(default=None), site: Site = Depends(site_of)) -> Site:
    throttle = throttle_of(site)
    client = request.client.host if request.client else "unknown"
    wait = throttle.wait(client)
    if wait > 0:  # not even checked: a right token among the guesses would otherwise tell itself apart
        raise HTTPException(
            429, "too many wrong operator tokens; try again later", headers={"Retry-After": str(math.ceil(wait))}
        )
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not site.admin_allowed(token.strip()):
        throttle.failed(client)
        log.warning("a wrong operator token from %s", client)
        raise HTTPException(401, "a valid operator token is needed", headers={"WWW-Authenticate": "Bearer"})
    return site


def _set_hidden(site: Site, piece_id: str, hidden: bool) -> dict[str, object]:
    if not valid_id(piece_id):
        raise HTTPException(404, "no such piece")
    with transaction(site.sessions) as session:
        piece = session.get(Composition, piece_id)
        if piece is None:
            raise HTTPException(404, "no such piece")
        piece.hidden = hidden
    site.cache.clear()
    log.info("piece %s %s by an operator", piece_id, "hidden" if hidden else "shown again")
    return {"id": piece_id, "hidden": hidden}


@router.post("/pieces/{piece_id}/hide")
def hide(piece_id: str, site: Site = Depends(operator)) -> dict[str, object]:
    """Take a piece off every public page, feed and API answer (its files stay, for an appeal)."""
    return _set_hidden(site, piece_id, True)


@router.post("/pieces/{piece_id}/unhide")
def unhide(piece_id: str, site: Site = Depends(operator)) -> dict[str, object]:
    return _set_hidden(site, piece_id, False)


@router.delete("/pieces/{piece_id}")
def delete(piece_id: str, site: Site = Depends(operator)) -> dict[str, object]:
    """Remove a piece and its MIDI, audio and piano roll for good; the request row stays, unlinked."""
    if not valid_id(piece_id):
        raise HTTPException(404, "no such piece")
    with transaction(site.sessions) as session:
        piece = session.get(Composition, piece_id)
        if piece is None:
            raise HTTPException(404, "no such piece")
        paths = [p for p in (piece.midi_path, piece.audio_path, piece.pianoroll_path) if p]
        session.execute(
            update(MentionRequest).where(MentionRequest.composition_id == piece_id).values(composition_id=None)
        )
        session.execute(update(Composition).where(Composition.parent_id == piece_id).values(parent_id=None))
        session.delete(piece)
    removed = 0
    for relative in paths:
        try:
            site.media.path(relative).unlink()
            removed += 1
        except (ValueError, FileNotFoundError):
            pass
    site.cache.clear()
    log.info("piece %s deleted by an operator (%d files)", piece_id, removed)
    return {"id": piece_id, "deleted": True, "files_removed": removed}
