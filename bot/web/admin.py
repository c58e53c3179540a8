"""Operators' takedown: hide a piece (reversible) or delete it with its files.

Every action needs ``Authorization: Bearer <ARCHIVE_ADMIN_TOKEN>``; with no token
configured the actions are off. Hidden pieces vanish from pages, feeds, media and the API
because every public query filters on ``hidden``.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Depends, Header, HTTPException
from sqlalchemy import update

from bot.db import Composition, MentionRequest, transaction
from bot.web.archive import valid_id
from bot.web.site import Site, site_of

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1/admin", tags=["operators"])


def operator(authorization: str | None = Header(default=None), site: Site = Depends(site_of)) -> Site:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not site.admin_allowed(token.strip()):
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
