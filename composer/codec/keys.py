"""Keys: their names as people write them, their pitch-class profiles, and finding the key of some notes.

Krumhansl-Kessler probe-tone profiles give a key's shape: a histogram of how long each
pitch class sounds correlates best with the profile of its key, rotated to its tonic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from composer.contract import MODES, UnknownKeyError, key_name, read_key

MAJOR, MINOR = MODES
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
        return key_name(self.tonic, self.mode)

    def histogram(self) -> np.ndarray:
        """The key's Krumhansl-Kessler profile on its tonic, summing to 1: the pitch-class histogram asked for."""
        profile = np.roll(KK_PROFILES[self.mode], self.tonic)
        return profile / profile.sum()


__all__ = ["ALL_KEYS", "Key", "UnknownKeyError", "best_key", "estimate_key", "mode_change_table", "parse_key"]

ALL_KEYS = tuple(Key(tonic, mode) for tonic in range(12) for mode in (MAJOR, MINOR))


def parse_key(text: str) -> Key:
    """ "D minor", "F# minor", "Eb major", "B flat minor", "E♭", "c" (major unless said otherwise)."""
    return Key(*read_key(text))


def pitch_class_seconds(notes: Sequence) -> np.ndarray:
    """Seconds each pitch class sounds in ``notes`` (objects with pitch, start, end)."""
    histogram = np.zeros(12)
    for note in notes:
        histogram[note.pitch % 12] += max(note.end - note.start, MIN_NOTE_SECONDS)
    return histogram


def _standardized(rows: np.ndarray) -> np.ndarray:
    centred = rows - rows.mean(-1, keepdims=True)
    return centred / np.sqrt((centred**2).sum(-1, keepdims=True))


_KEY_PROFILES = _standardized(np.stack([np.roll(KK_PROFILES[k.mode], k.tonic) for k in ALL_KEYS]))


def best_key(histogram: np.ndarray) -> tuple[Key, float] | None:
    """The key whose profile correlates best with a pitch-class histogram, and that correlation
    (the key's clarity, -1..1); None when fewer than three pitch classes sound. All 24 in one
    product (the sampler's key hold asks in its inner loop); the correlations are compared
    rounded to 9 decimals, so keys tied in exact arithmetic go to the first whatever the CPU's
    rounding."""
    if histogram.sum() == 0 or np.count_nonzero(histogram) < 3:
        return None
    r = _KEY_PROFILES @ _standardized(np.asarray(histogram, dtype=np.float64))
    best = int(np.argmax(np.round(r, 9)))
    return ALL_KEYS[best], float(r[best])


def estimate_key(notes: Sequence) -> tuple[Key, float] | None:
    """The key of some notes and its clarity, weighted by how long each note sounds."""
    return best_key(pitch_class_seconds(notes))


MODE_CHANGES = {  # scale degree (semitones above the tonic) -> where it goes in the parallel mode
    (MAJOR, MINOR): {4: 3, 9: 8},  # harmonic minor: third and sixth down, the leading tone kept for the cadences
    (MINOR, MAJOR): {3: 4, 8: 9, 10: 11},  # third, sixth and a natural seventh up
}


def mode_change_table(key: Key, mode: str) -> np.ndarray:
    """A pitch -> pitch table that recasts music in ``key`` in the parallel ``mode`` (C major -> C
    minor), the way an arranger turns a tune minor: only the mode's own degrees move, by a semitone."""
    table = np.arange(128)
    if mode == key.mode:
        return table
    for degree, moved in MODE_CHANGES[(key.mode, mode)].items():
        pitches = np.arange((key.tonic + degree) % 12, 128, 12)
        table[pitches] = np.clip(pitches + moved - degree, 0, 127)
    return table
