"""What a composition request means and what comes back, shared by the service and the clients.

The HTTP service and the in-process client check requests here and build results here, so
they refuse the same requests with the same messages and give the same piece for a seed.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from composer import events
from composer.midi import MidiError, load_notes, midi_bytes
from composer.sample import MAX_SECONDS, SampleRequest, piece_notes, primer_tokens, validate

AUDIO_FORMATS = ("mp3", "ogg", "mp4", "wav")
AUDIO_MIME = {"mp3": "audio/mpeg", "ogg": "audio/ogg", "mp4": "video/mp4", "wav": "audio/wav"}
MIDI_MIME = "audio/midi"
DEFAULT_SECONDS = 30.0
DEFAULT_TEMPERATURE = 1.0
DEFAULT_TOP_P = 0.95  # a nucleus trims the rare wild events an untempered sample lets through
DEFAULT_PRIMER_SECONDS = 10.0
MAX_SEED = 2**63 - 1
MAX_PRIMER_EVENTS = 20_000  # priming reads the whole primer in one pass; this bounds that pass


class CompositionError(Exception):
    """A composition that could not be made; ``status`` is the HTTP status that says why."""

    status = 500

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


class CompositionRejected(CompositionError):
    """The request itself is at fault (4xx, or 501 for audio this server cannot render): do not retry."""

    status = 422


class ComposerUnavailable(CompositionError):
    """The composer is busy, down or failed (5xx, connection errors): trying later may work."""

    status = 503


@dataclass(frozen=True)
class Composition:
    id: str
    genre: str
    seed: int
    model_version: str
    events: int
    seconds: float
    midi: bytes
    audio: bytes | None = None
    audio_mime: str | None = None


def new_seed() -> int:
    return secrets.randbelow(2**31)


def decode_primer_midi(primer: str) -> bytes:
    """Base64 text to MIDI bytes; CompositionRejected when it is not base64."""
    try:
        return base64.b64decode(primer, validate=True)
    except (binascii.Error, ValueError):
        raise CompositionRejected(
            "primer is not valid base64 (send a MIDI file base64-encoded, or a list of event tokens)"
        ) from None


def primer_from(primer: bytes | Sequence[int] | None, primer_seconds: float) -> np.ndarray | None:
    """The last ``primer_seconds`` of a primer (MIDI bytes or event tokens) as tokens to continue from."""
    if primer is None:
        return None
    if not 0 < primer_seconds <= MAX_SECONDS:
        raise CompositionRejected(f"primer_seconds must be in (0, {MAX_SECONDS:g}], got {primer_seconds:g}")
    if isinstance(primer, bytes | bytearray):
        try:
            tokens = events.encode(load_notes(bytes(primer)))
        except MidiError as exc:
            raise CompositionRejected(f"primer: {str(exc).removeprefix('<bytes>: ')}") from None
        except ValueError as exc:
            raise CompositionRejected(f"primer MIDI cannot be encoded: {exc}") from None
    else:
        tokens = np.asarray(list(primer), dtype=np.int64)
        if tokens.ndim != 1 or (tokens.size and (tokens.min() < 0 or tokens.max() >= events.NUM_EVENTS)):
            raise CompositionRejected(f"primer tokens must be performance events 0..{events.NUM_EVENTS - 1}")
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
) -> SampleRequest:
    """A checked SampleRequest; CompositionRejected (422) says what is wrong."""
    if not 0 < seconds <= max_seconds:
        raise CompositionRejected(f"seconds must be in (0, {max_seconds:g}], got {seconds:g}")
    if not 0 <= seed <= MAX_SEED:
        raise CompositionRejected(f"seed must be in 0..{MAX_SEED}, got {seed}")
    request = SampleRequest(seconds, seed, temperature, top_p, primer)
    try:
        validate(request)
    except ValueError as exc:
        raise CompositionRejected(str(exc)) from None
    return request


def check_audio_format(audio_format: str | None) -> None:
    """Refuse an audio format before any sampling: unknown (422) or not renderable here (501)."""
    if audio_format is None:
        return
    if audio_format not in AUDIO_FORMATS:
        raise CompositionRejected(f"audio_format must be one of {', '.join(AUDIO_FORMATS)}, got {audio_format!r}")
    try:
        from composer import render
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
    """The piece rendered by composer.render, as bytes and a MIME type."""
    from composer.render import RenderError
    from composer.render import render_audio as render_file

    with tempfile.TemporaryDirectory(prefix="composer-audio-") as tmp:
        try:
            result = render_file(notes, Path(tmp) / f"piece.{audio_format}", format=audio_format)
        except ImportError as exc:  # one of the renderer's own libraries is missing
            raise CompositionRejected(f"audio rendering is not available here ({exc})", 501) from None
        except RenderError as exc:
            raise CompositionError(f"audio rendering failed: {exc}") from None
        return Path(result.path).read_bytes(), AUDIO_MIME[audio_format]


def assemble(
    genre: str, model_version: str, request: SampleRequest, tokens: np.ndarray, audio_format: str | None = None
) -> Composition:
    """Sampled tokens to the finished piece: MIDI, and audio when asked."""
    notes = piece_notes(tokens)
    audio, mime = render_audio(notes, audio_format) if audio_format else (None, None)
    return Composition(
        id=str(uuid.uuid4()),
        genre=genre,
        seed=int(request.seed),
        model_version=model_version,
        events=len(tokens),
        seconds=events.duration_steps(tokens) / events.STEPS_PER_SECOND,
        midi=midi_bytes(notes),
        audio=audio,
        audio_mime=mime,
    )
