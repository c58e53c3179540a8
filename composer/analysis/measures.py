"""Measures of music: numbers computed from a piece's notes, and how two sets of pieces compare.

Pure numpy over ``composer.codec.events.Note`` lists (no models, no plotting, no files), so the
report, the tests and any later study can share one definition of each measure:

* ``piece_features``: the per-note, per-onset, per-window and per-instant values of one piece
  (pitch, velocity, inter-onset interval, note density, polyphony); ``set_features`` pools them
  over many pieces;
* ``feature_edges`` and ``histogram``: fixed bins per feature, so any two sets' histograms line up;
* ``overlap_area`` and ``compare_features``: the overlapping area of two normalized histograms
  (sum of min(p, q); a simpler stand-in for Yang & Lerch 2018's KDE), feature by feature.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from composer.codec import events

FEATURES = ("pitch", "velocity", "ioi", "density", "polyphony")
FEATURE_LABELS = {
    "pitch": "pitch (MIDI note)",
    "velocity": "velocity",
    "ioi": "inter-onset interval (s)",
    "density": "note density (onsets/s, 5 s windows)",
    "polyphony": "polyphony (sounding notes, every 50 ms)",
}
DENSITY_WINDOW_S = 5.0
POLYPHONY_STEP_S = 0.05
IOI_MAX_S = 1.0
DENSITY_MAX = 40
POLYPHONY_MAX = 48


# ---------------------------------------------------------------- overlap of distributions


def overlap_area(p: Sequence[float] | np.ndarray, q: Sequence[float] | np.ndarray) -> float:
    """Overlapping area of two histograms over the same bins: sum of min(p, q) once each sums to 1.

    1 for identical distributions, 0 for disjoint ones, symmetric; NaN when either is empty.
    """
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    if p.shape != q.shape or p.ndim != 1:
        raise ValueError(f"histograms must be 1-D and of one shape, got {p.shape} and {q.shape}")
    if (p < 0).any() or (q < 0).any() or not (np.isfinite(p).all() and np.isfinite(q).all()):
        raise ValueError("histograms must be finite and not negative")
    sp, sq = p.sum(), q.sum()
    if sp <= 0 or sq <= 0:
        return float("nan")
    return float(min(1.0, np.minimum(p / sp, q / sq).sum()))


# ---------------------------------------------------------------- musical features


def piece_features(notes: Sequence[events.Note], duration: float) -> dict[str, np.ndarray]:
    """Per-note, per-onset, per-window and per-instant values of one piece."""
    if not notes:
        return {name: np.zeros(0) for name in FEATURES}
    starts = np.array([n.start for n in notes])
    ends = np.array([n.end for n in notes])
    onsets = np.unique(np.round(starts, 2))
    if duration <= 0:
        duration = float(ends.max())
    windows = int(duration // DENSITY_WINDOW_S)
    if windows:
        density = np.histogram(starts, bins=np.arange(windows + 1) * DENSITY_WINDOW_S)[0] / DENSITY_WINDOW_S
    else:
        density = np.array([len(notes) / max(duration, 0.01)])
    grid = np.arange(0.0, duration, POLYPHONY_STEP_S)
    sounding = np.searchsorted(np.sort(starts), grid, side="right") - np.searchsorted(np.sort(ends), grid, side="right")
    return {
        "pitch": np.array([n.pitch for n in notes], dtype=np.float64),
        "velocity": np.array([n.velocity for n in notes], dtype=np.float64),
        "ioi": np.diff(onsets),
        "density": density.astype(np.float64),
        "polyphony": sounding.astype(np.float64),
    }


def feature_edges(name: str) -> np.ndarray:
    """Fixed bins per feature, so histograms of any two sets line up (the last bin takes the overflow)."""
    if name == "pitch":
        return np.arange(129) - 0.5
    if name == "velocity":
        lows = [events.bin_to_velocity(b) for b in range(1, events.NUM_VELOCITY_BINS + 1)]
        return np.array([0.5, *[v - 0.5 for v in lows[1:]], 127.5])
    if name == "ioi":
        return np.linspace(0.0, IOI_MAX_S, 51)
    if name == "density":
        return np.arange(DENSITY_MAX + 1, dtype=np.float64)
    if name == "polyphony":
        return np.arange(POLYPHONY_MAX + 2) - 0.5
    raise KeyError(name)


def histogram(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    clipped = np.clip(values, edges[0], np.nextafter(edges[-1], -np.inf))
    return np.histogram(clipped, bins=edges)[0]


def set_features(pieces: Sequence[tuple[Sequence[events.Note], float]]) -> dict[str, np.ndarray]:
    parts = [piece_features(notes, duration) for notes, duration in pieces]
    return {name: np.concatenate([p[name] for p in parts]) if parts else np.zeros(0) for name in FEATURES}


def compare_features(real: dict[str, np.ndarray], generated: dict[str, np.ndarray]) -> dict[str, dict]:
    out = {}
    for name in FEATURES:
        edges = feature_edges(name)
        h_real, h_gen = histogram(real[name], edges), histogram(generated[name], edges)
        out[name] = {
            "edges": edges.tolist(),
            "real": h_real.tolist(),
            "samples": h_gen.tolist(),
            "overlap": overlap_area(h_real, h_gen),
            "n_real": int(h_real.sum()),
            "n_samples": int(h_gen.sum()),
            "mean_real": float(real[name].mean()) if len(real[name]) else float("nan"),
            "mean_samples": float(generated[name].mean()) if len(generated[name]) else float("nan"),
        }
    return out
