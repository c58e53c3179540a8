"""What a composition request means and what comes back, shared by the service and the clients.

The HTTP service and the in-process client check requests here and build results here, so
they refuse the same requests with the same messages and give the same piece for a seed.
"""

from __future__ import annotations

import base64
import binascii
import logging
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from composer.analysis.musicality import candidate_seeds, ranked_candidates
from composer.analysis.summary import summarize
from composer.codec import events
from composer.codec.controls import control_vector, parse_density
from composer.codec.keys import estimate_key, mode_change_table, parse_key
from composer.codec.midi import MidiError, load_notes, midi_bytes
from composer.contract import (
    AUDIO_FORMATS,
    AUDIO_MIME,
    FORMS,
    FREE_FORM,
    MAX_CANDIDATES,
    MAX_SECONDS,
    MAX_SEED,
    SILENT_PIECE,
    ComposedPiece,
    CompositionError,
    CompositionRejected,
    SilentPiece,
    candidates_ranked,
)
from composer.corpus.genres import UnknownGenreError, load_genre
from composer.sampling.sample import RESTATED, SampleRequest, fewest_events, piece_notes, primer_tokens, validate

MAX_PRIMER_EVENTS = 20_000  # priming reads the whole primer in one pass; this bounds that pass
MAX_PRIMER_SPAN_SECONDS = 3600.0  # a primer is the end of a piece: an hour is far more than any needs
MAX_PRIMER_TICKS = 1 << 22  # pretty_midi keeps a float per tick: 32 MB, an hour at 960 ticks a beat and 60 bpm
MAX_PRIMER_TOKENS = 100_000  # a token primer's length, as the service's schema caps it


def decode_primer_midi(primer: str) -> bytes:
    """Base64 text to MIDI bytes; CompositionRejected when it is not base64."""
    try:
        return base64.b64decode(primer, validate=True)
    except (binascii.Error, ValueError):
        raise CompositionRejected(
            "primer is not valid base64 (send a MIDI file base64-encoded, or a list of event tokens)"
        ) from None


def primer_window(notes: Sequence[events.Note], seconds: float) -> list[events.Note]:
    """The notes that ``primer_tokens(encode(notes), seconds)`` reads, so that only they are encoded.

    A primer's silences cost tokens (one per second), so a few bytes of MIDI with a note far
    in the future would encode to millions of them; its last ``seconds`` need only the notes
    still sounding there, plus the two earlier notes that fix where the cut falls within a
    long time shift (the last event before it) and the velocity the cut restates (the last
    onset before it). The encoding of what is kept has the very same tail.
    """
    ordered = sorted(notes, key=lambda n: (n.start, n.pitch))  # encode's order: its ties stay
    starts = [events.quantize(n.start) for n in ordered]
    ends = [max(events.quantize(n.end), start + 1) for n, start in zip(ordered, starts)]
    if not ordered:
        return []
    cut = max(0, max(ends) - round(seconds * events.STEPS_PER_SECOND))
    kept = {i for i, end in enumerate(ends) if end >= cut}
    before = [i for i, end in enumerate(ends) if end < cut]  # every event of these lies before the cut
    if before:
        kept.add(max(before, key=lambda i: ends[i]))  # the last event before the cut
    onsets = [i for i, start in enumerate(starts) if start < cut]
    if onsets:
        kept.add(max(onsets, key=lambda i: (starts[i], i)))  # the velocity in force at the cut
    return [ordered[i] for i in sorted(kept)]


