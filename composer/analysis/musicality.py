"""Choosing among candidate pieces: a musicality score, so the composer keeps the best of a few.

score = the model's mean log-likelihood per event of the piece (how typical of the genre it is)
      + KEY_WEIGHT x its key clarity (Krumhansl-Kessler, over its first 30 s)
      - STUCK_PENALTY if its top voice is a stuck loop (composer.analysis.structure)
      + MODE_BONUS if a key was asked and the piece is in its mode (major or minor)
      - PROFILE_WEIGHT x how far its measures lie from the genre's real music (the manifest's
        ``[structure]``, measured on training pieces), as the sum of relative distances.
Measured with the genre's form, 24 pieces of 30 s, best of 4, the same candidates kept by the
score without and with the profile term (real validation pieces in brackets):
  folk v4: key steadiness 0.611 -> 0.764 (0.822), recurrence 0.635 -> 0.649 (0.658),
           loopiness 0.145 -> 0.165 (0.168): within 10 % of real on 4 measures of 4 (was 2);
  pop v3: steadiness 0.431 -> 0.569 (0.581), recurrence 0.196 -> 0.178 (0.153),
          loopiness 0.101 -> 0.110 (0.158): 2 of 4 (was 1);
  chorale v2: steadiness 0.514 -> 0.542 (0.595), recurrence 0.230 -> 0.267 (0.244): 3 of 4 (3);
  classical v3: recurrence 0.139 -> 0.088 (0.183): 2 of 4 (was 3), so classical names no profile.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from composer.analysis.structure import measure_window, windows
from composer.codec.events import Note

KEY_WEIGHT = 0.5
STUCK_PENALTY = 1.0
MODE_BONUS = 1.0  # a piece asked to be in a minor key should be minor: the tonic can be moved, the mode cannot
NO_KEY_PENALTY = 1.0  # too few pitch classes to have a key at all
MAX_DISTANCE = 1.0  # per measure: twice the genre's value is as far as it counts
PROFILE_WEIGHT = 1.0  # 0.5, 1 and 2 tried: 1 and 2 alike, both ahead of 0.5 on pop and folk


def musicality(
    log_likelihood_per_event: float,
    notes: Sequence[Note],
    seconds: float,
    mode: str | None = None,
    profile: Mapping[str, float] | None = None,
) -> float:
    """The score; ``mode`` ("major" or "minor"), when a key was asked, rewards a piece in that mode;
    ``profile`` (measure -> the genre's real value) rewards a piece that measures like the genre."""
    parts = windows(notes, seconds)
    measured = measure_window(parts[0] if parts else notes)
    profile = profile or {}
    if measured is None:  # as far from the genre as a piece can be, so a near-silent one never wins on it
        return log_likelihood_per_event - NO_KEY_PENALTY - PROFILE_WEIGHT * MAX_DISTANCE * len(profile)
    in_mode = mode is not None and measured.key is not None and measured.key.endswith(mode)
    distance = sum(
        min(abs(getattr(measured, name) - target) / target, MAX_DISTANCE) for name, target in profile.items()
    )
    return (
        log_likelihood_per_event
        + KEY_WEIGHT * measured.key_clarity
        - STUCK_PENALTY * measured.stuck
        + MODE_BONUS * in_mode
        - PROFILE_WEIGHT * distance
    )


def candidate_seeds(seed: int, count: int) -> list[int]:
    """The seeds of a piece's candidates: its own first, then others derived from it, so the
    same seed always weighs the same candidates and keeps the same one."""
    return [seed] + [(seed * 1_000_003 + i) % 2**63 for i in range(1, count)]


SCORE_DECIMALS = 3
"""Scores are compared rounded: the int8 engine's log-likelihoods differ in the fourth decimal
between CPUs (AVX2, AVX-512), and a near tie must not pick another piece on another machine."""


def ranked_candidates(
    scored: Sequence[tuple[float, Sequence[Note], float]],
    mode: str | None = None,
    profile: Mapping[str, float] | None = None,
) -> list[int]:
    """The indices of (log-likelihood per event, notes, seconds) candidates, best first; the first wins ties."""
    scores = [round(musicality(*candidate, mode=mode, profile=profile), SCORE_DECIMALS) for candidate in scored]
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))
