"""Intake: new mentions into rows past the cursor, with the skip rules (bots, #nobot, per-account and global limits)."""

from __future__ import annotations

import time
import zlib
from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session

from bot.db import Composition, Cursor, Kind, MentionRequest, State, count_since, transaction
from bot.platforms.base import Identity, Mention, id_key
from bot.request_text import genre_aliases, parse_request, strip_html
from bot.worker.base import TickReport, WorkerBase, log
from bot.worker.saving import fit_columns
from composer.contract import DEFAULT_TOP_P, ComposerUnavailable

ANSWERED_KINDS = (Kind.COMPOSE, Kind.MORE, Kind.HELP, Kind.SORRY)  # what counts against the per-account limit


def idempotency_key(platform: str, mention_id: str) -> str:
    return f"band-{platform}-{mention_id}"


def has_nobot(*texts: str) -> bool:
    """Whether any of ``texts`` (a bio, a display name: HTML) says #nobot, anywhere in it: a bio of 500
    visible characters can be ten times that in HTML around its links."""
    return any("#nobot" in strip_html(t, max_chars=None).lower() for t in texts if t)


def skipped(job: MentionRequest, reason: str) -> MentionRequest:
    """``job``, to be stored as skipped for ``reason``: no answer."""
    job.state, job.reason, job.kind = State.SKIPPED, reason, Kind.NONE
    return job


class Intake(WorkerBase):
    """Reads the mentions after the stored cursor and stores one row for each, once."""

    # --- the genres the composer serves now ---------------------------------------

    def served_genres(self) -> list[str]:
        if self._genres is None:
            infos = self.composer.genres()
            self._aliases = genre_aliases(infos)
            self._genres = sorted(g.name for g in infos if getattr(g, "current_version", None))
        return self._genres

    # --- reading mentions ----------------------------------------------------------

    def ingest(self, report: TickReport) -> None:
        me = self.start()
        last_id = self.read_cursor(me)
        not_before = self.clock() - timedelta(seconds=self.settings.bot_lookback_seconds)
        mentions, new_cursor = self.platform.fetch_mentions(last_id, not_before)
        report.fetched += len(mentions)
        if mentions:
            # Asked once, before any mention is stored: a composer outage (ComposerUnavailable) ends
            # the reading here, the cursor stays, and the same mentions are read again next tick.
            self.served_genres()
        for mention in mentions:
            self.store_mention(mention, me, report)
        self.save_cursor(me, new_cursor)

    def take(self, mentions: Sequence[Mention], report: TickReport) -> None:
        """Mentions the stream delivered, stored like polled ones (once: the unique key); the cursor stays
        where polling left it, so the next poll reads them again and finds them stored."""
        if not mentions:
            return
        me = self.start()
        report.fetched += len(mentions)
        self.served_genres()  # a composer outage: raised before any is stored; the catch-up poll reads them again
        for mention in mentions:
            self.store_mention(mention, me, report)

    def read_cursor(self, me: Identity) -> str | None:
        with self.sessions() as session:
            cursor = session.get(Cursor, (self.platform.name, me.acct))
            return cursor.last_id if cursor else None

    def store_mention(self, mention: Mention, me: Identity, report: TickReport) -> None:
        """The mention's row, unless it is stored already; the database itself unreachable or busy: raised."""
        try:
            with transaction(self.sessions) as session:
                if self.stored(session, mention.id):
                    return
                started = time.perf_counter()
                job = self.new_job_or_failed(session, mention, me)
                job.stage_seconds = {
                    "notice": round(max(0.0, (job.received_at - job.mentioned_at).total_seconds()), 3),
                    "parse": round(time.perf_counter() - started, 4),
                }
                session.add(job)
            report.stored += 1
            if self.stage is not None:  # told once the row is ours: a mention another worker stored is not counted
                for stage, seconds in job.stage_seconds.items():
                    self.stage(stage, seconds)
        except OperationalError:  # the database itself is unreachable or busy: read these again next tick
            raise
        except SQLAlchemyError as exc:
            if isinstance(exc, IntegrityError) and self.stored_now(mention.id):
                return  # another worker stored it first
            self.store_unstorable(mention, me, exc, report)

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

    # --- the new row ---------------------------------------------------------------

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
        job = self.received_row(mention, me)
        skip = self.skip_reason(mention, me)
        if skip:
            return skipped(job, skip)
        self.read_request(session, job, mention)
        if job.kind == Kind.HELP and self.replies_to_us(session, mention, me):
            # "thanks!", or another bot answering our reply: only a request for a piece gets an answer
            # here, so two bots can never keep replying to each other with help texts.
            return skipped(job, "a reply to our post that asks for no piece")
        limited = self.over_account_limit(session, mention.author.id)
        if limited is not None:
            job.kind = Kind.LIMIT
            if limited:
                job.state, job.reason = State.SKIPPED, "over the per-account limit (already told)"
        return job

    def received_row(self, mention: Mention, me: Identity) -> MentionRequest:
        """The mention as a row, received and not yet read."""
        author = mention.author
        return MentionRequest(
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

    def read_request(self, session: Session, job: MentionRequest, mention: Mention) -> None:
        """What the mention asks for, onto ``job``: its kind, genre, length, temperature, seed, key and density."""
        request = parse_request(mention.text, self.served_genres(), self.limits, self._aliases, pick=mention.id)
        job.parse_notes = list(request.notes)
        job.kind = request.kind
        if request.kind is Kind.HELP:
            job.genre = request.unknown_genre and request.unknown_genre[:64]
        else:
            job.seconds, job.temperature, job.top_p = request.seconds, request.temperature, DEFAULT_TOP_P
            job.seed = request.seed  # None: compose picks one (and may pick again if it fails)
            job.key, job.density = request.key, request.density  # as asked; a "more" adds its source's at compose
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

    # --- the skip rules and the limits ---------------------------------------------

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

    def global_cap_reached(self) -> bool:
        """Whether the pieces composed in the last hour reach the global cap (a new piece then waits)."""
        since = self.clock() - timedelta(hours=1)
        with self.sessions() as session:
            made = session.scalar(select(func.count()).select_from(Composition).where(Composition.created_at >= since))
        return (made or 0) >= self.settings.bot_global_per_hour
