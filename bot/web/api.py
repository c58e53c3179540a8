"""The JSON API under /api/v1/: pieces (filters and a keyset cursor), one piece, genres.

Answers are built from ``PieceView``, so they carry exactly what the pages show: the
request text and requester only for public and unlisted mentions.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import BaseModel

from bot.web.archive import MAX_PAGE_SIZE, PAGE_SIZE, BadCursor, Filters, PieceView, get_piece, list_pieces
from bot.web.media import media_url
from bot.web.site import Site, site_of

router = APIRouter(prefix="/api/v1", tags=["archive"])


class RequestOut(BaseModel):
    text: str
    content_warning: str | None  # the mention's spoiler text: show ``text`` behind it
    requester: str
    requester_name: str | None
    requester_url: str | None
    mention_url: str | None
    platform: str | None


class PieceOut(BaseModel):
    id: str
    url: str
    genre: str
    model_version: str
    seed: int
    temperature: float
    top_p: float
    seconds_requested: float
    duration: float
    notes: int
    description: str | None
    created_at: datetime
    audio_url: str | None
    audio_type: str | None
    midi_url: str
    pianoroll_url: str | None
    reply_url: str | None
    continues: str | None  # the id of the piece this one continues, while that piece is public
    asked_key: str | None  # the key the mention asked for ("D minor"; a "more" keeps its source's)
    asked_density: float | None  # the notes per second it asked for
    key_followed: bool | None  # whether the model followed them; null when nothing was asked
    key_heard: str | None  # the key the notes are in (Krumhansl-Kessler)
    ask_again: str
    request: RequestOut | None  # null when the mention was direct or followers-only


class PageOut(BaseModel):
    items: list[PieceOut]
    next_cursor: str | None


class GenreOut(BaseModel):
    name: str
    current_version: str | None
    versions: list[str]
    description: str
    license: str
    card: dict[str, Any] | None


def piece_out(piece: PieceView, base_url: str) -> PieceOut:
    request = None
    if piece.shown:
        request = RequestOut(
            text=piece.request_text or "",
            content_warning=piece.content_warning,
            requester=piece.requester_acct or "",
            requester_name=piece.requester_name,
            requester_url=piece.requester_url,
            mention_url=piece.mention_url,
            platform=piece.platform,
        )
    return PieceOut(
        id=piece.id,
        url=f"{base_url}/pieces/{piece.id}",
        genre=piece.genre,
        model_version=piece.model_version,
        seed=piece.seed,
        temperature=piece.temperature,
        top_p=piece.top_p,
        seconds_requested=piece.seconds_requested,
        duration=piece.duration,
        notes=piece.notes,
        description=piece.description,
        created_at=piece.created_at,
        audio_url=base_url + media_url(piece.id, piece.audio_ext) if piece.audio_ext else None,
        audio_type=piece.audio_mime,
        midi_url=base_url + media_url(piece.id, "mid"),
        pianoroll_url=base_url + media_url(piece.id, "png") if piece.has_pianoroll else None,
        reply_url=piece.reply_url,
        continues=piece.parent_id,
        asked_key=piece.asked_key,
        asked_density=piece.asked_density,
        key_followed=piece.key_followed,
        key_heard=piece.key_heard,
        ask_again=piece.ask_again(),
        request=request,
    )


@router.get("/pieces", response_model=PageOut)
def pieces(
    genre: str | None = None,
    model_version: str | None = None,
    since: date | None = Query(None, description="first day (UTC), inclusive"),
    until: date | None = Query(None, description="last day (UTC), inclusive"),
    requester: str | None = Query(None, description="part of a requester's handle (public requests only)"),
    cursor: str | None = Query(None, description="next_cursor of the previous page"),
    limit: int = Query(PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE),
    site: Site = Depends(site_of),
) -> PageOut:
    """Pieces, newest first."""
    with site.sessions() as session:
        try:
            filters = Filters(genre, model_version, since, until, requester)
            page = list_pieces(session, filters, cursor, limit, site.public_handles)
        except BadCursor as exc:
            raise HTTPException(400, str(exc)) from None
    return PageOut(items=[piece_out(p, site.base_url) for p in page.pieces], next_cursor=page.next_cursor)


@router.get("/pieces/{piece_id}", response_model=PieceOut)
def piece(piece_id: str, site: Site = Depends(site_of)) -> PieceOut:
    with site.sessions() as session:
        found = get_piece(session, piece_id)
    if found is None:
        raise HTTPException(404, "no such piece")
    return piece_out(found, site.base_url)


@router.get("/genres", response_model=list[GenreOut])
def genres(site: Site = Depends(site_of)) -> list[GenreOut]:
    """The genres the composer knows, with their current model cards."""
    catalog, error = site.genres()
    if error:
        raise HTTPException(503, error)
    return [GenreOut(**{k: g.get(k) for k in GenreOut.model_fields}) for g in catalog]
