"""Failure policy: retry later with a growing delay, give up with one apology, or defer a job that must wait."""

from __future__ import annotations

import random
from datetime import timedelta

from bot.db import TEXT_KINDS, Kind, MentionRequest, State
from bot.platforms.base import RateLimited
from bot.worker.base import TickReport, log
from bot.worker.saving import LeaseGuard, LeaseLost


def error_message(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"[:1000]


class FailurePolicy(LeaseGuard):
    """What a failed or waiting job becomes; the apology goes out through ``advance`` (Steps, in ``Worker``)."""

    def defer(self, job: MentionRequest, delay: timedelta, why: str) -> None:
        self.save(job, None, next_attempt_at=self.clock() + delay, last_error=why, claimed_by=None, lease_until=None)

    def retry_later(self, job: MentionRequest, exc: Exception, report: TickReport) -> None:
        message = error_message(exc)
        if isinstance(exc, RateLimited) and exc.retry_after is not None:
            # The platform's limit, not this request's failure: no attempt spent, back at the reset itself.
            attempts, delay = job.attempts, exc.retry_after
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