def _midi_primer_tokens(primer: bytes, primer_seconds: float) -> np.ndarray:
    """A MIDI primer's tokens, its last ``primer_seconds`` only; bounded in time and memory whatever its bytes."""
    try:
        notes = load_notes(primer, max_ticks=MAX_PRIMER_TICKS)
    except MidiError as exc:
        raise CompositionRejected(f"primer: {str(exc).removeprefix('<bytes>: ')}") from None
    span = max((n.end for n in notes), default=0.0)
    if not span <= MAX_PRIMER_SPAN_SECONDS:
        raise CompositionRejected(f"primer lasts {span:.0f} s, more than {MAX_PRIMER_SPAN_SECONDS:g} s")
    window = primer_window(notes, primer_seconds)
    if len(window) > MAX_PRIMER_EVENTS:  # each note kept puts at least its note-off in the tail
        raise CompositionRejected(f"primer too dense: over {MAX_PRIMER_EVENTS} events in its last {primer_seconds:g} s")
    try:
        return events.encode(window)
    except ValueError as exc:
        raise CompositionRejected(f"primer MIDI cannot be encoded: {exc}") from None


def primer_from(primer: bytes | Sequence[int] | None, primer_seconds: float) -> np.ndarray | None:
    """The last ``primer_seconds`` of a primer (MIDI bytes or event tokens) as tokens to continue from."""
    if primer is None:
        return None
    if not 0 < primer_seconds <= MAX_SECONDS:
        raise CompositionRejected(f"primer_seconds must be in (0, {MAX_SECONDS:g}], got {primer_seconds:g}")
    if isinstance(primer, bytes | bytearray):
        tokens = _midi_primer_tokens(bytes(primer), primer_seconds)
    else:
        values = list(primer)
        if len(values) > MAX_PRIMER_TOKENS or not all(
            isinstance(t, int | np.integer) and not isinstance(t, bool) and 0 <= t < events.NUM_EVENTS for t in values
        ):  # checked as Python ints: a huge one must not overflow numpy first
            last, most = events.NUM_EVENTS - 1, MAX_PRIMER_TOKENS
            raise CompositionRejected(f"primer tokens must be performance events 0..{last}, at most {most}")
        tokens = np.asarray(values, dtype=np.int64)
    tokens = primer_tokens(tokens.astype(np.int64), primer_seconds)
    if tokens.size > MAX_PRIMER_EVENTS:
        raise CompositionRejected(f"primer too dense: {tokens.size} events (at most {MAX_PRIMER_EVENTS})")
    return tokens if tokens.size else None


def sample_request(
    seconds: float,
    temperature: float,
    top_p: float,
    seed: int,
    primer: np.ndarray | None = None,
    max_seconds: float = MAX_SECONDS,
    key: str | None = None,
    density: float | None = None,
    form: str | None = None,
    style: GenreStyle | None = None,
) -> SampleRequest:
    """A checked SampleRequest; CompositionRejected (422) says what is wrong. ``form``: a plan
    from ``piece_form``, or None for none; ``style``: how the genre shapes its pieces (restate,
    key hold, cache, echo, the density asked when none is; None: the model alone)."""
    try:
        asked_key = parse_key(key) if key else None
        asked_density = parse_density(density) if density is not None else None
    except ValueError as exc:
        raise CompositionRejected(str(exc)) from None
    if asked_density is None and style is not None:  # the genre's own pace, for a model that takes one
        asked_density = style.density
    controls = control_vector(asked_key, asked_density) if asked_key or asked_density is not None else None
    if not 0 < seconds <= max_seconds:
        raise CompositionRejected(f"seconds must be in (0, {max_seconds:g}], got {seconds:g}")
    if not 0 <= seed <= MAX_SEED:
        raise CompositionRejected(f"seed must be in 0..{MAX_SEED}, got {seed}")
    shaping = (style or GenreStyle()).sampling_options()
    request = SampleRequest(seconds, seed, temperature, top_p, primer, controls, form, **shaping)
    try:
        validate(request)
    except ValueError as exc:
        raise CompositionRejected(str(exc)) from None
    return request


