"""Choosing among candidate pieces: a musicality score, so the composer keeps the best of a few.

score = the model's mean log-likelihood per event of the piece (how typical of the genre it is)
      + KEY_WEIGHT x its key clarity (Krumhansl-Kessler, over its first 30 s)
      - STUCK_PENALTY if its top voice is a stuck loop (composer.analysis.structure)
      + MODE_BONUS if a key was asked and the piece is in its mode (major or minor).
Themes are the form plan's job, so recurrence is not scored. Measured on folk v3 (ABAB, 24
pieces, best of 4 against the first candidate): key clarity 0.867 -> 0.903, key steadiness
0.708 -> 0.875, recurrence 0.644 -> 0.659 (real tunes: 0.903, 0.822, 0.658).
"""

from __future__ import annotations

from collections.abc import Sequence

from composer.analysis.structure import measure_window, windows
from composer.codec.events import Note

KEY_WEIGHT = 0.5
STUCK_PENALTY = 1.0
MODE_BONUS = 1.0  # a piece asked to be in a minor key should be minor: the tonic can be moved, the mode cannot
NO_KEY_PENALTY = 1.0  # too few pitch classes to have a key at all


def musicality(
    log_likelihood_per_event: float, notes: Sequence[Note], seconds: float, mode: str | None = None
) -> float:
    """The score; ``mode`` ("major" or "minor"), when a key was asked, rewards a piece in that mode."""
    parts = windows(notes, seconds)
    measured = measure_window(parts[0] if parts else notes)
    if measured is None:
        return log_likelihood_per_event - NO_KEY_PENALTY
    in_mode = mode is not None and measured.key is not None and measured.key.endswith(mode)
    return (
        log_likelihood_per_event
        + KEY_WEIGHT * measured.key_clarity
        - STUCK_PENALTY * measured.stuck
        + MODE_BONUS * in_mode
    )


def candidate_seeds(seed: int, count: int) -> list[int]:
    """The seeds of a piece's candidates: its own first, then others derived from it, so the
    same seed always weighs the same candidates and keeps the same one."""
    return [seed] + [(seed * 1_000_003 + i) % 2**63 for i in range(1, count)]


SCORE_DECIMALS = 3
"""Scores are compared rounded: the int8 engine's log-likelihoods differ in the fourth decimal
between CPUs (AVX2, AVX-512), and a near tie must not pick another piece on another machine."""


def best_candidate(scored: Sequence[tuple[float, Sequence[Note], float]], mode: str | None = None) -> int:
    """The index of the best of (log-likelihood per event, notes, seconds) candidates; the first wins ties."""
    scores = [round(musicality(*candidate, mode=mode), SCORE_DECIMALS) for candidate in scored]
    return max(range(len(scores)), key=lambda i: (scores[i], -i))
