"""The Worker, the bot's one entry point: each tick reads new mentions, then moves every due job as far as it goes."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import timedelta

from sqlalchemy.exc import OperationalError

from bot.db import MentionRequest, claim_next
from bot.platforms.base import ConfigurationError, Mention, TransientError
from bot.worker.base import TickReport, log
from bot.worker.failures import FailurePolicy
from bot.worker.intake import Intake
from bot.worker.orphans import MediaSweep
from bot.worker.saving import LeaseGuard, LeaseLost
from bot.worker.steps import Steps
from composer.contract import ComposerUnavailable


class Worker(Intake, Steps, FailurePolicy, MediaSweep, LeaseGuard):
    """Intake, the steps, the failure policy, the media sweep and lease-guarded saving, joined; ``tick()`` runs them."""

    def tick(self, poll: bool = True, mentions: Sequence[Mention] = ()) -> TickReport:
        """Store ``mentions`` (the stream's), fetch new ones when ``poll``, then advance every due job once."""
        report = TickReport()
        self.start()
        self._genres = None
        if mentions:
            self.read_mentions(report, lambda: self.take(mentions, report))
        if poll:
            self.read_mentions(report, lambda: self.ingest(report))
        self.advance_due(report)
        self.sweep_if_due()
        log.log(logging.INFO if report.busy else logging.DEBUG, "tick: %s", report)
        return report

    def read_mentions(self, report: TickReport, read: Callable[[], None] | None = None) -> None:
        """``read`` (default ``ingest``); a failure to read is logged and marks the report ``unread``, and the
        jobs already stored still run."""
        try:
            (read or (lambda: self.ingest(report)))()
            return
        except ConfigurationError:
            raise
        except (TransientError, ComposerUnavailable, OperationalError) as exc:
            log.warning("reading mentions failed (%s); jobs already stored still run", exc)
        except Exception:  # a bug while reading must not stop the jobs already stored
            log.exception("reading mentions failed; jobs already stored still run")
        report.unread = True

    def advance_due(self, report: TickReport) -> None:
        """Claim each due job in turn (each once per tick) and advance it."""
        seen: set[int] = set()
        lease = timedelta(seconds=self.settings.bot_lease_seconds)
        while True:
            job = claim_next(self.sessions, self.settings.bot_worker_id, lease, self.clock(), exclude=seen)
            if job is None:
                break
            seen.add(job.id)
            self.advance_claimed(job, report)

    def advance_claimed(self, job: MentionRequest, report: TickReport) -> None:
        """``advance``, where an unforeseen failure is recorded and retried, and a lost lease ends the job's turn."""
        try:
            self.advance(job, report)
        except ConfigurationError:
            raise
        except LeaseLost as exc:
            log.warning("mention %s: %s; leaving it to its new owner", job.mention_id, exc)
        except Exception as exc:  # a bug or an unforeseen failure: recorded, retried, then apologised for
            log.exception("mention %s: unexpected error", job.mention_id)
            try:
                self.retry_later(job, exc, report)
            except LeaseLost as lost:
                log.warning("mention %s: %s; leaving it to its new owner", job.mention_id, lost)
