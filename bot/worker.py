"""One tick of the bot: read new mentions into the database, then move each due job one step at a time.

Every step ends in a commit (received -> composed -> rendered -> uploaded -> replied), so
a worker killed anywhere resumes at the last committed step. The one step that cannot be
undone, posting the reply, is guarded three ways: the reply id is stored in the same
commit that ends the job, the post carries an Idempotency-Key derived from the mention,
and a job that had started posting before looks for its reply in the thread first.
Every write is conditional on the job still being leased to this worker: a step that
outlasted its lease and lost the job to another worker stops there (``LeaseLost``).
"""

from __future__ import annotations

import logging
import random
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import String, func, select, update
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from bot import replies
from bot.config import BotSettings
from bot.db import (
    ACTIVE_STATES,
    PIECE_KINDS,
    TEXT_KINDS,
    Composition,
    Cursor,
    Kind,
    MentionRequest,
    State,
    claim_next,
    count_since,
    reset_own_leases,
    transaction,
    utcnow,
)
from bot.describe import describe
from bot.media import MediaStore
from bot.platforms.base import (
    ConfigurationError,
    Identity,
    Media,
    Mention,
    PermanentError,
    Platform,
    RateLimited,
    TransientError,
    id_key,
    narrower_visibility,
)
from bot.request_text import Limits, genre_aliases, parse_request, strip_html
from composer.contract import (
    DEFAULT_TOP_P,
    ComposerClient,
    ComposerUnavailable,
    CompositionError,
    CompositionRejected,
    MusicSummary,
    new_seed,
)

log = logging.getLogger(__name__)

ANSWERED_KINDS = (Kind.COMPOSE, Kind.MORE, Kind.HELP, Kind.SORRY)  # what counts against the per-account limit
REPLY_LANGUAGE = "en"  # the replies are written in English, whatever the mention's language
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

    def __str__(self) -> str:
        return (
            f"fetched {self.fetched}, new {self.stored}, replied {self.replied}, failed {self.failed}, "
            f"skipped {self.skipped}, retrying {self.retried}, deferred {self.deferred}"
        )


def idempotency_key(platform: str, mention_id: str) -> str:
    return f"band-{platform}-{mention_id}"


def has_nobot(*texts: str) -> bool:
    return any("#nobot" in strip_html(t).lower() for t in texts if t)


