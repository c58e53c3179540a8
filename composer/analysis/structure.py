"""Measures of key and form on 30 s windows: does a piece keep its key, and do its melodic patterns return?

Computed the same way on real pieces and on samples, so each genre's real music sets the
target (issue #14):

* ``key_clarity``: the Krumhansl-Kessler correlation of the window's best key (0..1, higher: clearer);
* ``key_steadiness``: the share of the window's 10 s parts whose own best key is the window's;
* ``recurrence``: the share of the top voice's 4-step melodic patterns (interval and rhythm,
  so transposed restatements count) that occur again elsewhere in the window, not overlapping
  themselves: a tune that plays each phrase twice scores high, noodling low;
* ``loopiness``: how much of the top voice repeats itself at a short period (the best lag of 1..8
  steps, the share of steps equal to the step that far back): a figure going round and round is
  a stuck loop, not a theme, which comes back after a phrase.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from itertools import pairwise

import numpy as np

from composer.codec.events import Note
from composer.codec.keys import best_key, pitch_class_seconds

WINDOW_S = 30.0
PART_S = 10.0
MIN_WINDOW_S = 20.0  # a piece's last, shorter window counts from this length on
CHORD_S = 0.03  # onsets this close belong to one chord; its highest note is the top voice
PATTERN = 4  # melodic steps in a pattern
LOOP_LAGS = range(1, 9)  # periods, in melodic steps, short enough to be a loop rather than a phrase
STUCK = 0.6  # loopiness above this: a stuck loop
MEASURES = ("key_clarity", "key_steadiness", "recurrence", "loopiness")
MEASURE_LABELS = {
    "key_clarity": "key clarity",
    "key_steadiness": "key steadiness",
    "recurrence": "melodic recurrence",
    "loopiness": "loopiness",
}


@dataclass(frozen=True)
class WindowMeasures:
    key: str | None
    key_clarity: float
    key_steadiness: float
    recurrence: float
    loopiness: float
    piece: int = 0
    """Which of the measured pieces (or works) the window is from: a piece's windows are alike,
    so they are not independent draws (see ``summarize``'s standard errors)."""

    @property
    def stuck(self) -> bool:
        return self.loopiness > STUCK


def windows(notes: Sequence[Note], duration: float) -> list[list[Note]]:
    """The piece's notes in consecutive 30 s windows (by onset), times relative to each window."""
    out = []
    start = 0.0
    while start + MIN_WINDOW_S <= max(duration, 0.0) + 1e-9:
        inside = [
            Note(n.pitch, n.velocity, n.start - start, min(n.end, start + WINDOW_S) - start)
            for n in notes
            if start <= n.start < start + WINDOW_S
        ]
        out.append(inside)
        start += WINDOW_S
    return out


def top_voice(notes: Sequence[Note]) -> list[Note]:
    """The highest note of each onset group: the melody a listener follows."""
    melody: list[Note] = []
    group_start = None
    for note in sorted(notes, key=lambda n: (n.start, -n.pitch)):
        if group_start is None or note.start - group_start > CHORD_S:
            melody.append(note)
            group_start = note.start
        elif note.pitch > melody[-1].pitch:
            melody[-1] = note
    return melody


def melodic_steps(melody: Sequence[Note]) -> list[tuple[int, int]]:
    """(interval in semitones, rhythm class) per step: transposition-invariant, tempo-coarse."""
    steps = []
    for a, b in pairwise(melody):
        ioi = max(b.start - a.start, 1e-3)
        rhythm = int(np.clip(np.round(np.log2(ioi / 0.125)), -2, 4))
        steps.append((int(np.clip(b.pitch - a.pitch, -12, 12)), rhythm))
    return steps


def recurrence(steps: Sequence[tuple[int, int]], n: int = PATTERN) -> float:
    """The share of n-step patterns that occur again at least n steps away."""
    patterns = [tuple(steps[i : i + n]) for i in range(len(steps) - n + 1)]
    if len(patterns) < 2:
        return 0.0
    where: dict[tuple, list[int]] = {}
    for i, p in enumerate(patterns):
        where.setdefault(p, []).append(i)
    return sum(1 for i, p in enumerate(patterns) if any(abs(i - j) >= n for j in where[p])) / len(patterns)


def loopiness(steps: Sequence[tuple[int, int]]) -> float:
    """The largest share, over lags 1..8, of steps equal to the step that many places back."""
    best = 0.0
    for lag in LOOP_LAGS:
        if len(steps) > 2 * lag:
            same = sum(a == b for a, b in zip(steps[lag:], steps))
            best = max(best, same / (len(steps) - lag))
    return best


def measure_window(notes: Sequence[Note]) -> WindowMeasures | None:
    """The four measures of one window; None when it holds too few pitch classes to have a key."""
    found = best_key(pitch_class_seconds(notes))
    if found is None:
        return None
    key, clarity = found
    parts = [[n for n in notes if k * PART_S <= n.start < (k + 1) * PART_S] for k in range(int(WINDOW_S // PART_S))]
    part_keys = [best_key(pitch_class_seconds(p)) for p in parts]
    judged = [k for k in part_keys if k is not None]
    steadiness = sum(k[0] == key for k in judged) / len(judged) if judged else 0.0
    steps = melodic_steps(top_voice(notes))
    return WindowMeasures(key.name, clarity, steadiness, recurrence(steps), loopiness(steps))


def measure_pieces(
    pieces: Sequence[tuple[Sequence[Note], float]], works: Sequence[str] | None = None
) -> list[WindowMeasures]:
    """Every usable 30 s window of ``(notes, duration)`` pieces; ``works`` (one name per piece):
    pieces of one work (performances of one composition) count as one in the standard errors."""
    if works is not None and len(works) != len(pieces):
        raise ValueError(f"{len(works)} works named for {len(pieces)} pieces")
    if works is None:
        groups: Sequence[int] = range(len(pieces))
    else:
        numbered = {name: i for i, name in enumerate(dict.fromkeys(works))}
        groups = [numbered[name] for name in works]
    out = []
    for group, (notes, duration) in zip(groups, pieces):
        for window in windows(notes, duration):
            measured = measure_window(window)
            if measured is not None:
                out.append(replace(measured, piece=group))
    return out


def summarize(measured: Sequence[WindowMeasures]) -> dict[str, float]:
    """Means of each measure over windows, each with its standard error (``<measure>_se``), the
    share of stuck windows, and the window count.

    The standard error treats a piece's windows as one cluster (they share a key and themes):
    a long real piece cut into many windows counts as one piece, not as many, so the error of
    a mean over 140 long pieces is not understated. Two errors apart is about where a gap
    between two sets of pieces stops being noise."""
    if not measured:
        return {
            **{m: float("nan") for m in MEASURES},
            **{f"{m}_se": float("nan") for m in MEASURES},
            "stuck": float("nan"),
            "windows": 0,
        }
    rows = [asdict(w) for w in measured]
    pieces = np.unique([w.piece for w in measured], return_inverse=True)[1]
    out: dict[str, float] = {}
    for m in MEASURES:
        values = np.array([r[m] for r in rows], dtype=np.float64)
        out[m] = float(values.mean())
        out[f"{m}_se"] = clustered_standard_error(values, pieces)
    out["stuck"] = float(np.mean([w.stuck for w in measured]))
    out["windows"] = len(measured)
    return out


def clustered_standard_error(values: np.ndarray, clusters: np.ndarray) -> float:
    """The standard error of ``values.mean()`` when values of one cluster may be alike (a
    cluster-robust sandwich estimate, with the small-sample factor G / (G - 1)); with one value
    per cluster it is the usual s / sqrt(n), s with n - 1 (nan for fewer than two clusters)."""
    groups = int(clusters.max()) + 1 if clusters.size else 0
    if groups < 2:
        return float("nan")
    residual_sums = np.bincount(clusters, weights=values - values.mean(), minlength=groups)
    return float(np.sqrt(groups / (groups - 1) * np.sum(residual_sums**2)) / values.size)


def relative_gap(sample: dict[str, float], real: dict[str, float]) -> dict[str, float]:
    """Per measure, |sample - real| / real: the issue's goal is under 0.10 for each."""
    return {m: abs(sample[m] - real[m]) / real[m] if real[m] else float("nan") for m in MEASURES}


def closeness(sample: dict[str, float], real: dict[str, float]) -> tuple[dict[str, float], int, int]:
    """``relative_gap`` per measure, and how many measures are within 10 % and within two
    standard errors (``within_noise``): the verdicts ``composer structure`` and the report print."""
    gap = relative_gap(sample, real)
    return gap, sum(g <= 0.10 for g in gap.values()), sum(within_noise(sample, real).values())


def within_noise(sample: dict[str, float], real: dict[str, float], errors: float = 2.0) -> dict[str, bool]:
    """Per measure, whether the gap is under ``errors`` standard errors of the difference
    (both sides' errors combined): a gap the seeds or the choice of real pieces could make.
    Where the real pieces' own error is wider than 10 % of their mean (few works: classical's
    140 performances are of 27 compositions), this says more than the 10 % goal can."""
    out = {}
    for m in MEASURES:
        se = np.hypot(sample.get(f"{m}_se", np.nan), real.get(f"{m}_se", np.nan))
        out[m] = bool(np.isfinite(se) and abs(sample[m] - real[m]) <= errors * se)
    return out
