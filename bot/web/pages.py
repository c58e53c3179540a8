"""The HTML pages and feeds: list, piece, genres, stats (with plots), RSS/Atom, API docs.

Templates are rendered by a Jinja2 environment with autoescaping on for everything, and
only ``PieceView``s reach them, so user text is escaped and private requests stay private.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from jinja2 import Environment, FileSystemLoader

from bot.web import feeds, sharing, stats
from bot.web.archive import PAGE_SIZE, BadCursor, Filters, PieceView, archive_genres, get_piece, list_pieces
from bot.web.media import media_url
from bot.web.site import Site, site_of

router = APIRouter(include_in_schema=False)
FEED_SIZE = 50

templates = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"), autoescape=True)


def _clock(seconds: float) -> str:
    whole = round(seconds)
    return f"{whole // 60}:{whole % 60:02d}"


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


templates.filters.update(clock=_clock, when=_when)
templates.globals.update(media_url=media_url)


def render(request: Request, name: str, status: int = 200, **context: object) -> HTMLResponse:
    html = templates.get_template(name).render(request_path=request.url.path, **context)
    return HTMLResponse(html, status_code=status)


def _day(value: str | None, name: str) -> date | None:
    if not value or not value.strip():
        return None
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise HTTPException(400, f"{name} must be a date like 2026-11-23") from None


def _genres_for_filter(site: Site) -> list[str]:
    def fetch() -> list[str]:
        with site.sessions() as session:
            return archive_genres(session)

    return site.cache.get("archive-genres", fetch)


@router.get("/", response_class=HTMLResponse)
def index(
    request: Request,
    genre: str | None = None,
    model_version: str | None = None,
    since: str | None = None,
    until: str | None = None,
    requester: str | None = None,
    cursor: str | None = None,
    site: Site = Depends(site_of),
) -> HTMLResponse:
    filters = Filters(genre, model_version, _day(since, "since"), _day(until, "until"), requester).normalized()
    with site.sessions() as session:
        try:
            page = list_pieces(session, filters, cursor or None, PAGE_SIZE, site.public_handles)
        except BadCursor:
            raise HTTPException(400, "that page link is not valid any more") from None
    params = filters.params()
    next_link = f"/?{urlencode(params | {'cursor': page.next_cursor})}" if page.next_cursor else None
    return render(
        request,
        "index.html",
        pieces=page.pieces,
        filters=filters,
        genres=_genres_for_filter(site),
        next_link=next_link,
        first_link=f"/?{urlencode(params)}" if cursor else None,
        feed_genre=filters.genre,
    )


@router.get("/pieces/{piece_id}", response_class=HTMLResponse)
def piece_page(request: Request, piece_id: str, site: Site = Depends(site_of)) -> HTMLResponse:
    with site.sessions() as session:
        piece = get_piece(session, piece_id)
    if piece is None:
        raise HTTPException(404, "There is no piece with that id in the archive.")
    return render(
        request,
        "piece.html",
        piece=piece,
        base_url=site.base_url,
        card=sharing.card(site, piece),
        terms=sharing.reuse_terms(site, piece),
    )


@router.get("/genres", response_class=HTMLResponse)
def genres_page(request: Request, site: Site = Depends(site_of)) -> HTMLResponse:
    catalog, error = site.genres()
    return render(request, "genres.html", genres=catalog, error=error)


def _stats(site: Site) -> stats.Stats:
    def fetch() -> stats.Stats:
        with site.sessions() as session:
            return stats.collect(session)

    return site.cache.get("stats", fetch)


@router.get("/stats", response_class=HTMLResponse)
def stats_page(request: Request, site: Site = Depends(site_of)) -> HTMLResponse:
    return render(request, "stats.html", stats=_stats(site))


@router.get("/stats/{name}.svg")
def stats_plot(name: str, site: Site = Depends(site_of)) -> Response:
    draw = {"per-day": stats.per_day_svg, "per-genre": stats.per_genre_svg}.get(name)
    if draw is None:
        raise HTTPException(404, "no such plot")
    current = _stats(site)
    svg = site.cache.get(("plot", name, current.generated_at), lambda: draw(current))
    return Response(svg, media_type="image/svg+xml", headers={"Cache-Control": "public, max-age=60"})


def _feed(request: Request, site: Site, kind: str, genre: str | None) -> Response:
    with site.sessions() as session:
        pieces = list_pieces(session, Filters(genre=genre), None, FEED_SIZE).pieces
    if genre and not pieces and genre not in _genres_for_filter(site):
        raise HTTPException(404, "no such genre in the archive")

    def audio(piece: PieceView) -> tuple[str, int]:
        try:
            size = site.media.path(piece.audio_path).stat().st_size if piece.audio_path else 0
        except (OSError, ValueError):
            size = 0
        return site.base_url + media_url(piece.id, piece.audio_ext or "mp3"), size

    title = f"band: new {genre} pieces" if genre else "band: new pieces"
    path = f"/genres/{genre}/feed.{kind}" if genre else f"/feed.{kind}"
    build, mime = (feeds.rss, "application/rss+xml") if kind == "rss" else (feeds.atom, "application/atom+xml")
    body = build(pieces, title, site.base_url, site.base_url + path, audio)
    return Response(body, media_type=f"{mime}; charset=utf-8")


@router.get("/feed.{kind}")
def feed(request: Request, kind: str, site: Site = Depends(site_of)) -> Response:
    if kind not in ("rss", "atom"):
        raise HTTPException(404, "feeds are feed.rss and feed.atom")
    return _feed(request, site, kind, None)


@router.get("/genres/{genre}/feed.{kind}")
def genre_feed(request: Request, genre: str, kind: str, site: Site = Depends(site_of)) -> Response:
    if kind not in ("rss", "atom"):
        raise HTTPException(404, "feeds are feed.rss and feed.atom")
    return _feed(request, site, kind, genre)


@router.get("/api/v1/docs", response_class=HTMLResponse)
def api_docs(request: Request) -> HTMLResponse:
    """The OpenAPI description as a plain page (Swagger UI would load from a CDN)."""
    schema = request.app.openapi()
    operations = [
        {"method": method.upper(), "path": path, **operation}
        for path, methods in schema["paths"].items()
        for method, operation in methods.items()
    ]
    return render(request, "api.html", operations=operations, schema=schema)
