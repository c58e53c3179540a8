"""Files of the archive under MEDIA_DIR: MIDI, audio and piano rolls, named by composition id.

The database stores paths relative to MEDIA_DIR, so the directory can move; files are
written to a temporary name and renamed, so a crash never leaves half a file behind.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

PRIVATE_FILE, PRIVATE_DIR = 0o600, 0o700  # as the database's (bot.db): pieces of direct messages are private


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
        """Store ``data`` as the piece's file, readable by its owner alone (a direct message's piece is private)."""
        relative = self.relative(piece_id, ext)
        target = self.path(relative)
        for folder in (self.root, target.parent):
            if not folder.exists():
                folder.mkdir(parents=True, exist_ok=True)
                folder.chmod(PRIVATE_DIR)
        part = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.part")
        try:
            with os.fdopen(os.open(part, os.O_CREAT | os.O_EXCL | os.O_WRONLY, PRIVATE_FILE), "wb") as file:
                file.write(data)
            os.replace(part, target)
        finally:
            part.unlink(missing_ok=True)
        return relative

    def read(self, relative: str) -> bytes:
        return self.path(relative).read_bytes()

    def remove(self, *relatives: str | None) -> None:
        """Delete these files (None and files already gone are passed over)."""
        for relative in relatives:
            if relative:
                self.path(relative).unlink(missing_ok=True)

    def files(self) -> Iterator[tuple[str, float]]:
        """Every file of the store, as (path relative to the root, modification time), ``.part`` files included."""
        if not self.root.is_dir():
            return
        for path in self.root.rglob("*"):
            if path.is_file():
                yield path.relative_to(self.root).as_posix(), path.stat().st_mtime