class Worker:
    def __init__(
        self,
        settings: BotSettings,
        platform: Platform,
        composer: ComposerClient,
        sessions: sessionmaker[Session],
        clock: Callable[[], datetime] = utcnow,
        checkpoint: Callable[[str], None] | None = None,
    ):
        self.settings, self.platform, self.composer, self.sessions = settings, platform, composer, sessions
        self.clock = clock
        self.checkpoint = checkpoint  # called with each checkpoint's name as it is passed (the crash tests kill here)
        self.media = MediaStore(settings.resolved_media_dir)
        self.limits = Limits(settings.bot_min_seconds, settings.bot_max_seconds, settings.bot_default_seconds)
        self.me: Identity | None = None
        self._genres: list[str] | None = None
        self._aliases: dict[str, str] = {}  # words for genres, from their manifests (GenreInfo.aliases)

    # --- lifecycle ---------------------------------------------------------------

    def start(self) -> Identity:
        if self.me is None:
            self.me = self.platform.start()
            freed = reset_own_leases(self.sessions, self.settings.bot_worker_id)
            if freed:
                log.info("resuming %d job(s) this worker held when it stopped", freed)
        return self.me

    def tick(self) -> TickReport:
        """Fetch, store, then advance every due job once."""
        report = TickReport()
        self.start()
        self._genres = None
        try:
            self.ingest(report)
        except ConfigurationError:
            raise
        except (TransientError, ComposerUnavailable, OperationalError) as exc:
            log.warning("reading mentions failed (%s); jobs already stored still run", exc)
        except Exception:  # a bug while reading must not stop the jobs already stored
            log.exception("reading mentions failed; jobs already stored still run")
        seen: set[int] = set()
        lease = timedelta(seconds=self.settings.bot_lease_seconds)
        while True:
            job = claim_next(self.sessions, self.settings.bot_worker_id, lease, self.clock(), exclude=seen)
            if job is None:
                break
            seen.add(job.id)
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
        log.info("tick: %s", report)
        return report

    # --- reading mentions ----------------------------------------------------------

    def served_genres(self) -> list[str]:
        if self._genres is None:
            infos = self.composer.genres()
            self._aliases = genre_aliases(infos)
            self._genres = sorted(g.name for g in infos if getattr(g, "current_version", None))
        return self._genres

    def ingest(self, report: TickReport) -> None:
        me = self.start()
        name = self.platform.name
        with self.sessions() as session:
            cursor = session.get(Cursor, (name, me.acct))
            last_id = cursor.last_id if cursor else None
        not_before = self.clock() - timedelta(seconds=self.settings.bot_lookback_seconds)
        mentions, new_cursor = self.platform.fetch_mentions(last_id, not_before)
        report.fetched = len(mentions)
        if mentions:
            # Asked once, before any mention is stored: a composer outage (ComposerUnavailable) ends
            # the reading here, the cursor stays, and the same mentions are read again next tick.
            self.served_genres()
        for mention in mentions:
            try:
                with transaction(self.sessions) as session:
                    if self.stored(session, mention.id):
                        continue
                    session.add(self.new_job_or_failed(session, mention, me))
                report.stored += 1
            except OperationalError:  # the database itself is unreachable or busy: read these again next tick
                raise
            except SQLAlchemyError as exc:
                if isinstance(exc, IntegrityError) and self.stored_now(mention.id):
                    continue  # another worker stored it first
                self.store_unstorable(mention, me, exc, report)
        self.save_cursor(me, new_cursor)

    def stored(self, session: Session, mention_id: str) -> bool:
        query = select(MentionRequest.id).where(
            MentionRequest.platform == self.platform.name, MentionRequest.mention_id == mention_id
        )
        return session.scalar(query) is not None

    def stored_now(self, mention_id: str) -> bool:
        with self.sessions() as session:
            return self.stored(session, mention_id)

    def store_unstorable(self, mention: Mention, me: Identity, exc: Exception, report: TickReport) -> None:
        """A mention the database refused: keep a bare failed row if it takes one, else skip it, logged.

        Either way the cursor moves past it, so one bad mention never blocks all later ones.
        """
        log.error("mention %s could not be stored (%s: %s)", mention.id, type(exc).__name__, str(exc)[:500])
        try:
            with transaction(self.sessions) as session:
                session.add(self.failed_row(mention, me, f"could not be stored: {type(exc).__name__}: {exc}"))
            report.failed += 1
        except SQLAlchemyError as again:
            log.error("mention %s skipped: not even a failed row could be stored (%s)", mention.id, again)
            report.skipped += 1

    def failed_row(self, mention: Mention, me: Identity, reason: str) -> MentionRequest:
        return fit_columns(
            MentionRequest(
                platform=self.platform.name,
                bot_account=me.acct,
                mention_id=mention.id,
                idempotency_key=idempotency_key(self.platform.name, mention.id),
                requester_id=mention.author.id,
                requester_acct=mention.author.acct,
                mentioned_at=mention.created_at,
                received_at=self.clock(),
                next_attempt_at=self.clock(),
                kind=Kind.NONE,
                state=State.FAILED,
                reason=reason[:1000],
            )
        )

    def save_cursor(self, me: Identity, new_cursor: str | None) -> None:
        """Move the cursor forward only: a slower worker must not wind it back."""
        for _ in range(3):
            try:
                with transaction(self.sessions) as session:
                    cursor = session.get(Cursor, (self.platform.name, me.acct), with_for_update=True)
                    if cursor is None:
                        session.add(Cursor(platform=self.platform.name, account=me.acct, last_id=new_cursor))
                    elif new_cursor is not None and (
                        cursor.last_id is None or id_key(new_cursor) > id_key(cursor.last_id)
                    ):
                        cursor.last_id = new_cursor
                return
            except IntegrityError:  # another worker created the row at the same moment
                continue

    def new_job_or_failed(self, session: Session, mention: Mention, me: Identity) -> MentionRequest:
        """The new row; a mention that cannot even be read is stored as failed, so it never blocks the cursor."""
        try:
            return fit_columns(self.new_job(session, mention, me))
        except (ComposerUnavailable, SQLAlchemyError):  # not the mention's fault: the caller decides
            raise
        except Exception as exc:
            log.exception("mention %s could not be read", mention.id)
            return self.failed_row(mention, me, f"could not read the mention: {type(exc).__name__}: {exc}")

    def new_job(self, session: Session, mention: Mention, me: Identity) -> MentionRequest:
        """The row for a new mention, with what it asks for and whether to answer at all."""
        author = mention.author
        job = MentionRequest(
            platform=self.platform.name,
            bot_account=me.acct,
            mention_id=mention.id,
            notification_id=mention.notification_id,
            mention_url=mention.url,
            in_reply_to_id=mention.in_reply_to_id,
            idempotency_key=idempotency_key(self.platform.name, mention.id),
            requester_id=author.id,
            requester_acct=author.acct,
            requester_display_name=author.display_name,
            requester_url=author.url,
            text=mention.text,
            plain_text=strip_html(mention.text).strip()[:5000],
            visibility=mention.visibility,
            spoiler_text=mention.spoiler_text,
            language=mention.language,
            mentioned_at=mention.created_at,
            received_at=self.clock(),
            next_attempt_at=self.clock(),
            state=State.RECEIVED,
            attempts=0,
        )
        skip = self.skip_reason(mention, me)
        if skip:
            job.state, job.reason, job.kind = State.SKIPPED, skip, Kind.NONE
            return job
        request = parse_request(mention.text, self.served_genres(), self.limits, self._aliases)
        job.parse_notes = list(request.notes)
        job.kind = request.kind
        if request.kind is Kind.HELP:
            job.genre = request.unknown_genre and request.unknown_genre[:64]
        else:
            job.seconds, job.temperature, job.top_p = request.seconds, request.temperature, DEFAULT_TOP_P
            job.seed = request.seed  # None: compose picks one (and may pick again if it fails)
        if request.kind is Kind.MORE:
            parent = self.parent_piece(session, mention.in_reply_to_id)
            if parent is None:  # "more" to something that is not one of our pieces
                job.kind = Kind.HELP
            else:
                job.genre = parent.genre
        elif request.kind is Kind.COMPOSE:
            genres = self.served_genres()
            job.genre = request.genre or (genres[zlib.crc32(mention.id.encode()) % len(genres)] if genres else None)
            if job.genre is None:
                job.kind = Kind.HELP
        if job.kind == Kind.HELP and self.replies_to_us(session, mention, me):
            # "thanks!", or another bot answering our reply: only a request for a piece gets an answer
            # here, so two bots can never keep replying to each other with help texts.
            job.state, job.reason, job.kind = State.SKIPPED, "a reply to our post that asks for no piece", Kind.NONE
            return job
        limited = self.over_account_limit(session, author.id)
        if limited is not None:
            job.kind = Kind.LIMIT
            if limited:
                job.state, job.reason = State.SKIPPED, "over the per-account limit (already told)"
        return job

    def skip_reason(self, mention: Mention, me: Identity) -> str | None:
        author = mention.author
        if author.id == me.id:
            return "our own post"
        if author.bot:
            return "a bot account"
        if has_nobot(author.note, author.display_name):
            return "#nobot in the account's bio or name"
        if mention.mentioned_ids and me.id not in mention.mentioned_ids:
            return "does not address the bot"
        return None

    def replies_to_us(self, session: Session, mention: Mention, me: Identity) -> bool:
        """Whether the mention answers one of our posts (by the platform's account id, or a reply we stored)."""
        if mention.in_reply_to_account_id is not None:
            return mention.in_reply_to_account_id == me.id
        if not mention.in_reply_to_id:
            return False
        query = select(MentionRequest.id).where(
            MentionRequest.platform == self.platform.name, MentionRequest.reply_id == mention.in_reply_to_id
        )
        return session.scalar(query.limit(1)) is not None

    def over_account_limit(self, session: Session, requester_id: str) -> bool | None:
        """None under the limit; False when over it for the first time this hour (tell them), True after.

        Every reply counts (pieces, help texts, apologies), so nobody can draw unlimited replies.
        """
        since = self.clock() - timedelta(hours=1)
        recent = (
            MentionRequest.platform == self.platform.name,
            MentionRequest.requester_id == requester_id,
            MentionRequest.received_at >= since,
        )
        answered = count_since(session, *recent, MentionRequest.kind.in_(ANSWERED_KINDS))
        if answered < self.settings.bot_per_account_per_hour:
            return None
        return count_since(session, *recent, MentionRequest.kind == Kind.LIMIT) > 0

    def parent_piece(self, session: Session, in_reply_to_id: str | None) -> Composition | None:
        """The piece our reply ``in_reply_to_id`` carried, for a "more" continuing it."""
        if not in_reply_to_id:
            return None
        parent = session.scalar(
            select(MentionRequest).where(
                MentionRequest.platform == self.platform.name, MentionRequest.reply_id == in_reply_to_id
            )
        )
        if parent is None or parent.composition_id is None:
            return None
        return session.get(Composition, parent.composition_id)

    # --- advancing jobs ------------------------------------------------------------

    def advance(self, job: MentionRequest, report: TickReport) -> None:
        """Run the job's steps until it is done, must wait, or fails."""
        steps = {
            State.RECEIVED: self.compose,
            State.COMPOSED: self.render,
            State.RENDERED: self.upload,
            State.UPLOADED: self.reply,
        }
        try:
            while job.state in ACTIVE_STATES:
                if job.state == State.RECEIVED and job.kind in TEXT_KINDS:
                    self.reply(job)
                elif job.state == State.RECEIVED and self.global_cap_reached():
                    self.defer(job, timedelta(minutes=5), "global hourly cap reached")
                    report.deferred += 1
                    return
                else:
                    steps[State(job.state)](job)
                report.steps.append(f"{job.mention_id}:{job.state}")
        except (TransientError, ComposerUnavailable) as exc:
            self.retry_later(job, exc, report)
            return
        except (PermanentError, CompositionRejected, CompositionError) as exc:
            self.give_up(job, exc, report)
            return
        # LeaseLost passes up to tick(): the job is someone else's now, nothing more to record
        if job.state == State.REPLIED:
            report.replied += 1
        elif job.state == State.FAILED:
            report.failed += 1
        elif job.state == State.SKIPPED:
            report.skipped += 1

    def save(self, job: MentionRequest, checkpoint: str | None = None, **changes: Any) -> None:
        """Commit ``changes`` to the job (and the objects in ``changes['_add']``), then pass ``checkpoint``."""
        extra = changes.pop("_add", ())
        values = dict(changes)
        if values.get("state", job.state) not in ACTIVE_STATES:
            values["claimed_by"] = values["lease_until"] = None
        elif "claimed_by" not in values:  # each step renews the lease
            values["lease_until"] = self.clock() + timedelta(seconds=self.settings.bot_lease_seconds)
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

    def passed(self, checkpoint: str) -> None:
        """Tell the injected hook that the job just passed ``checkpoint`` ("composed", ..., "posted", "replied")."""
        if self.checkpoint is not None:
            self.checkpoint(checkpoint)

    def global_cap_reached(self) -> bool:
        since = self.clock() - timedelta(hours=1)
        with self.sessions() as session:
            made = session.scalar(select(func.count()).select_from(Composition).where(Composition.created_at >= since))
        return (made or 0) >= self.settings.bot_global_per_hour

    def compose(self, job: MentionRequest) -> None:
        primer = None
        parent_id = None
        if job.kind == Kind.MORE:
            with self.sessions() as session:
                parent = self.parent_piece(session, job.in_reply_to_id)
            if parent is None:
                raise PermanentError("the piece to continue is gone from the archive")
            primer, parent_id = self.media.read(parent.midi_path), parent.id
        started = time.perf_counter()
        seed_given = job.seed is not None  # the requester's seed is kept; ours may be replaced
        seed = job.seed if seed_given else new_seed()
        for attempt in range(3):
            try:
                piece = self.composer.compose(
                    job.genre,
                    seconds=job.seconds,
                    temperature=job.temperature,
                    top_p=job.top_p or DEFAULT_TOP_P,
                    seed=seed,
                    primer_midi=primer,
                    audio_format=self.platform.audio_format,
                    pianoroll=True,
                )
                break
            except (CompositionRejected, ComposerUnavailable):
                raise
            except CompositionError as exc:  # this seed gave a piece that cannot be rendered (near silence)
                if seed_given or attempt == 2:
                    raise
                log.warning("mention %s: seed %s failed (%s); trying another", job.mention_id, seed, exc.message)
                seed = new_seed()
        elapsed = time.perf_counter() - started
        if piece.audio is None:
            raise CompositionError("the composer sent the piece without its audio")
        midi_path = self.media.write(piece.id, "mid", piece.midi)
        audio_path = self.media.write(piece.id, self.platform.audio_format, piece.audio)
        pianoroll_path = self.media.write(piece.id, "png", piece.pianoroll) if piece.pianoroll else None
        composition = Composition(
            id=piece.id,
            request_id=job.id,
            parent_id=parent_id,
            genre=piece.genre,
            model_version=piece.model_version,
            seed=piece.seed,
            temperature=job.temperature,
            top_p=job.top_p or DEFAULT_TOP_P,
            seconds_requested=job.seconds,
            duration=piece.seconds,
            events=piece.events,
            midi_path=midi_path,
            audio_path=audio_path,
            audio_mime=piece.audio_mime,
            pianoroll_path=pianoroll_path,
            notes=piece.summary.notes,
            summary=piece.summary.to_dict(),
            compose_seconds=elapsed,
            created_at=self.clock(),
        )
        self.save(
            job,
            "composed",
            _add=[composition],
            composition_id=piece.id,
            seed=piece.seed,
            state=State.COMPOSED,
            composed_at=self.clock(),
        )

    def composition(self, job: MentionRequest) -> Composition:
        with self.sessions() as session:
            piece = session.get(Composition, job.composition_id)
        if piece is None:
            raise PermanentError(f"composition {job.composition_id} is missing from the archive")
        return piece

    def render(self, job: MentionRequest) -> None:
        """The alt text, from the summary the composer sent with the piece (its audio and picture are filed)."""
        piece = self.composition(job)
        if piece.summary is not None:
            piece.description = describe(MusicSummary.from_dict(piece.summary), piece.genre, piece.duration)
        else:  # composed by a bot version that made the description itself, and died before it did
            piece.description = f"A {piece.genre} piano piece composed by a neural network."
        self.save(job, "rendered", _add=[piece], state=State.RENDERED, rendered_at=self.clock())

    def upload(self, job: MentionRequest) -> None:
        piece = self.composition(job)
        if job.media_id is None:
            media = Media(
                path=self.media.path(piece.audio_path),
                mime=piece.audio_mime or "audio/mpeg",
                description=piece.description or f"A {piece.genre} piano piece.",
                thumbnail=self.media.path(piece.pianoroll_path) if piece.pianoroll_path else None,
            )
            media_id = self.platform.upload(media)
            self.save(job, "media-posted", media_id=media_id)
        self.platform.wait_for_media(job.media_id, self.settings.bot_media_timeout_seconds)
        self.save(job, "uploaded", state=State.UPLOADED, uploaded_at=self.clock())

    def reply_text(self, job: MentionRequest) -> str:
        limit = min(self.platform.max_chars, self.settings.bot_reply_limit_chars)
        if job.kind == Kind.HELP:
            return replies.help_reply(job.requester_acct, self.served_genres(), job.genre, limit)
        if job.kind == Kind.LIMIT:
            return replies.limit_reply(job.requester_acct, self.settings.bot_per_account_per_hour, limit)
        if job.kind == Kind.SORRY:
            return replies.sorry_reply(job.requester_acct, limit)
        piece = self.composition(job)
        return replies.piece_reply(
            job.requester_acct,
            piece.genre,
            piece.duration,
            piece.model_version,
            piece.seed,
            f"{self.settings.archive_base_url}/pieces/{piece.id}",
            job.parse_notes or (),
            continuation=job.kind == Kind.MORE,
            limit=limit,
        )

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

    def reply(self, job: MentionRequest) -> None:
        me = self.start()
        posted = None
        self.reload(job)  # the row, not our memory of it, says whether a reply may already be out
        if job.reply_started_at is not None:  # an earlier try may have posted before it died
            posted = self.platform.find_reply(job.mention_id, me)
            if posted:
                log.info("mention %s: found our earlier reply %s; not posting again", job.mention_id, posted.id)
        if posted is None:
            self.save(job, None, reply_started_at=self.clock())
            posted = self.platform.reply(
                job.mention_id,
                self.reply_text(job),
                visibility=narrower_visibility(job.visibility),
                idempotency_key=job.idempotency_key,
                media_ids=[job.media_id] if job.media_id and job.kind in PIECE_KINDS else None,
                spoiler_text=job.spoiler_text[:200] if job.spoiler_text else "",
                language=REPLY_LANGUAGE,
            )
            self.passed("posted")
        final = State.FAILED if job.kind == Kind.SORRY else State.REPLIED
        self.save(job, "replied", state=final, reply_id=posted.id, reply_url=posted.url, replied_at=self.clock())

    # --- failures --------------------------------------------------------------------

    def defer(self, job: MentionRequest, delay: timedelta, why: str) -> None:
        self.save(job, None, next_attempt_at=self.clock() + delay, last_error=why, claimed_by=None, lease_until=None)

    def retry_later(self, job: MentionRequest, exc: Exception, report: TickReport) -> None:
        message = f"{type(exc).__name__}: {exc}"[:1000]
        if isinstance(exc, RateLimited) and exc.retry_after is not None:
            # The platform's limit, not this request's failure: no attempt spent, back at the reset itself.
            attempts, delay = job.attempts, exc.retry_after
        else:
            attempts = job.attempts + 1
            if attempts >= self.settings.bot_max_attempts:
                log.error("mention %s: giving up after %d attempts: %s", job.mention_id, attempts, message)
                self.give_up(job, exc, report, attempts=attempts)
                return
            base = self.settings.bot_retry_base_seconds * 2 ** (attempts - 1)
            delay = max(base * random.uniform(0.8, 1.2), getattr(exc, "retry_after", None) or 0.0)
            delay = min(delay, 3600.0)
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

    def give_up(self, job: MentionRequest, exc: Exception, report: TickReport, attempts: int | None = None) -> None:
        """Record why; tell the requester once (a 'sorry' reply), unless we cannot reply at all."""
        message = f"{type(exc).__name__}: {exc}"[:1000]
        attempts = attempts if attempts is not None else job.attempts + 1
        if job.kind in TEXT_KINDS:  # a help, limit or sorry reply that cannot be posted: nothing more to say
            log.error("mention %s failed: %s", job.mention_id, message)
            self.save(job, None, state=State.FAILED, reason=message, last_error=message, attempts=attempts)
            report.failed += 1
            return
        log.error("mention %s failed (%s); telling the requester", job.mention_id, message)
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
