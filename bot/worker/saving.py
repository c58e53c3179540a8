"""Lease-guarded saving: a job's row is written, or read back, only while it is still leased to this worker."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from sqlalchemy import String, update

from bot.db import ACTIVE_STATES, MentionRequest, transaction
from bot.worker.base import WorkerBase, log

HEARTBEATS_PER_LEASE = 3  # a renewal lost to a slow database still leaves two thirds of the lease

UNCUT_COLUMNS = frozenset({"mention_id", "idempotency_key"})  # cut, these would point at another status


class LeaseLost(Exception):
    """The job is no longer ours (its lease ran out and another worker took it): stop working on it."""


def fit_columns(job: MentionRequest) -> MentionRequest:
    """Cut strings to their column's length and drop NULs (PostgreSQL enforces both; SQLite neither)."""
    for column in MentionRequest.__table__.columns:
        value = getattr(job, column.key, None)
        if not isinstance(value, str):
            continue
        value = value.replace("\x00", "")
        length = column.type.length if isinstance(column.type, String) else None
        if length and column.key not in UNCUT_COLUMNS:
            value = value[:length]
        setattr(job, column.key, value)
    return job


class LeaseGuard(WorkerBase):
    """``save`` and ``reload``: both raise ``LeaseLost`` once the job is no longer this worker's."""

    def save(self, job: MentionRequest, checkpoint: str | None = None, **changes: Any) -> None:
        """Commit ``changes`` to the job (and the objects in ``changes['_add']``), then pass ``checkpoint``."""
        extra = changes.pop("_add", ())
        values = self.with_lease(job, dict(changes))
        with transaction(self.sessions) as session:
            for obj in extra:  # first: the row may point at it
                session.merge(obj)
            session.flush()
            # Only while the row is still ours: a step that outlasted its lease may have lost the job
            # to another worker, and then must neither write nor go on to post (the rollback drops ``extra``).
            owned = session.execute(
                update(MentionRequest)
                .where(MentionRequest.id == job.id, MentionRequest.claimed_by == self.settings.bot_worker_id)
                .values(**values)
                .execution_options(synchronize_session=False)
            ).rowcount
            if owned != 1:
                raise LeaseLost(f"job {job.id} is no longer leased to {self.settings.bot_worker_id}")
        for key, value in values.items():
            setattr(job, key, value)
        if checkpoint:
            self.passed(checkpoint)

    def with_lease(self, job: MentionRequest, values: dict[str, Any]) -> dict[str, Any]:
        """``values`` with the lease: renewed by each step, ended with the job (or by a caller that sets it)."""
        if values.get("state", job.state) not in ACTIVE_STATES:
            values["claimed_by"] = values["lease_until"] = None
        elif "claimed_by" not in values:  # each step renews the lease
            values["lease_until"] = self.clock() + timedelta(seconds=self.settings.bot_lease_seconds)
        return values

    def reload(self, job: MentionRequest) -> None:
        """Refresh ``job`` from its row; LeaseLost unless the row is still ours and still to be done."""
        with self.sessions() as session:
            row = session.get(MentionRequest, job.id)
        if row is None or row.claimed_by != self.settings.bot_worker_id:
            raise LeaseLost(f"job {job.id} is no longer leased to {self.settings.bot_worker_id}")
        if row.state not in ACTIVE_STATES or row.reply_id is not None:
            raise LeaseLost(f"job {job.id} was finished elsewhere ({row.state})")
        for column in MentionRequest.__table__.columns:
            setattr(job, column.key, getattr(row, column.key))

    def renew_lease(self, job: MentionRequest) -> bool:
        """Push the job's lease a full BOT_LEASE_SECONDS on from now; False when it is no longer ours."""
        until = self.clock() + timedelta(seconds=self.settings.bot_lease_seconds)
        with transaction(self.sessions) as session:
            owned = session.execute(
                update(MentionRequest)
                .where(MentionRequest.id == job.id, MentionRequest.claimed_by == self.settings.bot_worker_id)
                .values(lease_until=until)
                .execution_options(synchronize_session=False)
            ).rowcount
        return owned == 1

    @contextmanager
    def heartbeat(self, job: MentionRequest) -> Iterator[None]:
        """Keep the job's lease alive while a long step (composing, the platform processing media) runs:
        a step may take longer than the lease, and another worker must not take the job meanwhile."""
        stop = threading.Event()
        interval = self.settings.bot_lease_seconds / HEARTBEATS_PER_LEASE

        def beat() -> None:
            while not stop.wait(interval):
                try:
                    if not self.renew_lease(job):
                        return  # the step's own save will find out, and stop
                except Exception:  # a database hiccup: the next beat tries again
                    log.warning("mention %s: could not renew the lease", job.mention_id, exc_info=True)

        thread = threading.Thread(target=beat, name=f"lease-{job.id}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
