"""Files of the archive under MEDIA_DIR: MIDI, audio and piano rolls, named by composition id.

The database stores paths relative to MEDIA_DIR, so the directory can move; files are
written to a temporary name and renamed, so a crash never leaves half a file behind.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from pathlib import Path

from composer.events import Note

AUDIO_MIME = {"mp3": "audio/mpeg", "ogg": "audio/ogg", "mp4": "video/mp4", "wav": "audio/wav"}


class MediaStore:
    def __init__(self, root: Path):
        self.root = Path(root)

    def relative(self, piece_id: str, ext: str) -> str:
        safe = "".join(c for c in piece_id if c.isalnum() or c == "-")[:64]
        if not safe:
            raise ValueError(f"unusable piece id {piece_id!r}")
        return f"{safe[:2]}/{safe}.{ext}"

    def path(self, relative: str) -> Path:
        path = (self.root / relative).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ValueError(f"{relative!r} is outside MEDIA_DIR")
        return path

    def write(self, piece_id: str, ext: str, data: bytes) -> str:
        relative = self.relative(piece_id, ext)
        target = self.path(relative)
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.part")
        try:
            part.write_bytes(data)
            os.replace(part, target)
        finally:
            part.unlink(missing_ok=True)
        return relative

    def read(self, relative: str) -> bytes:
        return self.path(relative).read_bytes()

    def pianoroll(self, piece_id: str, notes: Sequence[Note], title: str) -> str:
        from composer.pianoroll import render_pianoroll

        relative = self.relative(piece_id, "png")
        target = self.path(relative)
        target.parent.mkdir(parents=True, exist_ok=True)
        render_pianoroll(notes, target, title=title)
        return relative

    def render_audio(self, piece_id: str, notes: Sequence[Note], fmt: str) -> tuple[str, str]:
        """Audio made here when the composer sent none (composer.render writes atomically)."""
        from composer.render import render_audio

        relative = self.relative(piece_id, fmt)
        target = self.path(relative)
        target.parent.mkdir(parents=True, exist_ok=True)
        render_audio(notes, target, format=fmt)
        return relative, AUDIO_MIME[fmt]
