"""Media files that no archive row owns, swept away.

A piece's files are written just before its row is committed: a worker that dies in between,
or whose job went to another worker meanwhile, leaves files that no composition names. The
sweep removes a piece's files once no row has its id and they are older than a grace period
far longer than that gap, so files about to be committed are never touched, and files the
web keeps beside the pieces' (any other name) are not the sweep's business.
"""

from __future__ import annotations

import re
import time

from sqlalchemy import select

from bot.db import Composition
from bot.worker.base import WorkerBase, log

ORPHAN_GRACE_SECONDS = 3600.0
SWEEP_EVERY_SECONDS = 3600.0
PIECE_FILE = re.compile(
    r"^[0-9a-f-]{2}/\.?(?P<id>[0-9a-f-]{8,64})\.(?:mid|mp3|ogg|mp4|wav|png)(?:\.[0-9a-f]{8}\.part)?$"
)


class MediaSweep(WorkerBase):
    """``sweep_orphans``, and ``sweep_if_due`` for the tick (once an hour per worker)."""

    _last_sweep: float | None = None

    def sweep_if_due(self) -> None:
        now = time.monotonic()
        if self._last_sweep is not None and now - self._last_sweep < SWEEP_EVERY_SECONDS:
            return
        self._last_sweep = now
        try:
            removed = self.sweep_orphans()
        except Exception:  # the sweep is housekeeping: it must never cost a tick
            log.warning("sweeping orphaned media failed", exc_info=True)
            return
        if removed:
            log.info("removed %d media file(s) that no piece owns", removed)

    def sweep_orphans(self, grace_seconds: float = ORPHAN_GRACE_SECONDS) -> int:
        """Delete piece files older than ``grace_seconds`` whose piece has no row; how many went."""
        candidates = [
            (path, match["id"])
            for path, mtime in self.media.files()
            if mtime < time.time() - grace_seconds
            if (match := PIECE_FILE.match(path))
        ]
        if not candidates:
            return 0
        with self.sessions() as session:
            owned = set(session.scalars(select(Composition.id)))
        orphans = [path for path, piece_id in candidates if piece_id not in owned]
        self.media.remove(*orphans)
        return len(orphans)
