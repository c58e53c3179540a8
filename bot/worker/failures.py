"""Failure policy: retry later with a growing delay, give up with one apology, or defer a job that must wait."""

from __future__ import annotations

import random
from datetime import timedelta

from bot.config import redact
from bot.db import TEXT_KINDS, Kind, MentionRequest, State
from bot.platforms.base import RateLimited
from bot.worker.base import TickReport, log
from bot.worker.saving import LeaseGuard, LeaseLost
from composer.contract import ComposerUnavailable

OUTAGE_STATUSES = (502, 503, 504)  # unreachable, busy, timed out: the composer, not the piece
OUTAGE_MAX_DELAY_SECONDS = 900.0


def is_outage(exc: Exception) -> bool:
    """Whether ``exc`` says the composer is unavailable (a connection error, 502, 503, 504) rather than
    failing this piece (a 500 is a real failure, and spends an attempt)."""
    return isinstance(exc, ComposerUnavailable) and exc.status in OUTAGE_STATUSES


def error_message(exc: Exception) -> str:
    """What went wrong, as logged and stored: one line's worth, credentials taken out."""
    return redact(f"{type(exc).__name__}: {exc}")[:1000]


class FailurePolicy(LeaseGuard):
    """What a failed or waiting job becomes; the apology goes out through ``advance`` (Steps, in ``Worker``)."""

    def defer(self, job: MentionRequest, delay: timedelta, why: str) -> None:
        self.save(job, None, next_attempt_at=self.clock() + delay, last_error=why, claimed_by=None, lease_until=None)

    def retry_later(self, job: MentionRequest, exc: Exception, report: TickReport) -> None:
        message = error_message(exc)
        if isinstance(exc, RateLimited) and exc.retry_after is not None:
            # The platform's limit, not this request's failure: no attempt spent, back at the reset itself.
            attempts, delay = job.attempts, exc.retry_after
        elif is_outage(exc):
            # The composer is down or busy, not failing this piece: the job waits, spending no attempt,
            # until it is BOT_OUTAGE_MAX_AGE_SECONDS old; then the requester hears that it did not work.
            age = (self.clock() - job.received_at).total_seconds() if job.received_at else 0.0
            if age >= self.settings.bot_outage_max_age_seconds:
                log.error("mention %s: the composer has been unavailable for %.0f s: %s", job.mention_id, age, message)
                self.give_up(job, exc, report)
                return
            attempts, delay = job.attempts, self.outage_delay(age, exc)
        else:
            attempts = job.attempts + 1
            if attempts >= self.settings.bot_max_attempts:
                log.error("mention %s: giving up after %d attempts: %s", job.mention_id, attempts, message)
                self.give_up(job, exc, report, attempts=attempts)
                return
            delay = self.backoff(attempts, exc)
        log.warning("mention %s: %s; retry %d in %.0f s", job.mention_id, message, attempts, delay)
        self.save(
            job,
            None,
            attempts=attempts,
            last_error=message,
            next_attempt_at=self.clock() + timedelta(seconds=delay),
            claimed_by=None,
            lease_until=None,
        )
        report.retried += 1

    def backoff(self, attempts: int, exc: Exception) -> float:
        """Seconds before the next try: doubling, jittered, at least the error's ``retry_after``, at most an hour."""
        base = self.settings.bot_retry_base_seconds * 2 ** (attempts - 1)
        delay = max(base * random.uniform(0.8, 1.2), getattr(exc, "retry_after", None) or 0.0)
        return min(delay, 3600.0)

    def outage_delay(self, age: float, exc: Exception) -> float:
        """Seconds before asking a composer that was unavailable again: growing with the job's age (the
        outage's length, at least), jittered, at least the answer's ``Retry-After``, at most 15 minutes."""
        delay = max(self.settings.bot_retry_base_seconds, age) * random.uniform(0.8, 1.2)
        return min(max(delay, getattr(exc, "retry_after", None) or 0.0), OUTAGE_MAX_DELAY_SECONDS)

    def give_up(self, job: MentionRequest, exc: Exception, report: TickReport, attempts: int | None = None) -> None:
        """Record why; tell the requester once (a 'sorry' reply), unless we cannot reply at all."""
        message = error_message(exc)
        attempts = attempts if attempts is not None else job.attempts + 1
        if job.kind in TEXT_KINDS:  # a help, limit or sorry reply that cannot be posted: nothing more to say
            log.error("mention %s failed: %s", job.mention_id, message)
            self.save(job, None, state=State.FAILED, reason=message, last_error=message, attempts=attempts)
            report.failed += 1
            return
        log.error("mention %s failed (%s); telling the requester", job.mention_id, message)
        self.apologise(job, message, report)

    def apologise(self, job: MentionRequest, message: str, report: TickReport) -> None:
        """Make the job a 'sorry' reply, committed, then try to send it at once."""
        self.save(
            job,
            None,
            kind=Kind.SORRY,
            reason=message,
            last_error=message,
            attempts=0,
            state=State.RECEIVED,
            next_attempt_at=self.clock(),
        )
        try:
            self.advance(job, report)
        except LeaseLost:
            raise
        except Exception:  # the failure is recorded; the apology is retried next tick
            log.exception("mention %s: could not send the apology", job.mention_id)
