"""Key and form measures on 30 s windows (composer.analysis.structure)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from composer.analysis.structure import (
    clustered_standard_error,
    loopiness,
    measure_pieces,
    measure_window,
    recurrence,
    relative_gap,
    summarize,
    top_voice,
    windows,
    within_noise,
)
from composer.codec.events import Note

C_MAJOR = [60, 62, 64, 65, 67, 69, 71, 72]


def melody(pitches, step=0.25, start=0.0) -> list[Note]:
    return [Note(p, 80, start + i * step, start + i * step + step * 0.9) for i, p in enumerate(pitches)]


def test_a_phrase_played_twice_recurs_and_noodling_does_not():
    rng = np.random.default_rng(0)
    phrase = list(rng.choice(C_MAJOR, 16))
    tune = melody(phrase * 2 + list(rng.choice(C_MAJOR, 8)) + phrase * 2, step=0.4)
    noodle = melody(list(rng.choice(C_MAJOR, 72)), step=0.4)
    played_twice, noodled = measure_window(tune), measure_window(noodle)
    assert played_twice.recurrence > 0.6 > 0.3 > noodled.recurrence
    assert not played_twice.stuck and not noodled.stuck


def test_one_figure_over_and_over_is_a_stuck_loop():
    loop = measure_window(melody([60, 64, 67, 64] * 30, step=0.25))
    assert loop.stuck and loop.loopiness > 0.95 and loop.recurrence == 1.0
    assert loopiness([(0, 0)] * 10) == 1.0 and recurrence([(0, 0)] * 10) > 0.8
    assert loopiness([(1, 0)]) == 0.0 and recurrence([(1, 0)]) == 0.0


def test_a_piece_in_one_key_is_clear_and_steady_and_a_modulation_is_not():
    in_c = measure_window(melody(C_MAJOR * 14, step=0.25))
    assert in_c.key == "C major" and in_c.key_clarity > 0.7 and in_c.key_steadiness == 1.0
    assert in_c.stuck  # the same scale round and round is a loop too
    f_sharp = [(p + 6) for p in C_MAJOR]
    wandering = measure_window(melody(C_MAJOR * 5 + f_sharp * 5 + C_MAJOR * 5, step=0.25))
    assert wandering.key_steadiness < 1.0 and wandering.key_clarity < in_c.key_clarity


def test_top_voice_takes_the_highest_note_of_each_chord():
    chords = [Note(48, 80, 0.0, 1.0), Note(64, 80, 0.01, 1.0), Note(60, 80, 0.0, 1.0), Note(62, 80, 1.0, 2.0)]
    assert [n.pitch for n in top_voice(chords)] == [64, 62]


def test_pieces_are_cut_into_30_second_windows_and_summarized():
    pitches = np.random.default_rng(1).choice(C_MAJOR, 320)
    long_piece = melody(list(pitches), step=0.25)  # 80 s: two full windows and a 20 s one
    assert [len(w) for w in windows(long_piece, 80.0)] == [120, 120, 80]
    assert windows(melody(C_MAJOR, step=1.0), 8.0) == []
    summary = summarize(measure_pieces([(long_piece, 80.0)]))
    assert summary["windows"] == 3 and summary["stuck"] == 0.0 and 0 < summary["key_clarity"] <= 1
    gap = relative_gap(summary, {**summary, "recurrence": summary["recurrence"] * 2})
    assert gap["key_clarity"] == 0.0 and gap["recurrence"] == 0.5


@given(st.lists(st.floats(0, 1), min_size=2, max_size=40), st.integers(1, 5))
def test_a_pieces_windows_count_as_one_piece_in_the_standard_error(values, copies):
    per_piece = np.array(values)
    plain = clustered_standard_error(per_piece, np.arange(len(values)))
    assert np.isclose(plain, per_piece.std(ddof=1) / np.sqrt(len(values)), atol=1e-12)
    # Each piece cut into ``copies`` windows that measure alike: the mean and its error stay.
    windows_ = np.repeat(per_piece, copies)
    assert np.isclose(clustered_standard_error(windows_, np.repeat(np.arange(len(values)), copies)), plain, atol=1e-12)
    assert np.isnan(clustered_standard_error(per_piece, np.zeros(len(values), dtype=int)))


def test_summaries_carry_standard_errors_with_windows_clustered_by_piece():
    rng = np.random.default_rng(3)
    pieces = [(melody(list(rng.choice(C_MAJOR, 200)), step=0.25), 50.0) for _ in range(4)]
    measured = measure_pieces(pieces)
    assert [w.piece for w in measured] == [0, 0, 1, 1, 2, 2, 3, 3]  # a 30 s and a 20 s window each
    summary = summarize(measured)
    assert all(summary[f"{m}_se"] >= 0 for m in ("key_clarity", "key_steadiness", "recurrence", "loopiness"))
    assert np.isnan(summarize(measured[:2])["recurrence_se"])  # one piece: no error to give


def test_performances_of_one_work_count_as_one_and_a_gap_inside_the_noise_is_told_apart():
    rng = np.random.default_rng(4)
    pieces = [(melody(list(rng.choice(C_MAJOR, 200)), step=0.25), 50.0) for _ in range(4)]
    by_work = measure_pieces(pieces, works=["etude", "sonata", "etude", "etude"])
    assert [w.piece for w in by_work] == [0, 0, 1, 1, 0, 0, 0, 0]
    with pytest.raises(ValueError, match="1 works named for 4 pieces"):
        measure_pieces(pieces, works=["etude"])

    real = {"key_clarity": 0.8, "key_steadiness": 0.5, "recurrence": 0.18, "loopiness": 0.17}
    real |= {f"{m}_se": 0.02 for m in list(real)}
    near = {**real, "recurrence": 0.15, "loopiness": 0.05}  # 17 % and 71 % off; errors 0.028 apart
    verdict = within_noise(near, real)
    assert verdict["recurrence"] and not verdict["loopiness"] and verdict["key_clarity"]
    assert not within_noise({**near, "recurrence_se": float("nan")}, {**real, "recurrence_se": float("nan")})[
        "recurrence"
    ]
