"""The archive database: one row per mention, the pieces composed for them, and read cursors.

A mention is stored before anything else happens (unique on platform + status id), then
moves through its states one committed step at a time, so a worker killed at any point
resumes where the last commit left it. The archive web (issue 7) reads the same tables:
``requests`` for who asked what and where the reply is, ``compositions`` for the pieces.

SQLite is the default; PostgreSQL is for production and several workers, which claim
rows with ``SELECT ... FOR UPDATE SKIP LOCKED``; on both, the claim is a conditional UPDATE
that only one worker can win.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    create_engine,
    event,
    func,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship, sessionmaker


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on both backends (SQLite keeps no zone of its own)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class State(StrEnum):
    RECEIVED = "received"
    COMPOSED = "composed"
    RENDERED = "rendered"
    UPLOADED = "uploaded"
    REPLIED = "replied"
    FAILED = "failed"
    SKIPPED = "skipped"


ACTIVE_STATES = (State.RECEIVED, State.COMPOSED, State.RENDERED, State.UPLOADED)


class Kind(StrEnum):
    """What a job answers with: every value ``requests.kind`` holds (stored, so a value is never renamed)."""

    COMPOSE = "compose"  # a new piece
    MORE = "more"  # the continuation of one of our pieces
    HELP = "help"  # the help text (also for a genre we cannot play)
    LIMIT = "limit"  # the per-account limit's one notice
    SORRY = "sorry"  # the apology for a piece that could not be made
    NONE = "none"  # no answer: skipped, or failed before its text was read


PIECE_KINDS = (Kind.COMPOSE, Kind.MORE)  # answered with a piece
TEXT_KINDS = (Kind.HELP, Kind.LIMIT, Kind.SORRY)  # answered with words only


class Base(DeclarativeBase):
    pass


class MentionRequest(Base):
    """One mention of the bot and everything done about it."""

    __tablename__ = "requests"
    __table_args__ = (
        UniqueConstraint("platform", "mention_id", name="uq_requests_platform_mention"),
        Index("ix_requests_claim", "state", "next_attempt_at"),
        Index("ix_requests_requester_time", "platform", "requester_id", "mentioned_at"),
        Index("ix_requests_reply", "platform", "reply_id"),
        Index("ix_requests_requester_acct", "requester_acct", "visibility"),  # the archive's search by requester
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    platform: Mapped[str] = mapped_column(String(16))
    bot_account: Mapped[str] = mapped_column(String(255), default="")
    mention_id: Mapped[str] = mapped_column(String(64))
    notification_id: Mapped[str | None] = mapped_column(String(64))
    mention_url: Mapped[str | None] = mapped_column(Text)
    in_reply_to_id: Mapped[str | None] = mapped_column(String(64))
    idempotency_key: Mapped[str] = mapped_column(String(128), unique=True)

    requester_id: Mapped[str] = mapped_column(String(64))
    requester_acct: Mapped[str] = mapped_column(String(255))
    requester_display_name: Mapped[str] = mapped_column(Text, default="")
    requester_url: Mapped[str | None] = mapped_column(Text)
    text: Mapped[str] = mapped_column(Text, default="")  # as posted (HTML on Mastodon): escape when showing
    plain_text: Mapped[str] = mapped_column(Text, default="")
    visibility: Mapped[str] = mapped_column(String(16), default="public")
    spoiler_text: Mapped[str] = mapped_column(Text, default="")
    language: Mapped[str | None] = mapped_column(String(16))

    kind: Mapped[str] = mapped_column(String(16), default=Kind.COMPOSE)  # a Kind
    genre: Mapped[str | None] = mapped_column(String(64))
    seconds: Mapped[float | None] = mapped_column(Float)
    temperature: Mapped[float | None] = mapped_column(Float)
    top_p: Mapped[float | None] = mapped_column(Float)
    seed: Mapped[int | None] = mapped_column(BigInteger)
    key: Mapped[str | None] = mapped_column(String(32))  # the key the mention asked, as key_name writes it (0005)
    density: Mapped[float | None] = mapped_column(Float)  # the notes per second it asked (0005)
    parse_notes: Mapped[list | None] = mapped_column(JSON)

    state: Mapped[str] = mapped_column(String(16), default=State.RECEIVED)  # a State
    reason: Mapped[str | None] = mapped_column(Text)  # why skipped or failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text)
    claimed_by: Mapped[str | None] = mapped_column(String(128))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)

    composition_id: Mapped[str | None] = mapped_column(ForeignKey("compositions.id"))
    media_id: Mapped[str | None] = mapped_column(String(64))
    reply_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # set before posting: check first on resume
    reply_id: Mapped[str | None] = mapped_column(String(64))
    reply_url: Mapped[str | None] = mapped_column(Text)

    mentioned_at: Mapped[datetime] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    composed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    rendered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    uploaded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    replied_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    # seconds each stage of the reply took (notice, parse, compose, render, upload, media, post): 0006
    stage_seconds: Mapped[dict | None] = mapped_column(JSON)

    composition: Mapped[Composition | None] = relationship(foreign_keys=[composition_id])


class Composition(Base):
    """A piece in the archive; media paths are relative to MEDIA_DIR."""

    __tablename__ = "compositions"
    __table_args__ = (
        Index("ix_compositions_created", "created_at", "id"),
        # the archive's filters with keyset paging on (created_at, id): migration 0003
        Index("ix_compositions_genre_created_id", "genre", "created_at", "id"),
        Index("ix_compositions_version_created_id", "model_version", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    request_id: Mapped[int | None] = mapped_column(Integer, index=True)  # the mention it answered
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("compositions.id"))  # a continuation's source
    genre: Mapped[str] = mapped_column(String(64))
    model_version: Mapped[str] = mapped_column(String(64))
    seed: Mapped[int] = mapped_column(BigInteger)
    temperature: Mapped[float] = mapped_column(Float)
    top_p: Mapped[float] = mapped_column(Float)
    seconds_requested: Mapped[float] = mapped_column(Float)
    duration: Mapped[float] = mapped_column(Float)
    events: Mapped[int] = mapped_column(Integer)
    notes: Mapped[int] = mapped_column(Integer, default=0)
    midi_path: Mapped[str] = mapped_column(Text)
    audio_path: Mapped[str | None] = mapped_column(Text)
    audio_mime: Mapped[str | None] = mapped_column(String(64))
    pianoroll_path: Mapped[str | None] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)  # the alt text
    summary: Mapped[dict | None] = mapped_column(JSON)  # composer.contract.MusicSummary, as the composer sent it
    # What the composer was asked (a "more" keeps its source's) and whether the model followed it (0005):
    # NULL when nothing was asked; the key the notes are in is summary["key"].
    asked_key: Mapped[str | None] = mapped_column(String(32))
    asked_density: Mapped[float | None] = mapped_column(Float)
    key_followed: Mapped[bool | None] = mapped_column(Boolean)
    compose_seconds: Mapped[float | None] = mapped_column(Float)
    hidden: Mapped[bool] = mapped_column(Boolean, default=False)  # operator takedown (issue 7)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Cursor(Base):
    """The newest notification seen, per platform and bot account."""

    __tablename__ = "cursors"

    platform: Mapped[str] = mapped_column(String(16), primary_key=True)
    account: Mapped[str] = mapped_column(String(255), primary_key=True)
    last_id: Mapped[str | None] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


PRIVATE_FILE, PRIVATE_DIR = 0o600, 0o700  # the archive holds direct messages' text: the owner's alone


def create_private_file(path: Path) -> None:
    """Create ``path`` (and its folder) readable by its owner alone, whatever the umask, unless it exists:
    SQLite gives its -wal and -shm files the database file's permissions."""
    if not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.parent.chmod(PRIVATE_DIR)
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, PRIVATE_FILE))


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL and a busy timeout so a reader never blocks the worker."""
    if url.startswith("sqlite"):
        path = make_url(url).database  # None or ":memory:" for an in-memory database ("sqlite://")
        if path and path != ":memory:":
            create_private_file(Path(path))
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(connection, _record) -> None:
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    # A server that stops answering fails a connection attempt in seconds, not the OS's minutes.
    return create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": 10})


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(sessions: sessionmaker[Session]) -> Iterator[Session]:
    with sessions() as session, session.begin():
        yield session


def claim_next(
    sessions: sessionmaker[Session],
    worker: str,
    lease: timedelta,
    now: datetime | None = None,
    exclude: Collection[int] = (),
) -> MentionRequest | None:
    """Take the oldest due, unleased job for ``worker`` until ``lease`` runs out; None when nothing is due.

    The claim itself is a conditional UPDATE (still due, lease free) whose row count says
    whether it won, so two workers never both take a row on either backend; on PostgreSQL
    the candidate is also locked with FOR UPDATE SKIP LOCKED, so workers pass each other by.
    A job leased by anyone, this worker id included, waits for its lease to end: a restarted
    worker with a stable id frees its own leases at start (``reset_own_leases``).
    """
    now = now or utcnow()
    skip = set(exclude)
    due = (
        MentionRequest.state.in_(ACTIVE_STATES),
        MentionRequest.next_attempt_at <= now,
        or_(MentionRequest.lease_until.is_(None), MentionRequest.lease_until < now),
    )
    while True:
        with transaction(sessions) as session:
            query = (
                select(MentionRequest.id)
                .where(*due)
                .where(MentionRequest.id.not_in(list(skip)) if skip else true())
                .order_by(MentionRequest.next_attempt_at, MentionRequest.id)
                .limit(1)
                .with_for_update(skip_locked=True)
            )
            job_id = session.scalar(query)
            if job_id is None:
                return None
            won = session.execute(
                update(MentionRequest)
                .where(MentionRequest.id == job_id, *due)
                .values(claimed_by=worker, lease_until=now + lease)
                .execution_options(synchronize_session=False)
            ).rowcount
            if won == 1:
                return session.get(MentionRequest, job_id, populate_existing=True)
        skip.add(job_id)  # another worker claimed it between our look and our update


def count_since(session: Session, *conditions: object) -> int:
    return session.scalar(select(func.count()).select_from(MentionRequest).where(*conditions)) or 0


def reset_own_leases(sessions: sessionmaker[Session], worker: str) -> int:
    """Free jobs a previous life of this worker held (called at start)."""
    with transaction(sessions) as session:
        result = session.execute(
            update(MentionRequest).where(MentionRequest.claimed_by == worker).values(claimed_by=None, lease_until=None)
        )
        return result.rowcount or 0
