"""Media files, served by piece id only: the path comes from the database row, never from the URL.

``/media/{id}.{ext}`` looks the piece up (hidden and unknown pieces are 404), takes the
stored relative path for that kind of file and resolves it inside MEDIA_DIR, refusing
anything that would land outside; Starlette's FileResponse answers Range requests, so
players can seek.
"""

from __future__ import annotations

import re

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import FileResponse

from bot.web.archive import listed_composition
from bot.web.site import Site, site_of
from composer.contract import AUDIO_MIME

router = APIRouter()

NAME = re.compile(r"^([A-Za-z0-9-]{1,64})\.(mid|png|mp3|ogg|mp4|wav)$")


@router.get("/media/{name}", include_in_schema=False)
def media_file(name: str, site: Site = Depends(site_of)) -> FileResponse:
    match = NAME.match(name)
    if not match:
        raise HTTPException(404, "no such file")
    piece_id, ext = match.groups()
    with site.sessions() as session:
        piece = listed_composition(session, piece_id)
    if piece is None:
        raise HTTPException(404, "no such piece")
    if ext == "mid":
        relative, mime = piece.midi_path, "audio/midi"
    elif ext == "png":
        relative, mime = piece.pianoroll_path, "image/png"
    else:
        relative, mime = piece.audio_path, piece.audio_mime or AUDIO_MIME[ext]
    if not relative or not relative.lower().endswith(f".{ext}"):
        raise HTTPException(404, "no such file")
    try:
        path = site.media.path(relative)
    except ValueError:
        raise HTTPException(404, "no such file") from None
    if not path.is_file():
        raise HTTPException(404, "no such file")
    headers = {"Cache-Control": "public, max-age=300"}  # short: a takedown must reach caches soon
    if ext == "mid":
        return FileResponse(path, media_type=mime, headers=headers, filename=f"band-{piece_id}.mid")
    return FileResponse(path, media_type=mime, headers=headers)


def media_url(piece_id: str, ext: str) -> str:
    return f"/media/{piece_id}.{ext}"