@dataclass(frozen=True)
class GenreStyle:
    """How a genre shapes its pieces, from its manifest (composer.corpus.genres), read once per
    request; the defaults are those of a genre served from a models directory alone."""

    form: str | None = None
    """Its form plan (composer.contract.FORMS); None: free."""
    restate: float = RESTATED
    """The share of a restated section replayed as it first went."""
    cache: float = 0.0
    """The neural cache's weight (composer.sampling.cache); 0: the model alone."""
    key_hold: float = 0.0
    """How firmly a piece keeps the key it set out in (SampleRequest.key_hold); 0: the model alone."""
    echo: float = 0.0
    """Seconds of each phrase of new material played twice (SampleRequest.echo); 0: none."""
    echo_gap: float = 0.0
    """Seconds of free play after each echo (SampleRequest.echo_gap)."""
    profile: Mapping[str, float] = field(default_factory=dict)
    """What its real music measures (the manifest's ``[structure]``): the candidates' target."""
    keys: Mapping[str, float] = field(default_factory=dict)
    """The keys its real music is in (the manifest's ``[keys]``): where a piece asked for none goes."""
    density: float | None = None
    """Notes per second a conditioned model is asked for when the listener asks none; None: its own pace."""

    def sampling_options(self) -> dict[str, float]:
        """What the sampler takes from the style: SampleRequest's restate, key_hold, cache, echo and echo_gap."""
        return {
            "restate": self.restate,
            "key_hold": self.key_hold,
            "cache": self.cache,
            "echo": self.echo,
            "echo_gap": self.echo_gap,
        }


log = logging.getLogger(__name__)
_warned: set[str] = set()  # genres whose broken manifest was already reported


def genre_style(genre: str, genres_dir: Path) -> GenreStyle:
    """The genre's ``GenreStyle``; the defaults for a genre without a manifest."""
    try:
        manifest = load_genre(genre, genres_dir)
    except UnknownGenreError:  # a genre served from a models directory alone
        return GenreStyle()
    except ValueError as exc:  # a broken manifest: serve, but say why the genre sounds plain
        if genre not in _warned:
            _warned.add(genre)
            log.warning("composing %s without its manifest's settings: %s", genre, exc)
        return GenreStyle()
    return GenreStyle(
        form=manifest.form,
        restate=RESTATED if manifest.restate is None else float(manifest.restate),
        cache=float(manifest.cache),
        key_hold=float(manifest.key_hold),
        echo=float(manifest.echo),
        echo_gap=float(manifest.echo_gap),
        profile=dict(manifest.structure),
        keys=dict(manifest.keys),
        density=manifest.density,
    )


def piece_form(asked: str | None, style: GenreStyle) -> str | None:
    """The form plan a piece follows: the one asked for, none for FREE_FORM, else the genre's own."""
    if asked == FREE_FORM:
        return None
    if asked is not None:
        if asked not in FORMS:
            raise CompositionRejected(f"form must be one of {', '.join((*FORMS, FREE_FORM))}, got {asked!r}")
        return asked
    return style.form


def usual_key(tokens: np.ndarray, keys: Mapping[str, float], seed: int) -> str | None:
    """For a piece asked for no key: one of the genre's usual keys in the piece's own mode, drawn
    by their shares with the piece's seed (so a seed keeps its piece), for ``fit_to_key`` to move
    it to. None (the piece stays as it is) when the genre names no key in that mode."""
    found = estimate_key(piece_notes(tokens))
    if found is None:
        return None
    names = sorted(name for name in keys if parse_key(name).mode == found[0].mode)
    if not names:
        return None
    weights = np.array([keys[name] for name in names])
    return names[int(np.random.default_rng(seed).choice(len(names), p=weights / weights.sum()))]


def place_in_key(tokens: np.ndarray, key: str | None, keys: Mapping[str, float], seed: int) -> np.ndarray:
    """A fresh piece in the key asked, or, asked none, in one of the genre's usual keys."""
    return fit_to_key(tokens, key or usual_key(tokens, keys, seed))


