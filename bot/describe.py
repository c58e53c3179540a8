"""Alt text for a piece, derived from its notes: what a listener would say it sounds like.

Screen-reader users meet the attachment's description instead of the sound's first
seconds, so it says the genre and length, the pace (notes per second), the register,
the loudness and the most likely key (Krumhansl-Kessler key profiles).
"""

from __future__ import annotations

from collections.abc import Sequence
from statistics import median

import numpy as np

from composer.events import Note

NAMES = ("C", "C♯", "D", "E♭", "E", "F", "F♯", "G", "A♭", "A", "B♭", "B")
MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


def pitch_name(pitch: int) -> str:
    return f"{NAMES[pitch % 12]}{pitch // 12 - 1}"


def estimate_key(notes: Sequence[Note]) -> tuple[str, float] | None:
    """(key name, correlation) of the best-fitting major or minor key, weighted by note length."""
    histogram = np.zeros(12)
    for note in notes:
        histogram[note.pitch % 12] += max(note.end - note.start, 0.05)
    if histogram.sum() == 0 or np.count_nonzero(histogram) < 3:
        return None
    best = None
    for tonic in range(12):
        for profile, mode in ((MAJOR, "major"), (MINOR, "minor")):
            r = float(np.corrcoef(histogram, np.roll(profile, tonic))[0, 1])
            if best is None or r > best[1]:
                best = (f"{NAMES[tonic]} {mode}", r)
    return best


def pace(notes_per_second: float) -> str:
    for limit, words in ((1.5, "slow and spacious"), (3.5, "unhurried"), (6.5, "flowing"), (10, "lively")):
        if notes_per_second < limit:
            return words
    return "fast and busy"


def register(pitches: Sequence[int]) -> str:
    middle = median(pitches)
    where = "low" if middle < 52 else "middle" if middle < 72 else "high"
    return f"mostly in the {where} register ({pitch_name(min(pitches))} to {pitch_name(max(pitches))})"


def loudness(velocities: Sequence[int]) -> str:
    mean = sum(velocities) / len(velocities)
    return "soft" if mean < 50 else "moderately loud" if mean < 85 else "loud"


def describe(notes: Sequence[Note], genre: str, seconds: float) -> str:
    """One or two plain sentences, well under Mastodon's 1,500-character limit."""
    length = f"{seconds:.0f}-second" if seconds < 90 else f"{seconds / 60:.1f}-minute"
    head = f"A {length} {genre} piano piece composed by a neural network"
    if not notes:
        return f"{head}. It is almost silent."
    per_second = len(notes) / max(seconds, 1e-3)
    parts = [
        f"{pace(per_second)} ({per_second:.1f} notes a second)",
        register([n.pitch for n in notes]),
        loudness([n.velocity for n in notes]),
    ]
    key = estimate_key(notes)
    if key is not None and key[1] > 0.6:
        parts.append(f"in or around {key[0]}")
    return f"{head}: {', '.join(parts)}."
