"""The Performance RNN codec on hand-made note lists, plus property tests."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from composer.codec import events
from composer.codec.events import Note, decode, describe, encode


def names(tokens) -> list[str]:
    return [describe(int(t)) for t in tokens]


def test_vocabulary_layout_matches_magenta():
    assert (events.NOTE_ON, events.NOTE_OFF, events.TIME_SHIFT, events.VELOCITY) == (0, 128, 256, 356)
    assert events.NUM_EVENTS == 388
    assert min(events.PAD, events.BOS, events.EOS) >= 388
    assert events.VOCAB_SIZE == 391


def test_velocity_bins():
    assert [events.velocity_to_bin(v) for v in (1, 4, 5, 64, 127)] == [1, 1, 2, 16, 32]
    for b in range(1, 33):
        assert events.velocity_to_bin(events.bin_to_velocity(b)) == b


def test_single_note():
    tokens = encode([Note(60, 80, 0.0, 0.5)])
    assert names(tokens) == ["VELOCITY(20)", "NOTE_ON(60)", "TIME_SHIFT(50)", "NOTE_OFF(60)"]


def test_leading_silence_and_long_gaps_become_several_shifts():
    tokens = encode([Note(60, 80, 2.5, 2.6)])
    assert names(tokens)[:3] == ["TIME_SHIFT(100)", "TIME_SHIFT(100)", "TIME_SHIFT(50)"]


def test_note_offs_come_before_note_ons_within_a_step():
    tokens = encode([Note(60, 80, 0.0, 0.5), Note(64, 80, 0.5, 1.0)])
    assert names(tokens)[2:5] == ["TIME_SHIFT(50)", "NOTE_OFF(60)", "NOTE_ON(64)"]


def test_velocity_event_only_when_the_bin_changes():
    tokens = encode([Note(60, 80, 0, 1), Note(62, 81, 1, 2), Note(64, 100, 2, 3)])
    assert names(tokens).count("VELOCITY(20)") == 1
    assert "VELOCITY(25)" in names(tokens)


def test_times_round_to_nearest_step_and_zero_length_notes_last_one_step():
    tokens = encode([Note(60, 80, 0.014, 0.016)])  # both round to step 1 or 2
    assert names(tokens) == ["TIME_SHIFT(1)", "VELOCITY(20)", "NOTE_ON(60)", "TIME_SHIFT(1)", "NOTE_OFF(60)"]


def test_chord_onsets_follow_start_time_then_pitch():
    tokens = encode([Note(67, 80, 0.0, 1), Note(60, 80, 0.0, 1), Note(64, 80, 0.001, 1)])
    ons = [n for n in names(tokens) if n.startswith("NOTE_ON")]
    assert ons == ["NOTE_ON(60)", "NOTE_ON(67)", "NOTE_ON(64)"]


def test_time_stretch_scales_time():
    assert events.duration_steps(encode([Note(60, 80, 0, 1.0)], stretch=1.05)) == 105


def test_decode_closes_hanging_notes_and_ignores_stray_offs():
    tokens = [events.NOTE_ON + 60, events.TIME_SHIFT + 9, events.NOTE_OFF + 72, events.NOTE_ON + 64]
    notes = decode(tokens)
    assert [(n.pitch, n.start, n.end) for n in notes] == [(60, 0.0, 0.1), (64, 0.1, 0.11)]


def test_decode_duplicate_pitches_end_first_in_first_out():
    a, b = Note(60, 80, 0.0, 1.0), Note(60, 80, 0.5, 0.8)
    notes = decode(encode([a, b]))
    assert sorted((n.start, n.end) for n in notes) == [(0.0, 0.8), (0.5, 1.0)]


def test_overlapping_notes_of_one_pitch_are_the_stream_s_one_ambiguity():
    notes = [Note(1, 80, 0.0, 0.03), Note(1, 80, 0.01, 0.02), Note(0, 80, 0.01, 0.02)]
    stream = encode(notes)
    again = decode(stream)
    assert sorted((n.pitch, n.start, n.end) for n in again) == [(0, 0.01, 0.02), (1, 0.0, 0.02), (1, 0.01, 0.03)]
    assert names(encode(again)) != names(stream)  # the two note-offs at 0.02 s swap


def test_transpose_moves_notes_only():
    tokens = encode([Note(60, 80, 0, 1)])
    moved = events.transpose(np.concatenate([[events.BOS], tokens]), 2)
    assert moved[0] == events.BOS
    assert {n.pitch for n in decode(moved)} == {62}
    assert events.pitch_range(tokens) == (60, 60)


# ---- properties

quantized_notes = st.lists(
    st.builds(
        lambda p, v, s, d: Note(p, v, s / 100, (s + d) / 100),
        st.integers(0, 127),
        st.integers(1, 127),
        st.integers(0, 3000),
        st.integers(1, 400),
    ),
    max_size=60,
)


def without_same_pitch_overlaps(notes: list[Note]) -> list[Note]:
    """Drop each note that starts while a note of its pitch still sounds.

    Overlapping notes of one pitch are the stream's one ambiguity: a note-off cannot say which
    of them it ends, so decoding pairs them first in, first out, and the re-paired notes may
    order a step's note-offs differently when encoded again (pitch 1 at 0.00-0.03 s and
    0.01-0.02 s beside pitch 0 ending at 0.02 s). ``test_round_trip_keeps_pitch_onset_and_velocity_bin``
    covers such notes; this keeps the rest, whose streams are canonical.
    """
    kept: list[Note] = []
    last_end: dict[int, int] = {}
    for note in sorted(notes, key=lambda n: (n.start, n.pitch)):
        start, end = events.quantize(note.start), max(events.quantize(note.end), events.quantize(note.start) + 1)
        if start < last_end.get(note.pitch, -1):
            continue
        kept.append(note)
        last_end[note.pitch] = end
    return kept


@settings(max_examples=300, deadline=None)
@given(quantized_notes.map(without_same_pitch_overlaps))
def test_decode_then_encode_gives_back_the_stream(notes):
    stream = encode(notes)
    again = encode(decode(stream))
    assert again.tolist() == stream.tolist()


@settings(max_examples=300, deadline=None)
@given(quantized_notes)
def test_round_trip_keeps_pitch_onset_and_velocity_bin(notes):
    key = lambda n: (n.pitch, events.quantize(n.start), events.velocity_to_bin(n.velocity))  # noqa: E731
    assert sorted(map(key, decode(encode(notes)))) == sorted(map(key, notes))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.builds(
            Note,
            st.integers(0, 127),
            st.integers(-5, 200),
            st.floats(0, 1e4, allow_nan=False),
            st.floats(0, 1e4, allow_nan=False),
        ),
        max_size=40,
    )
)
def test_encode_never_crashes_on_note_lists(notes):
    tokens = encode(notes)
    assert tokens.dtype == events.TOKEN_DTYPE
    assert tokens.size == 0 or (tokens.min() >= 0 and tokens.max() < events.NUM_EVENTS)
    assert len(decode(tokens)) == len(notes)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, events.VOCAB_SIZE - 1), max_size=400))
def test_any_token_stream_decodes_to_closed_notes(tokens):
    notes = decode(tokens)
    assert all(n.end > n.start >= 0 for n in notes)
    assert len(notes) == sum(1 for t in tokens if t < events.NOTE_OFF)


def test_decode_can_cap_note_length():
    tokens = [events.NOTE_ON + 60, *[events.TIME_SHIFT + 99] * 8, events.NOTE_OFF + 60, events.NOTE_ON + 62]
    capped = decode(tokens, max_note_steps=500)
    assert [(n.pitch, n.start, n.end) for n in capped] == [(60, 0.0, 5.0), (62, 8.0, 8.01)]
    assert decode(tokens)[0].end == 8.0


def test_restrike_ends_a_sounding_key_before_striking_it_again():
    # on 60, 10 ms, on 60 again, 10 ms, off 60: two notes, not one left hanging to the end
    tokens = [events.NOTE_ON + 60, events.TIME_SHIFT, events.NOTE_ON + 60, events.TIME_SHIFT, events.NOTE_OFF + 60]
    tokens += [events.TIME_SHIFT + 99] * 3
    fifo = events.decode(tokens)
    assert [(n.start, n.end) for n in fifo] == [(0.0, 0.02), (0.01, 3.02)]
    piano = events.decode(tokens, restrike=True)
    assert [(n.start, n.end) for n in piano] == [(0.0, 0.01), (0.01, 0.02)]


def test_restrike_at_the_same_instant_is_one_note():
    tokens = [events.VELOCITY + 20, 60, 60, events.TIME_SHIFT + 49, events.NOTE_OFF + 60]
    assert [(n.start, n.end) for n in events.decode(tokens, restrike=True)] == [(0.0, 0.5)]