def keep_and_place(
    candidates: Sequence[tuple[np.ndarray, float] | None], key: str | None, seed: int, style: GenreStyle, primed: bool
) -> tuple[int, np.ndarray]:
    """The candidate kept (the best by ``rank_candidates`` with the genre's profile, or with a key
    asked, the best heard in that key once placed; None: one not ranked, see ``candidates_ranked``)
    and its tokens, placed in the key asked or the genre's usual one (``place_in_key``) unless it
    continues a primer, which keeps its primer's key: what the service, the in-process client and
    ``composer sample`` all do."""
    ranked_at = [i for i, c in enumerate(candidates) if c is not None]
    scored = [candidates[i] for i in ranked_at]
    i, tokens = _keep_and_place(scored, key, seed, style, primed)
    return ranked_at[i], tokens


def _keep_and_place(
    scored: Sequence[tuple[np.ndarray, float]], key: str | None, seed: int, style: GenreStyle, primed: bool
) -> tuple[int, np.ndarray]:
    ranked = rank_candidates(scored, key, style.profile)
    if primed:
        return ranked[0], scored[ranked[0]][0]
    best = place_in_key(scored[ranked[0]][0], key, style.keys, seed)
    if key is None:
        return ranked[0], best
    # A recast or ambiguous piece can still be heard in a neighbouring key (its dominant, its
    # relative): the best candidate heard in the key asked wins over a better one that is not.
    asked = parse_key(key)
    for i in ranked:
        tokens = best if i == ranked[0] else place_in_key(scored[i][0], key, style.keys, seed)
        found = estimate_key(piece_notes(tokens))
        if found is not None and found[0] == asked:
            return i, tokens
    return ranked[0], best


def raced(scored: Sequence[tuple[np.ndarray, float]]) -> list[tuple[np.ndarray, float] | None]:
    """A piece's candidates, each sampled to its end, as a race would have left them: those past
    ``candidates_ranked`` None. What the service and the in-process client get by not waiting."""
    kept = fewest_events([(len(tokens), True) for tokens, _ in scored], candidates_ranked(len(scored)))
    return [candidate if i in kept else None for i, candidate in enumerate(scored)]


def candidate_requests(request: SampleRequest, count: int) -> list[SampleRequest]:
    """The request's candidates: itself first, then the same with seeds derived from its own."""
    if not 1 <= count <= MAX_CANDIDATES:
        raise CompositionRejected(f"candidates must be in 1..{MAX_CANDIDATES}, got {count}")
    return [replace(request, seed=seed) for seed in candidate_seeds(request.seed, count)]


def rank_candidates(
    scored: Sequence[tuple[np.ndarray, float]], key: str | None = None, profile: Mapping[str, float] | None = None
) -> list[int]:
    """The candidates' indices, most musical first, given as tokens and log-likelihood per event
    (with a key asked, one in its mode is preferred: ``fit_to_key`` moves a tonic freely, but
    recasting a mode changes the notes; ``profile``: the genre's, ``GenreStyle.profile``)."""
    if len(scored) == 1:
        return [0]
    measured = [(ll, piece_notes(t), events.duration_steps(t) / events.STEPS_PER_SECOND) for t, ll in scored]
    return ranked_candidates(measured, parse_key(key).mode if key else None, profile)


PIANO_RANGE = (21, 108)


def fit_to_key(tokens: np.ndarray, key: str | None) -> np.ndarray:
    """The piece in the key asked: recast in the mode asked when its notes are in the other one
    (``mode_change_table``: C major -> C minor), then moved by the smallest transposition (keeping
    it on the piano's keys) that puts its tonic on the one asked. Unchanged when no key was asked
    or its notes have none."""
    if not key:
        return tokens
    found = estimate_key(piece_notes(tokens))
    span = events.pitch_range(tokens)
    if found is None or span is None:
        return tokens
    asked = parse_key(key)
    if found[0].mode != asked.mode:  # none of the candidates came out in the mode asked
        tokens = events.map_pitches(tokens, mode_change_table(found[0], asked.mode))
        span = events.pitch_range(tokens)
    up = (asked.tonic - found[0].tonic) % 12
    for shift in sorted((up, up - 12), key=abs):
        if PIANO_RANGE[0] <= span[0] + shift and span[1] + shift <= PIANO_RANGE[1]:
            return events.transpose(tokens, shift)
    return tokens


