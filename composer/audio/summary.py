"""What a listener would say a piece sounds like, measured from its notes: pace, register, loudness, key.

The composer sends this with every piece, so callers describe a piece (alt text, archive
pages) without reading its MIDI again.
"""

from __future__ import annotations

from collections.abc import Sequence
from statistics import median

import numpy as np

from composer.codec.events import Note
from composer.contract import MusicSummary

KEY_NAMES = ("C", "C♯", "D", "E♭", "E", "F", "F♯", "G", "A♭", "A", "B♭", "B")
# Krumhansl-Kessler probe-tone profiles, tonic first.
MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
MIN_NOTE_WEIGHT = 0.05  # seconds: a staccato note still counts for its pitch class


def estimate_key(notes: Sequence[Note]) -> tuple[str, float] | None:
    """(key name, correlation) of the best-fitting major or minor key, weighted by note length."""
    histogram = np.zeros(12)
    for note in notes:
        histogram[note.pitch % 12] += max(note.end - note.start, MIN_NOTE_WEIGHT)
    if histogram.sum() == 0 or np.count_nonzero(histogram) < 3:
        return None
    best = None
    for tonic in range(12):
        for profile, mode in ((MAJOR_PROFILE, "major"), (MINOR_PROFILE, "minor")):
            r = float(np.corrcoef(histogram, np.roll(profile, tonic))[0, 1])
            if best is None or r > best[1]:
                best = (f"{KEY_NAMES[tonic]} {mode}", r)
    return best


def summarize(notes: Sequence[Note], seconds: float) -> MusicSummary:
    """The piece's summary; ``seconds`` is its length (notes per second are counted over it)."""
    if not notes:
        return MusicSummary(notes=0, notes_per_second=0.0)
    pitches = [n.pitch for n in notes]
    key = estimate_key(notes)
    return MusicSummary(
        notes=len(notes),
        notes_per_second=len(notes) / max(seconds, 1e-3),
        lowest_pitch=min(pitches),
        highest_pitch=max(pitches),
        median_pitch=float(median(pitches)),
        mean_velocity=sum(n.velocity for n in notes) / len(notes),
        key=key[0] if key else None,
        key_clarity=key[1] if key else None,
    )
