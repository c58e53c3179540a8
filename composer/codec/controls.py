"""Controls: what the coming seconds of a piece hold, fed to the model beside each event.

As in Magenta's conditioned Performance RNN, two controls are computed from the music
itself, so no labels are needed:
- a pitch-class histogram: the seconds each pitch class sounds in the next 5 s (held notes
  count), plus a small prior, normalised to sum 1 - the key, as the notes state it;
- note density: note-ons per second in the next 3 s, one-hot over the bins with lower
  edges 0, 1, 2, 4, 8, 16, 32, 64 notes/s.
Each has a "no control" flag of its own, so one model samples with a key, a density, both
or neither. The control for predicting event i describes the window that starts at event
i's time: a model input at position j (event j) carries the control of event j+1.

Layout of a control vector (``CONTROL_DIM`` floats): 12 pitch classes (C first), the
no-key flag, 8 density bins, the no-density flag.
"""

from __future__ import annotations

import numpy as np

from composer.codec import events
from composer.codec.keys import Key
from composer.contract import DENSITY_WORDS, MAX_DENSITY

KEY_WINDOW_STEPS = 5 * events.STEPS_PER_SECOND
DENSITY_WINDOW_STEPS = 3 * events.STEPS_PER_SECOND
HISTOGRAM_PRIOR = 0.01
DENSITY_EDGES = np.array([1, 2, 4, 8, 16, 32, 64], dtype=np.float64)  # lower edges of bins 1..7

PITCH = slice(0, 12)
NO_KEY = 12
DENSITY = slice(13, 21)
NO_DENSITY = 21
CONTROL_DIM = 22


def parse_density(text: str | float) -> float:
    """Notes per second from a number or one of ``DENSITY_WORDS``."""
    if isinstance(text, int | float):
        value = float(text)
    elif text.strip().lower() in DENSITY_WORDS:
        return DENSITY_WORDS[text.strip().lower()]
    else:
        try:
            value = float(text)
        except ValueError:
            words = ", ".join(DENSITY_WORDS)
            raise ValueError(f"density must be notes per second or one of {words}, got {text!r}") from None
    if not 0 <= value <= MAX_DENSITY:
        raise ValueError(f"density must be within 0..{MAX_DENSITY:g} notes per second, got {value:g}")
    return value


def density_bin(notes_per_second: np.ndarray | float) -> np.ndarray:
    return np.searchsorted(DENSITY_EDGES, notes_per_second, side="right")


def control_vector(key: Key | None = None, density: float | None = None) -> np.ndarray:
    """One control for a whole piece: the key's histogram and the density's bin, or their no-control flags."""
    vector = np.zeros(CONTROL_DIM, dtype=np.float32)
    if key is None:
        vector[NO_KEY] = 1.0
    else:
        vector[PITCH] = key.histogram()
    if density is None:
        vector[NO_DENSITY] = 1.0
    else:
        vector[DENSITY.start + int(density_bin(density))] = 1.0
    return vector


NO_CONTROL = control_vector()


def event_times(tokens: np.ndarray) -> np.ndarray:
    """The time step at which each event happens: the sum of the time shifts before it."""
    tokens = np.asarray(tokens)
    shift = np.where(
        (tokens >= events.TIME_SHIFT) & (tokens < events.VELOCITY), tokens - events.TIME_SHIFT + 1, 0
    ).astype(np.int64)
    return np.cumsum(shift) - shift


def piece_controls(tokens: np.ndarray) -> np.ndarray:
    """(len(tokens), CONTROL_DIM) float32: row i is the control of the window that starts at event i.

    Special tokens (BOS, EOS, PAD) take no time and are passed over. A note never released
    sounds to the end of the piece. Notes are counted per pitch class: a release
    with nothing of its class sounding is ignored, but a stray release in another octave ends a
    sounding note of the same class (encoded pieces have none; a primer may).
    """
    tokens = np.asarray(tokens, dtype=np.int64)
    times = event_times(tokens)
    end = int(times[-1] + _shift_of(tokens[-1])) if tokens.size else 0
    grid = end + 1
    on = tokens < events.NOTE_OFF
    off = (tokens >= events.NOTE_OFF) & (tokens < events.TIME_SHIFT)
    # Sounding notes per pitch class at each step: ons minus offs, accumulated over time.
    change = np.zeros((12, grid + 1), dtype=np.int64)
    np.add.at(change, (tokens[on] % 12, times[on]), 1)
    np.add.at(change, ((tokens[off] - events.NOTE_OFF) % 12, times[off]), -1)
    sounding = np.maximum(np.cumsum(change, axis=1)[:, :grid], 0)
    occupied = np.concatenate([np.zeros((12, 1), np.int64), np.cumsum(sounding, axis=1)], axis=1)
    onsets = np.zeros(grid + 1, dtype=np.int64)
    np.add.at(onsets, times[on], 1)
    struck = np.concatenate([[0], np.cumsum(onsets)])

    out = np.zeros((tokens.size, CONTROL_DIM), dtype=np.float32)
    key_end = np.minimum(times + KEY_WINDOW_STEPS, end)
    seconds_sounding = (occupied[:, key_end] - occupied[:, times]).T / events.STEPS_PER_SECOND
    histogram = seconds_sounding + HISTOGRAM_PRIOR
    out[:, PITCH] = histogram / histogram.sum(axis=1, keepdims=True)
    # Note-ons from the window's start on; past the piece's end nothing more is counted, so the
    # density falls as a piece closes.
    count = struck[np.minimum(times + DENSITY_WINDOW_STEPS, end + 1)] - struck[times]
    per_second = count / (DENSITY_WINDOW_STEPS / events.STEPS_PER_SECOND)
    out[np.arange(tokens.size), DENSITY.start + density_bin(per_second)] = 1.0
    return out


def _shift_of(token: int) -> int:
    return int(token - events.TIME_SHIFT + 1) if events.TIME_SHIFT <= token < events.VELOCITY else 0


def transpose_controls(controls: np.ndarray, semitones: int) -> np.ndarray:
    """The controls of the same passage transposed: the pitch classes rotate with the notes."""
    out = controls.copy()
    out[..., PITCH] = np.roll(controls[..., PITCH], semitones, axis=-1)
    return out


def drop_controls(controls: np.ndarray, rng: np.random.Generator, p_key: float, p_density: float) -> np.ndarray:
    """Replace each crop's key and density controls by "no control" with these chances (training)."""
    out = controls.copy()
    crops = out.shape[0]
    no_key = rng.random(crops) < p_key
    no_density = rng.random(crops) < p_density
    out[no_key, :, PITCH] = 0.0
    out[no_key, :, NO_KEY] = 1.0
    out[no_density, :, DENSITY] = 0.0
    out[no_density, :, NO_DENSITY] = 1.0
    return out
