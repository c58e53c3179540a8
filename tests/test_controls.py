"""Controls computed from event tokens: key (pitch-class histogram) and note density of the coming seconds."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from composer.codec import controls, events
from composer.codec.controls import (
    CONTROL_DIM,
    DENSITY,
    NO_DENSITY,
    NO_KEY,
    PITCH,
    control_vector,
    event_times,
    parse_density,
    piece_controls,
    transpose_controls,
)
from composer.codec.events import Note
from composer.codec.keys import Key, UnknownKeyError, parse_key

# Notes on the 10 ms grid, no two of one pitch overlapping (a unison's releases are ambiguous).
quantized_notes = st.lists(
    st.builds(
        lambda p, s, d: Note(p, 80, s / 100, (s + d) / 100),
        st.integers(21, 108),
        st.integers(0, 2000),
        st.integers(1, 400),
    ),
    max_size=40,
).map(lambda notes: _no_overlapping_unisons(notes))


def _no_overlapping_unisons(notes: list[Note]) -> list[Note]:
    kept: list[Note] = []
    for note in sorted(notes, key=lambda n: (n.start, n.pitch)):
        if all(k.pitch != note.pitch or k.end <= note.start for k in kept):
            kept.append(note)
    return kept


def reference_controls(tokens: np.ndarray) -> np.ndarray:
    """The same controls, computed the slow way: from the decoded notes, window by window."""
    steps = events.STEPS_PER_SECOND
    notes = [(n.pitch, round(n.start * steps), round(n.end * steps)) for n in events.decode(tokens)]
    end = events.duration_steps(tokens)
    out = np.zeros((len(tokens), CONTROL_DIM))
    for i, t in enumerate(event_times(tokens)):  # in steps, so no rounding decides a boundary
        histogram = np.full(12, controls.HISTOGRAM_PRIOR)
        for pitch, start, stop in notes:
            histogram[pitch % 12] += max(0, min(stop, t + 500, end) - max(start, t)) / steps
        out[i, PITCH] = histogram / histogram.sum()
        struck = sum(1 for _, start, _ in notes if t <= start < t + 300)
        out[i, DENSITY.start + int(controls.density_bin(struck / 3.0))] = 1.0
    return out


def test_a_held_c_major_triad_then_silence():
    triad = [Note(p, 80, 0.0, 2.0) for p in (60, 64, 67)]
    tokens = events.encode([*triad, Note(72, 80, 9.0, 9.5)])
    c = piece_controls(tokens)
    assert c.shape == (len(tokens), CONTROL_DIM) and c.dtype == np.float32
    first = c[0, PITCH]
    assert first.argmax() in (0, 4, 7) and first[[0, 4, 7]].sum() > 0.95
    assert c[0, NO_KEY] == 0 and c[0, NO_DENSITY] == 0
    assert c[0, DENSITY].argmax() == 1  # 3 notes in 3 s: 1 note/s, the bin from 1 to 2
    # 3 s later nothing sounds for 5 s: the prior alone, a flat histogram; no note-on in 3 s
    later = int(np.searchsorted(event_times(tokens), 300))
    assert np.allclose(c[later, PITCH], 1 / 12) and c[later, DENSITY].argmax() == 0


def test_event_times_sum_the_shifts_before_each_event():
    shift = lambda steps: events.TIME_SHIFT + steps - 1  # noqa: E731
    tokens = np.array([events.BOS, 60, shift(50), shift(100), 60 + events.NOTE_OFF, events.EOS])
    assert event_times(tokens).tolist() == [0, 0, 0, 50, 150, 150]


@settings(max_examples=150, deadline=None)
@given(quantized_notes)
def test_controls_match_a_direct_count_over_the_notes(notes):
    tokens = events.encode(notes)
    if tokens.size == 0:
        return
    fast = piece_controls(tokens)
    assert np.allclose(fast, reference_controls(tokens), atol=1e-5)
    assert np.allclose(fast[:, PITCH].sum(axis=1), 1.0, atol=1e-5)
    assert (fast[:, DENSITY].sum(axis=1) == 1).all() and not fast[:, [NO_KEY, NO_DENSITY]].any()


@settings(max_examples=100, deadline=None)
@given(quantized_notes, st.integers(-6, 6))
def test_transposing_the_notes_rotates_the_key_control(notes, semitones):
    tokens = events.encode(notes)
    if tokens.size == 0:
        return
    moved = piece_controls(events.transpose(tokens, semitones))
    assert np.allclose(moved, transpose_controls(piece_controls(tokens), semitones), atol=1e-6)


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("D minor", "D minor"),
        ("C major", "C major"),
        ("F# minor", "F♯ minor"),
        ("Eb major", "E♭ major"),
        ("B flat minor", "B♭ minor"),
        ("e flat", "E♭ major"),
        ("B-flat", "B♭ major"),
        ("Bbm", "B♭ minor"),
        ("a", "A major"),
        ("c sharp minor", "C♯ minor"),
        ("G♭ Major", "F♯ major"),
    ],
)
def test_key_names_people_write(text, name):
    assert parse_key(text).name == name


@pytest.mark.parametrize("text", ["H major", "D dorian", "", "in D minor please", "C##"])
def test_unknown_keys_say_what_a_key_looks_like(text):
    with pytest.raises(UnknownKeyError, match="name one like 'D minor'"):
        parse_key(text)


def test_a_control_vector_for_a_key_and_a_density_and_for_neither():
    d_minor = control_vector(Key(2, "minor"), 6.0)
    assert d_minor[PITCH].argmax() == 2 and np.isclose(d_minor[PITCH].sum(), 1)
    assert d_minor[DENSITY].argmax() == 3 and d_minor[NO_KEY] == d_minor[NO_DENSITY] == 0  # 4-8 notes/s
    neither = control_vector()
    assert neither[NO_KEY] == neither[NO_DENSITY] == 1 and neither.sum() == 2
    assert parse_density("busy") == 12.0 and parse_density("3.5") == 3.5
    with pytest.raises(ValueError, match="calm, slow, moderate, busy"):
        parse_density("frantic")


def test_dropping_controls_sets_the_flags_crop_by_crop():
    tokens = events.encode([Note(60 + i, 80, i * 0.5, i * 0.5 + 0.4) for i in range(12)])
    batch = np.stack([piece_controls(tokens)] * 400)
    dropped = controls.drop_controls(batch, np.random.default_rng(0), p_key=0.5, p_density=0.25)
    no_key = dropped[:, 0, NO_KEY] == 1
    assert 0.4 < no_key.mean() < 0.6 and 0.15 < (dropped[:, 0, NO_DENSITY] == 1).mean() < 0.35
    assert not dropped[no_key][:, :, PITCH].any() and (dropped[~no_key] == batch[~no_key]).any()
