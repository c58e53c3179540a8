"""Keys: their names as people write them, their pitch-class profiles, and finding the key of some notes.

Krumhansl-Kessler probe-tone profiles give a key's shape: a histogram of how long each
pitch class sounds correlates best with the profile of its key, rotated to its tonic.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MAJOR, MINOR = "major", "minor"
TONICS = ("C", "C♯", "D", "E♭", "E", "F", "F♯", "G", "A♭", "A", "B♭", "B")
KK_PROFILES = {  # tonic first
    MAJOR: np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88]),
    MINOR: np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17]),
}
MIN_NOTE_SECONDS = 0.05  # a staccato note still counts for its pitch class


@dataclass(frozen=True)
class Key:
    tonic: int  # pitch class, 0 = C
    mode: str  # MAJOR or MINOR

    @property
    def name(self) -> str:
        return f"{TONICS[self.tonic]} {self.mode}"

    def histogram(self) -> np.ndarray:
        """The key's Krumhansl-Kessler profile on its tonic, summing to 1: the pitch-class histogram asked for."""
        profile = np.roll(KK_PROFILES[self.mode], self.tonic)
        return profile / profile.sum()


ALL_KEYS = tuple(Key(tonic, mode) for tonic in range(12) for mode in (MAJOR, MINOR))

_LETTERS = {"c": 0, "d": 2, "e": 4, "f": 5, "g": 7, "a": 9, "b": 11}
_KEY = re.compile(r"^\s*([a-g])\s*(#|♯|sharp|b|♭|flat)?\s*(major|maj|minor|min|m)?\s*$", re.IGNORECASE)


class UnknownKeyError(ValueError):
    """A key name that could not be read; the message says what a key looks like."""


def parse_key(text: str) -> Key:
    """"D minor", "F# minor", "Eb major", "B flat minor", "E♭", "c" (major unless said otherwise)."""
    match = _KEY.match(text.replace("-", " "))
    if not match:
        raise UnknownKeyError(f"{text!r} is not a key: name one like 'D minor', 'F# major' or 'B flat minor'")
    letter, accidental, mode = match.groups()
    tonic = _LETTERS[letter.lower()]
    if accidental:
        tonic += 1 if accidental.lower() in ("#", "♯", "sharp") else -1
    mode = MINOR if mode and mode.lower() in ("minor", "min", "m") else MAJOR
    return Key(tonic % 12, mode)


def pitch_class_seconds(notes: Sequence) -> np.ndarray:
    """Seconds each pitch class sounds in ``notes`` (objects with pitch, start, end)."""
    histogram = np.zeros(12)
    for note in notes:
        histogram[note.pitch % 12] += max(note.end - note.start, MIN_NOTE_SECONDS)
    return histogram


def best_key(histogram: np.ndarray) -> tuple[Key, float] | None:
    """The key whose profile correlates best with a pitch-class histogram, and that correlation
    (the key's clarity, -1..1); None when fewer than three pitch classes sound."""
    if histogram.sum() == 0 or np.count_nonzero(histogram) < 3:
        return None
    best = None
    for key in ALL_KEYS:
        r = float(np.corrcoef(histogram, np.roll(KK_PROFILES[key.mode], key.tonic))[0, 1])
        if best is None or r > best[1]:
            best = (key, r)
    return best


def estimate_key(notes: Sequence) -> tuple[Key, float] | None:
    """The key of some notes and its clarity, weighted by how long each note sounds."""
    return best_key(pitch_class_seconds(notes))
