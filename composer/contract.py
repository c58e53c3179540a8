"""What crosses the line between the composer and its callers: requests, finished pieces, errors, limits.

The bot and the archive web import this module and ``composer.client`` and nothing else of
the composer, so neither loads torch, music21 or the renderer. Only the standard library
here: a worker pointed at a remote composer installs no model code at all.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Protocol

AUDIO_FORMATS = ("mp3", "ogg", "mp4", "wav")
AUDIO_MIME = {"mp3": "audio/mpeg", "ogg": "audio/ogg", "mp4": "video/mp4", "wav": "audio/wav"}
MIDI_MIME = "audio/midi"
PNG_MIME = "image/png"

DEFAULT_SECONDS = 30.0
DEFAULT_TEMPERATURE = 1.0
DEFAULT_TOP_P = 0.95  # a nucleus trims the rare wild events an untempered sample lets through
DEFAULT_PRIMER_SECONDS = 10.0
MAX_SECONDS = 600.0
MAX_ECHO_SECONDS = 10.0  # a phrase played twice that is longer than this is a section: use a form plan
MAX_SEED = 2**63 - 1
NEW_SEED_LIMIT = 2**31  # seeds the composer picks itself stay short enough to quote in a reply


TONICS = ("C", "C♯", "D", "E♭", "E", "F", "F♯", "G", "A♭", "A", "B♭", "B")
MODES = ("major", "minor")
DENSITY_WORDS = {"calm": 2.0, "slow": 2.0, "moderate": 5.0, "busy": 12.0, "fast": 12.0}
"""Notes per second for the words people use (Magenta's density bins: 2-4, 4-8, 8-16)."""
MAX_DENSITY = 64.0
DEFAULT_CANDIDATES = 4
"""Pieces composed in one batch for each asked; the composer keeps the most musical (composer.analysis.musicality)."""
MAX_CANDIDATES = 8


def candidates_ranked(candidates: int) -> int:
    """How many of a piece's candidates are ranked: of three or more, all but the last one still
    playing (the densest; composer.sampling.sample.fewest_events), which is not waited for."""
    return candidates - 1 if candidates >= 3 else candidates


FORMS = ("ABAB", "AABB", "AABA", "AA")
"""Form plans: equal sections, a letter seen before restating its first section (with a fresh ending)."""
FREE_FORM = "free"
"""No plan: the model alone decides what comes back."""

_LETTERS = {"c": 0, "d": 2, "e": 4, "f": 5, "g": 7, "a": 9, "b": 11}
_KEY = re.compile(r"^\s*([a-g])\s*(#|♯|sharp|b|♭|flat)?\s*(major|maj|minor|min|m)?\s*$", re.IGNORECASE)


class UnknownKeyError(ValueError):
    """A key name that could not be read; the message says what a key looks like."""


def read_key(text: str) -> tuple[int, str]:
    """(tonic pitch class, mode) from "D minor", "F# minor", "Eb major", "B flat minor", "E♭", "c"
    (major unless said otherwise)."""
    match = _KEY.match(text.replace("-", " "))
    if not match:
        raise UnknownKeyError(f"{text!r} is not a key: name one like 'D minor', 'F# major' or 'B flat minor'")
    letter, accidental, mode = match.groups()
    tonic = _LETTERS[letter.lower()]
    if accidental:
        tonic += 1 if accidental.lower() in ("#", "♯", "sharp") else -1
    return tonic % 12, "minor" if mode and mode.lower() in ("minor", "min", "m") else "major"


def key_name(tonic: int, mode: str) -> str:
    """The name composer and bot write a key with: "E♭ major"."""
    return f"{TONICS[tonic % 12]} {mode}"


def new_seed() -> int:
    """A fresh seed for a piece nobody asked a seed for."""
    return secrets.randbelow(NEW_SEED_LIMIT)


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


SILENT_PIECE = "the piece came out silent"


class SilentPiece(CompositionRejected):
    """The seed and length asked give a piece without a note (422, its detail starting with SILENT_PIECE):
    another seed or a longer piece may not."""


class ComposerUnavailable(CompositionError):
    """The composer is busy, down or failed (5xx, connection errors): trying later may work."""

    status = 503


@dataclass(frozen=True)
class GenreInfo:
    name: str
    current_version: str | None
    versions: list[str] = field(default_factory=list)
    card: dict[str, Any] | None = None
    description: str = ""
    license: str = ""
    aliases: list[str] = field(default_factory=list)  # words people use for the genre, from its manifest

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenreInfo:
        """From JSON, ignoring fields this version does not know (a newer service may send more)."""
        return cls(**_known_fields(cls, data))


@dataclass(frozen=True)
class MusicSummary:
    """What the piece sounds like, measured from its notes: what callers describe it with."""

    notes: int
    notes_per_second: float
    lowest_pitch: int | None = None
    highest_pitch: int | None = None
    median_pitch: float | None = None
    mean_velocity: float | None = None
    key: str | None = None
    """The best-fitting major or minor key (Krumhansl-Kessler), e.g. "E♭ major"; None for too few notes."""
    key_clarity: float | None = None
    """The correlation of the notes with that key's profile (-1..1): above about 0.6 the key is clear."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MusicSummary:
        return cls(**_known_fields(cls, data))


@dataclass(frozen=True)
class ComposedPiece:
    """A finished piece as the composer hands it over: MIDI, and audio and picture when asked."""

    id: str
    genre: str
    seed: int
    model_version: str
    events: int
    seconds: float
    midi: bytes
    summary: MusicSummary
    audio: bytes | None = None
    audio_mime: str | None = None
    pianoroll: bytes | None = None
    """A PNG piano roll of the piece, when asked for."""
    asked_key: str | None = None
    """The key asked for, as ``key_name`` writes it; ``summary.key`` is the key the notes are in."""
    asked_density: float | None = None
    """The notes per second asked for."""
    controlled: bool = False
    """Whether the model followed the key and density asked for (a model trained without
    controls composes the piece without them)."""
    form: str | None = None
    """The form plan the piece was composed to; None: free."""
    render_seconds: float | None = None
    """Seconds the audio took to render (within the compose call); None without audio, or from an older server."""


class ComposerClient(Protocol):
    """The composer as its callers see it: over HTTP or in this process, the same calls and errors."""

    def genres(self) -> list[GenreInfo]:
        """Every genre with its current model version, versions, model card and aliases (words for it)."""
        ...

    def compose(
        self,
        genre: str,
        seconds: float = DEFAULT_SECONDS,
        temperature: float = DEFAULT_TEMPERATURE,
        top_p: float = DEFAULT_TOP_P,
        seed: int | None = None,
        primer_midi: bytes | None = None,
        audio_format: str | None = None,
        primer_seconds: float = DEFAULT_PRIMER_SECONDS,
        pianoroll: bool = False,
        key: str | None = None,
        density: float | None = None,
        form: str | None = None,
        candidates: int = DEFAULT_CANDIDATES,
    ) -> ComposedPiece:
        """A new piece; the same seed and settings give the same piece. ``key`` ("D minor") and
        ``density`` (notes per second) steer a model trained with controls; ``form`` is one of
        FORMS or FREE_FORM (default: the genre's own, from its manifest); ``candidates`` pieces
        are composed and the most musical of the first ``candidates_ranked`` to finish kept."""
        ...


def _known_fields(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in names}