def check_audio_format(audio_format: str | None) -> None:
    """Refuse an audio format before any sampling: unknown (422) or not renderable here (501)."""
    if audio_format is None:
        return
    if audio_format not in AUDIO_FORMATS:
        raise CompositionRejected(f"audio_format must be one of {', '.join(AUDIO_FORMATS)}, got {audio_format!r}")
    try:
        from composer.audio import render
    except ImportError as exc:
        raise CompositionRejected(f"audio rendering is not available here ({exc})", 501) from None
    try:
        render.find_soundfont()
        render.require_tool("fluidsynth")
        if audio_format != "wav":
            render.require_tool("ffmpeg")
    except render.RenderError as exc:
        raise CompositionRejected(f"audio rendering is not available here: {exc}", 501) from None


def render_audio(notes: Sequence[events.Note], audio_format: str) -> tuple[bytes, str]:
    """The piece rendered by composer.audio.render, as bytes and a MIME type."""
    from composer.audio.render import RenderError, TooQuiet
    from composer.audio.render import render_audio as render_file

    with tempfile.TemporaryDirectory(prefix="composer-audio-") as tmp:
        try:
            result = render_file(notes, Path(tmp) / f"piece.{audio_format}", format=audio_format)
        except ImportError as exc:  # one of the renderer's own libraries is missing
            raise CompositionRejected(f"audio rendering is not available here ({exc})", 501) from None
        except TooQuiet as exc:  # the seed's doing, like a silent piece: another seed may not be (a 422)
            raise SilentPiece(f"{SILENT_PIECE} (audio rendering: {exc}): ask for another seed") from None
        except RenderError as exc:
            raise CompositionError(f"audio rendering failed: {exc}") from None
        return Path(result.path).read_bytes(), AUDIO_MIME[audio_format]


def pianoroll_png(notes: Sequence[events.Note], title: str) -> bytes:
    """The piece's piano roll (composer.audio.pianoroll); 501 where matplotlib is missing."""
    try:
        from composer.audio.pianoroll import pianoroll_png as draw
    except ImportError as exc:
        raise CompositionRejected(f"piano rolls are not available here ({exc})", 501) from None
    return draw(notes, title=title)


def assemble(
    genre: str,
    model_version: str,
    request: SampleRequest,
    tokens: np.ndarray,
    audio_format: str | None = None,
    pianoroll: bool = False,
    key: str | None = None,
    density: float | None = None,
    controlled: bool = False,
) -> ComposedPiece:
    """Sampled tokens to the finished piece: MIDI and a summary, and audio and a piano roll when asked;
    ``key`` and ``density`` as asked, ``controlled`` whether the model followed them."""
    notes = piece_notes(tokens)
    seconds = events.duration_steps(tokens) / events.STEPS_PER_SECOND
    if not notes and (audio_format or pianoroll):  # nothing to hear or draw: the request's values, not a fault here
        raise SilentPiece(
            f"{SILENT_PIECE} ({request.seconds:g} s, seed {request.seed}): ask for a longer piece or another seed"
        )
    started = time.perf_counter()
    audio, mime = render_audio(notes, audio_format) if audio_format else (None, None)
    render_seconds = time.perf_counter() - started if audio_format else None  # the caller's "render" stage
    return ComposedPiece(
        id=str(uuid.uuid4()),
        genre=genre,
        seed=int(request.seed),
        model_version=model_version,
        events=len(tokens),
        seconds=seconds,
        midi=midi_bytes(notes),
        summary=summarize(notes, seconds),
        audio=audio,
        audio_mime=mime,
        pianoroll=pianoroll_png(notes, f"{genre} · seed {request.seed}") if pianoroll else None,
        asked_key=parse_key(key).name if key else None,
        asked_density=parse_density(density) if density is not None else None,
        controlled=controlled and (bool(key) or density is not None),  # a genre's own pace is no request
        form=request.form,
        render_seconds=render_seconds,
    )
