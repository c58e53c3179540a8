"""How a piece looks where its link is shared: OpenGraph and player tags, oEmbed, the player, reuse terms.

Every reply links to its piece page, so that page is what Mastodon and X fetch for the link
card: OpenGraph (title, description, the piano roll as the image, the audio), X's player
card, and an oEmbed endpoint whose ``rich`` answer is an iframe of ``/pieces/{id}/embed``, a
page with nothing but the player and the piano roll that any site may frame. Nothing here
shows the request's text or the requester: only what the music itself is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse

from bot.web.archive import PieceView, get_piece
from bot.web.media import media_url
from bot.web.site import Site, site_of

router = APIRouter(include_in_schema=False)

ROLL_SIZE = (1280, 720)  # composer.audio.pianoroll's picture, when the file cannot be read
EMBED_SIZE = (480, 350)  # the player page: the roll (16:9) at 480 px above the audio controls and a caption
# Framed by any site (the whole point of an embed); still no script, no outside resources.
EMBED_CSP = "default-src 'none'; img-src 'self'; media-src 'self'; style-src 'self'; base-uri 'none'; frame-ancestors *"
LICENSE_URLS = {
    "CC BY-NC-SA 4.0": "https://creativecommons.org/licenses/by-nc-sa/4.0/",
    "CC BY-SA 4.0": "https://creativecommons.org/licenses/by-sa/4.0/",
    "CC BY 4.0": "https://creativecommons.org/licenses/by/4.0/",
    "GPL-3.0": "https://www.gnu.org/licenses/gpl-3.0.html",
    "MIT": "https://opensource.org/license/mit",
}


@dataclass(frozen=True)
class ReuseTerms:
    """Under what terms a piece may be reused: those of the data its model was trained on (the model card's)."""

    licenses: list[str]  # as the model card names them; empty when the card could not be read
    model: str  # "folk v4"

    @property
    def known(self) -> bool:
        return bool(self.licenses)

    @property
    def non_commercial(self) -> bool:
        return any("NC" in name.split() or "-NC" in name for name in self.licenses)

    @property
    def share_alike(self) -> bool:
        return any("SA" in name.replace("-", " ").split() or name.startswith(("GPL", "AGPL")) for name in self.licenses)

    def links(self) -> list[tuple[str, str | None]]:
        return [(name, LICENSE_URLS.get(name)) for name in self.licenses]

    def summary(self) -> str:
        """One sentence for cards and the oEmbed answer."""
        if not self.known:
            return "Reuse follows the licenses of the model's training data (see the genres page)."
        conditions = ["with attribution"]
        if self.non_commercial:
            conditions.append("non-commercially")
        if self.share_alike:
            conditions.append("under the same terms")
        return f"Reuse {', '.join(conditions)}: {'; '.join(self.licenses)} (the licenses of {self.model}'s data)."


def reuse_terms(site: Site, piece: PieceView) -> ReuseTerms:
    """The terms of ``piece``, from the composer's model card of its genre and version."""
    catalog, _ = site.genres()
    for genre in catalog:
        card = genre.get("card") or {}
        if genre.get("name") == piece.genre and card.get("version") == piece.model_version:
            licenses = [part.strip() for part in str(card.get("license") or "").split(";") if part.strip()]
            return ReuseTerms(licenses, f"{piece.genre} {piece.model_version}")
    return ReuseTerms([], f"{piece.genre} {piece.model_version}")


def title(piece: PieceView) -> str:
    whole = round(piece.duration)
    return f"{piece.genre.capitalize()}, {whole // 60}:{whole % 60:02d} · seed {piece.seed}"


def description(piece: PieceView) -> str:
    return piece.description or f"A {piece.genre} piano piece composed by the band bot (model {piece.model_version})."


def roll_size(site: Site, piece: PieceView) -> tuple[int, int]:
    """The piano roll's width and height in pixels, from its PNG header (IHDR)."""
    try:
        with open(site.media.path(piece.pianoroll_path or ""), "rb") as png:
            head = png.read(24)
    except (OSError, ValueError):
        return ROLL_SIZE
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return ROLL_SIZE
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def page_url(site: Site, piece_id: str) -> str:
    return f"{site.base_url}/pieces/{piece_id}"


def card(site: Site, piece: PieceView) -> dict[str, Any]:
    """What the piece page's <head> says to link-card fetchers (absolute URLs on ARCHIVE_BASE_URL)."""
    base = site.base_url
    url = page_url(site, piece.id)
    return {
        "url": url,
        "title": title(piece),
        "description": description(piece),
        "image": base + media_url(piece.id, "png") if piece.has_pianoroll else None,
        "image_size": roll_size(site, piece) if piece.has_pianoroll else ROLL_SIZE,
        "image_alt": piece.description or f"Piano roll of a {piece.genre} piece",
        "audio": base + media_url(piece.id, piece.audio_ext) if piece.audio_ext else None,
        "audio_type": piece.audio_mime,
        "embed": f"{url}/embed",
        "embed_size": EMBED_SIZE,
        "oembed": f"{base}/oembed?format=json&url={quote(url, safe='')}",
    }


@router.get("/oembed")
def oembed(
    request: Request,
    url: str,
    format: str = "json",
    maxwidth: int | None = None,
    maxheight: int | None = None,
    site: Site = Depends(site_of),
) -> JSONResponse:
    """oEmbed (https://oembed.com) for piece pages: a ``rich`` answer whose html is the embeddable player."""
    if format != "json":
        raise HTTPException(501, "only format=json is offered")
    piece_id = _piece_id(site, url)
    with site.sessions() as session:
        piece = get_piece(session, piece_id) if piece_id else None
    if piece is None:
        raise HTTPException(404, "that URL is not a piece of this archive")
    width, height = EMBED_SIZE
    if maxwidth is not None and maxwidth > 0 and maxwidth < width:  # keep the player's shape
        width, height = maxwidth, max(1, round(height * maxwidth / width))
    if maxheight is not None and maxheight > 0 and maxheight < height:
        width, height = max(1, round(width * maxheight / height)), maxheight
    embed = f"{page_url(site, piece.id)}/embed"
    answer: dict[str, Any] = {
        "version": "1.0",
        "type": "rich",
        "title": title(piece),
        "author_name": "band bot",
        "author_url": site.base_url + "/",
        "provider_name": "band archive",
        "provider_url": site.base_url + "/",
        "cache_age": 300,  # a takedown must reach caches soon, as with media
        "width": width,
        "height": height,
        "html": (
            f'<iframe src="{embed}" width="{width}" height="{height}" frameborder="0" '
            f'title="{_attr(title(piece))}" allow="autoplay" loading="lazy"></iframe>'
        ),
    }
    if piece.has_pianoroll:
        roll_width, roll_height = roll_size(site, piece)
        answer |= {
            "thumbnail_url": site.base_url + media_url(piece.id, "png"),
            "thumbnail_width": roll_width,
            "thumbnail_height": roll_height,
        }
    return JSONResponse(answer, headers={"Cache-Control": "public, max-age=300"})


@router.get("/pieces/{piece_id}/embed", response_class=HTMLResponse)
def embed(request: Request, piece_id: str, site: Site = Depends(site_of)) -> HTMLResponse:
    """The player alone, for iframes on other sites (oEmbed's html)."""
    from bot.web.pages import render

    with site.sessions() as session:
        piece = get_piece(session, piece_id)
    if piece is None:
        raise HTTPException(404, "There is no piece with that id in the archive.")
    response = render(
        request, "embed.html", piece=piece, card=card(site, piece), terms=reuse_terms(site, piece), size=EMBED_SIZE
    )
    response.headers["Content-Security-Policy"] = EMBED_CSP
    return response


def _piece_id(site: Site, url: str) -> str | None:
    """The piece id in ``url`` when it is this archive's piece page (on ARCHIVE_BASE_URL, http or https)."""
    try:
        parts, base = urlsplit(url.strip()), urlsplit(site.base_url)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or parts.netloc.lower() != base.netloc.lower():
        return None
    prefix = base.path.rstrip("/") + "/pieces/"
    if not parts.path.startswith(prefix):
        return None
    rest = parts.path[len(prefix) :].strip("/")
    return rest if rest and "/" not in rest else None


def _attr(text: str) -> str:
    return text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")
