"""What every part of the worker shares: its collaborators, its start, the checkpoint hook and the tick's report."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from bot.config import BotSettings
from bot.db import MentionRequest, reset_own_leases, utcnow
from bot.media import MediaStore
from bot.platforms.base import Identity, Platform
from bot.request_text import Limits
from composer.contract import ComposerClient

log = logging.getLogger("bot.worker")  # one logger for all the worker's modules


@dataclass
class TickReport:
    fetched: int = 0
    stored: int = 0
    replied: int = 0
    failed: int = 0
    skipped: int = 0
    retried: int = 0
    deferred: int = 0
    steps: list[str] = field(default_factory=list)
    unread: bool = False
    """Reading mentions failed (the stream's or a poll's): the loop polls again at the polling interval,
    not the stream's catch-up one, since the cursor still stands before them."""

    @property
    def busy(self) -> bool:
        """Whether the tick did anything (an idle worker logs nothing at INFO)."""
        return any((self.fetched, self.stored, self.replied, self.failed, self.skipped, self.retried, self.deferred))

    def __str__(self) -> str:
        return (
            f"fetched {self.fetched}, new {self.stored}, replied {self.replied}, failed {self.failed}, "
            f"skipped {self.skipped}, retrying {self.retried}, deferred {self.deferred}"
        )


class WorkerBase:
    """The state the worker's parts share (``Worker`` joins them): settings, platform, composer, database, clock."""

    def __init__(
        self,
        settings: BotSettings,
        platform: Platform,
        composer: ComposerClient,
        sessions: sessionmaker[Session],
        clock: Callable[[], datetime] = utcnow,
        checkpoint: Callable[[str], None] | None = None,
        stage: Callable[[str, float], None] | None = None,
    ):
        self.settings, self.platform, self.composer, self.sessions = settings, platform, composer, sessions
        self.clock = clock
        self.checkpoint = checkpoint  # called with each checkpoint's name as it is passed (the crash tests kill here)
        self.stage = stage  # told each stage's seconds as it ends (the Prometheus histogram)
        self.media = MediaStore(settings.resolved_media_dir)
        self.limits = Limits(settings.bot_min_seconds, settings.bot_max_seconds, settings.bot_default_seconds)
        self.me: Identity | None = None
        self._genres: list[str] | None = None
        self._aliases: dict[str, str] = {}  # words for genres, from their manifests (GenreInfo.aliases)

    def start(self) -> Identity:
        if self.me is None:
            self.me = self.platform.start()
            freed = reset_own_leases(self.sessions, self.settings.bot_worker_id)
            if freed:
                log.info("resuming %d job(s) this worker held when it stopped", freed)
        return self.me

    def timed(self, job: MentionRequest, stage: str, seconds: float) -> dict[str, float]:
        """``job``'s stage timings with ``stage`` added (a new dict: the JSON column sees the change), told to
        the ``stage`` hook; a stage run again (a retry) counts its last run."""
        if self.stage is not None:
            self.stage(stage, seconds)
        return {**(job.stage_seconds or {}), stage: round(seconds, 3)}

    def passed(self, checkpoint: str) -> None:
        """Tell the injected hook that the job just passed ``checkpoint`` ("composed", ..., "posted", "replied")."""
        if self.checkpoint is not None:
            self.checkpoint(checkpoint)
