"""The job's steps, compose -> render -> upload -> reply, each ending in a commit; ``advance`` runs them in turn."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta

from bot import replies
from bot.db import ACTIVE_STATES, PIECE_KINDS, TEXT_KINDS, Composition, Kind, MentionRequest, State
from bot.describe import describe
from bot.platforms.base import (
    Identity,
    Media,
    PermanentError,
    Posted,
    TransientError,
    narrower_visibility,
)
from bot.request_text import replay_text
from bot.worker.base import TickReport, log
from bot.worker.saving import LeaseGuard, LeaseLost
from composer.contract import (
    DEFAULT_TOP_P,
    ComposedPiece,
    ComposerUnavailable,
    CompositionError,
    CompositionRejected,
    MusicSummary,
    SilentPiece,
    new_seed,
)

REPLY_LANGUAGE = "en"  # the replies are written in English, whatever the mention's language


@dataclass(frozen=True)
class Asked:
    """The key ("D minor", as ``composer.contract.key_name`` writes it) and density (notes per second) to ask for."""

    key: str | None = None
    density: float | None = None

    @property
    def any(self) -> bool:
        return self.key is not None or self.density is not None


def count_outcome(job: MentionRequest, report: TickReport) -> None:
    """Count a job that has left the active states by how it ended."""
    if job.state == State.REPLIED:
        report.replied += 1
    elif job.state == State.FAILED:
        report.failed += 1
    elif job.state == State.SKIPPED:
        report.skipped += 1


class Steps(LeaseGuard):
    """The state machine; with Intake (the genres, the parent piece, the cap) and FailurePolicy, in ``Worker``."""

    def advance(self, job: MentionRequest, report: TickReport) -> None:
        """Run the job's steps until it is done, must wait, or fails."""
        try:
            if not self.run_steps(job, report):
                return
        except (TransientError, ComposerUnavailable) as exc:
            self.retry_later(job, exc, report)
            return
        except (PermanentError, CompositionRejected, CompositionError) as exc:
            self.give_up(job, exc, report)
            return
        # LeaseLost passes up to tick(): the job is someone else's now, nothing more to record
        count_outcome(job, report)

    def run_steps(self, job: MentionRequest, report: TickReport) -> bool:
        """Step by step until the job leaves the active states (True) or waits for the global cap (False)."""
        steps = {
            State.RECEIVED: self.compose,
            State.COMPOSED: self.render,
            State.RENDERED: self.upload,
            State.UPLOADED: self.reply,
        }
        while job.state in ACTIVE_STATES:
            if job.state == State.RECEIVED and job.kind in TEXT_KINDS:
                self.reply(job)
            elif job.state == State.RECEIVED and self.global_cap_reached():
                self.defer(job, timedelta(minutes=5), "global hourly cap reached")
                report.deferred += 1
                return False
            else:
                steps[State(job.state)](job)
            report.steps.append(f"{job.mention_id}:{job.state}")
        return True

    # --- compose: received -> composed ----------------------------------------------

    def compose(self, job: MentionRequest) -> None:
        """The piece, its files written and its archive row committed with the job's step."""
        primer, parent = self.primer(job)
        asked = self.asked(job, parent)
        started = time.perf_counter()
        with self.heartbeat(job):
            piece = self.compose_piece(job, primer, asked)
        elapsed = time.perf_counter() - started
        if piece.audio is None:
            raise CompositionError("the composer sent the piece without its audio")
        composition = self.file_piece(job, piece, parent.id if parent else None, elapsed, asked)
        # the composer renders the audio in the same pass; where it says how long that took, that is "render"
        rendered = getattr(piece, "render_seconds", None) or 0.0
        timings = self.timed(job, "compose", max(0.0, elapsed - rendered))
        try:
            self.save(
                job,
                "composed",
                _add=[composition],
                composition_id=piece.id,
                seed=piece.seed,
                state=State.COMPOSED,
                composed_at=self.clock(),
                stage_seconds=timings | {"render_audio": round(rendered, 3)} if rendered else timings,
            )
        except LeaseLost:  # the row went to another worker and ours was rolled back: its files belong to no row
            self.media.remove(composition.midi_path, composition.audio_path, composition.pianoroll_path)
            raise

    def primer(self, job: MentionRequest) -> tuple[bytes | None, Composition | None]:
        """The MIDI a "more" continues and its piece; (None, None) for a new piece."""
        if job.kind != Kind.MORE:
            return None, None
        with self.sessions() as session:
            parent = self.parent_piece(session, job.in_reply_to_id)
        if parent is None:
            raise PermanentError("the piece to continue is gone from the archive")
        return self.media.read(parent.midi_path), parent

    @staticmethod
    def asked(job: MentionRequest, parent: Composition | None) -> Asked:
        """The key and density to ask the composer for: the mention's, else (for a "more") its source's."""
        if parent is None:
            return Asked(job.key, job.density)
        return Asked(job.key or parent.asked_key, job.density if job.density is not None else parent.asked_density)

    def compose_piece(self, job: MentionRequest, primer: bytes | None, asked: Asked) -> ComposedPiece:
        """The composer's piece; our own seed is replaced (twice at most) when it gives one that cannot be rendered."""
        seed_given = job.seed is not None  # the requester's seed is kept; ours may be replaced
        seed = job.seed if seed_given else new_seed()
        for _ in range(2):
            try:
                return self.ask_composer(job, seed, primer, asked)
            except SilentPiece as exc:  # this seed gave no note at all
                if seed_given:
                    raise
                log.warning("mention %s: seed %s failed (%s); trying another", job.mention_id, seed, exc.message)
                seed = new_seed()
                continue
            except (CompositionRejected, ComposerUnavailable):
                raise
            except CompositionError as exc:  # this seed gave a piece that cannot be rendered (near silence)
                if seed_given:
                    raise
                log.warning("mention %s: seed %s failed (%s); trying another", job.mention_id, seed, exc.message)
                seed = new_seed()
        return self.ask_composer(job, seed, primer, asked)  # the third seed's failure is the job's

    def ask_composer(self, job: MentionRequest, seed: int, primer: bytes | None, asked: Asked) -> ComposedPiece:
        return self.composer.compose(
            job.genre,
            seconds=job.seconds,
            temperature=job.temperature,
            top_p=job.top_p or DEFAULT_TOP_P,
            seed=seed,
            primer_midi=primer,
            audio_format=self.platform.audio_format,
            pianoroll=True,
            key=asked.key,
            density=asked.density,
        )

    def file_piece(
        self,
        job: MentionRequest,
        piece: ComposedPiece,
        parent_id: str | None,
        elapsed: float,
        asked: Asked,
    ) -> Composition:
        """Write the piece's MIDI, audio and piano roll to the media store; the archive row pointing at them.

        What was asked is kept as the composer names it (as we asked it, from a composer too old
        to say), with whether the model followed it; NULL when nothing was asked.
        """
        midi_path = self.media.write(piece.id, "mid", piece.midi)
        audio_path = self.media.write(piece.id, self.platform.audio_format, piece.audio)
        pianoroll_path = self.media.write(piece.id, "png", piece.pianoroll) if piece.pianoroll else None
        return Composition(
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
            asked_key=piece.asked_key or asked.key,
            asked_density=piece.asked_density if piece.asked_density is not None else asked.density,
            key_followed=piece.controlled if asked.any else None,
            compose_seconds=elapsed,
            created_at=self.clock(),
        )

    def composition(self, job: MentionRequest) -> Composition:
        with self.sessions() as session:
            piece = session.get(Composition, job.composition_id)
        if piece is None:
            raise PermanentError(f"composition {job.composition_id} is missing from the archive")
        return piece

    # --- render: composed -> rendered; upload: rendered -> uploaded -------------------

    def render(self, job: MentionRequest) -> None:
        """The alt text, from the summary the composer sent with the piece (its audio and picture are filed)."""
        started = time.perf_counter()
        piece = self.composition(job)
        if piece.summary is not None:
            summary = MusicSummary.from_dict(piece.summary)
            piece.description = describe(summary, piece.genre, piece.duration, piece.asked_key)
        else:  # composed by a bot version that made the description itself, and died before it did
            piece.description = f"A {piece.genre} piano piece composed by a neural network."
        # the audio was rendered with the piece (render_audio, when the composer says); this is the alt text
        render = time.perf_counter() - started + float((job.stage_seconds or {}).get("render_audio", 0.0))
        timings = self.timed(job, "render", render)
        self.save(job, "rendered", _add=[piece], state=State.RENDERED, rendered_at=self.clock(), stage_seconds=timings)

    def upload(self, job: MentionRequest) -> None:
        piece = self.composition(job)
        if piece.audio_path is None:  # composed by a bot version that rendered audio itself, and died first
            raise PermanentError("the piece has no audio: composed before the composer sent audio with each piece")
        if job.media_id is None:
            media = Media(
                path=self.media.path(piece.audio_path),
                mime=piece.audio_mime or "audio/mpeg",
                description=piece.description or f"A {piece.genre} piano piece.",
                thumbnail=self.media.path(piece.pianoroll_path) if piece.pianoroll_path else None,
            )
            started = time.perf_counter()
            media_id = self.platform.upload(media)
            timings = self.timed(job, "upload", time.perf_counter() - started)
            self.save(job, "media-posted", media_id=media_id, stage_seconds=timings)
        started = time.perf_counter()
        with self.heartbeat(job):
            self.platform.wait_for_media(job.media_id, self.settings.bot_media_timeout_seconds)
        timings = self.timed(job, "media", time.perf_counter() - started)
        self.save(job, "uploaded", state=State.UPLOADED, uploaded_at=self.clock(), stage_seconds=timings)

    # --- reply: uploaded (or a text's received) -> replied ----------------------------

    def reply(self, job: MentionRequest) -> None:
        """Post the reply once: a job that started posting before looks for its earlier reply first."""
        me = self.start()
        self.reload(job)  # the row, not our memory of it, says whether a reply may already be out
        posted = self.earlier_reply(job, me)
        timings = job.stage_seconds
        if posted is None:
            self.save(job, None, reply_started_at=self.clock())
            started = time.perf_counter()
            posted = self.post_reply(job)
            timings = self.timed(job, "post", time.perf_counter() - started)
            self.passed("posted")
        final = State.FAILED if job.kind == Kind.SORRY else State.REPLIED
        self.save(
            job,
            "replied",
            state=final,
            reply_id=posted.id,
            reply_url=posted.url,
            replied_at=self.clock(),
            stage_seconds=timings,
        )

    def earlier_reply(self, job: MentionRequest, me: Identity) -> Posted | None:
        """Our reply from an earlier try that may have posted before it died; None if none is found."""
        if job.reply_started_at is None:
            return None
        posted = self.platform.find_reply(job.mention_id, me)
        if posted:
            log.info("mention %s: found our earlier reply %s; not posting again", job.mention_id, posted.id)
        return posted

    def post_reply(self, job: MentionRequest) -> Posted:
        return self.platform.reply(
            job.mention_id,
            self.reply_text(job),
            visibility=narrower_visibility(job.visibility),
            idempotency_key=job.idempotency_key,
            media_ids=[job.media_id] if job.media_id and job.kind in PIECE_KINDS else None,
            spoiler_text=replies.content_warning(job.spoiler_text),
            language=REPLY_LANGUAGE,
        )

    def reply_text(self, job: MentionRequest) -> str:
        limit = min(self.platform.max_chars, self.settings.bot_reply_limit_chars)
        if job.kind == Kind.HELP:
            return replies.help_reply(job.requester_acct, self.served_genres(), job.genre, limit)
        if job.kind == Kind.LIMIT:
            return replies.limit_reply(job.requester_acct, self.settings.bot_per_account_per_hour, limit)
        if job.kind == Kind.SORRY:
            return replies.sorry_reply(job.requester_acct, limit)
        piece = self.composition(job)
        heard = (piece.summary or {}).get("key")
        # the head names the key asked only when the notes are in it (the composer moves a piece to
        # the tonic asked, whatever its model; the mode is its candidates' and the model's doing)
        in_key = piece.asked_key is not None and heard == piece.asked_key
        caveat = ""
        if piece.asked_key and not in_key:
            if piece.key_followed is False:  # a model trained without controls composed it as it liked
                caveat = replies.not_followed(piece.genre, piece.asked_key, piece.asked_density, heard)
            else:  # the model took the key, the notes settled elsewhere
                caveat = replies.came_out_in(heard)
        elif piece.key_followed is False and piece.asked_density is not None:
            caveat = replies.not_followed(piece.genre, None, piece.asked_density, heard)
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
            key=piece.asked_key,
            caveat=caveat,
            again=replay_text(
                piece.genre,
                piece.seed,
                piece.temperature,
                piece.asked_key,
                piece.asked_density,
                # the length too when it is not the default: a form plan's sections follow the length
                piece.seconds_requested if piece.seconds_requested != self.limits.default_seconds else None,
            ),
            key_followed=in_key,
        )
