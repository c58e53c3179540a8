"""composer.analysis.measures: the music measures of the report, on small hand-made pieces."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from composer.analysis.measures import (
    DENSITY_MAX,
    FEATURE_LABELS,
    FEATURES,
    POLYPHONY_MAX,
    compare_features,
    feature_edges,
    histogram,
    overlap_area,
    piece_features,
    set_features,
)
from composer.codec.events import NUM_VELOCITY_BINS, Note, velocity_to_bin

# Two bars of a C major figure: a held chord, a melody above it, and one late note.
PIECE = [
    Note(48, 60, 0.0, 4.0),  # C3 held under the first window
    Note(60, 80, 0.0, 1.0),  # C4 with it (one onset, two notes)
    Note(64, 90, 1.0, 2.0),
    Note(67, 100, 2.0, 3.0),
    Note(72, 110, 3.0, 4.5),
    Note(71, 70, 7.5, 8.0),  # the only onset of the second 5 s window
]


def test_overlap_of_identical_histograms_is_one_and_of_disjoint_ones_zero():
    h = np.array([0, 3, 5, 2, 0])
    assert overlap_area(h, h) == 1.0
    assert overlap_area(h, 7 * h) == pytest.approx(1.0)
    assert overlap_area([4, 4, 0, 0], [0, 0, 1, 9]) == 0.0
    assert overlap_area([1, 3], [3, 1]) == pytest.approx(0.5)  # min(.25, .75) + min(.75, .25)
    assert np.isnan(overlap_area([0, 0, 0], [1, 2, 3]))
    with pytest.raises(ValueError):
        overlap_area([[1, 2]], [[1, 2]])
    with pytest.raises(ValueError):
        overlap_area([1, float("nan")], [1, 1])


def test_piece_features_of_a_hand_made_piece():
    feats = piece_features(PIECE, 10.0)
    assert set(feats) == set(FEATURES) == set(FEATURE_LABELS)
    assert list(feats["pitch"]) == [48, 60, 64, 67, 72, 71]
    assert list(feats["velocity"]) == [60, 80, 90, 100, 110, 70]
    assert list(feats["ioi"]) == [1.0, 1.0, 1.0, 4.5]  # between the 5 distinct onsets
    assert list(feats["density"]) == [5 / 5.0, 1 / 5.0]  # notes starting in [0, 5) and [5, 10), per second
    poly = feats["polyphony"]
    assert len(poly) == 200  # every 50 ms over the 10 s
    assert poly[0] == 2  # the chord at 0 s
    assert poly[20] == 2  # at 1.0 s C4 has ended and E4 begun: the bass and E4
    assert poly[80] == 1  # at 4.0 s the bass has ended, C5 sounds on to 4.5 s
    assert poly[100] == 0 and poly[150] == 1 and poly[160] == 0 and poly.max() == 2


def test_piece_features_of_short_and_empty_pieces():
    short = piece_features([Note(60, 64, 0.0, 0.5), Note(62, 64, 0.5, 2.0)], 0.0)  # no duration: the last end
    assert list(short["density"]) == [2 / 2.0]  # shorter than a window: notes over the whole piece
    assert len(short["polyphony"]) == 40 and short["polyphony"].max() == 1
    empty = piece_features([], 30.0)
    assert set(empty) == set(FEATURES) and all(len(v) == 0 for v in empty.values())


def test_velocity_bins_are_the_codecs_bins():
    edges = feature_edges("velocity")
    assert len(edges) == NUM_VELOCITY_BINS + 1
    for velocity in range(1, 128):
        counts = histogram(np.array([velocity], dtype=float), edges)
        assert counts.argmax() == velocity_to_bin(velocity) - 1


def test_histograms_keep_every_value_and_overflow_goes_to_the_end():
    assert len(feature_edges("pitch")) == 129
    assert histogram(np.array([DENSITY_MAX + 100.0]), feature_edges("density"))[-1] == 1
    assert histogram(np.array([POLYPHONY_MAX + 5.0]), feature_edges("polyphony"))[-1] == 1
    assert histogram(np.array([-3.0]), feature_edges("ioi"))[0] == 1
    feats = piece_features(PIECE, 10.0)
    for name in FEATURES:
        assert histogram(feats[name], feature_edges(name)).sum() == len(feats[name])
    with pytest.raises(KeyError):
        feature_edges("timbre")


def test_set_features_pool_pieces_and_a_set_compared_with_itself_overlaps_fully():
    lower = [Note(n.pitch - 12, n.velocity, n.start, n.end) for n in PIECE]
    pooled = set_features([(PIECE, 10.0), (lower, 10.0)])
    assert len(pooled["pitch"]) == 12 and len(pooled["density"]) == 4
    assert set(set_features([])) == set(FEATURES)

    same = compare_features(pooled, pooled)
    assert all(same[name]["overlap"] == pytest.approx(1.0) for name in FEATURES)
    assert same["pitch"]["n_real"] == same["pitch"]["n_samples"] == 12
    assert same["pitch"]["mean_real"] == pytest.approx(np.mean([n.pitch for n in PIECE]) - 6)

    up = [Note(n.pitch + 2, n.velocity, n.start, n.end) for n in PIECE]
    moved = compare_features(piece_features(PIECE, 10.0), piece_features(up, 10.0))
    assert moved["pitch"]["overlap"] == 0.0  # a tone up: no pitch in common
    assert moved["velocity"]["overlap"] == pytest.approx(1.0)  # and the same dynamics
    assert np.isnan(compare_features(piece_features(PIECE, 10.0), set_features([]))["pitch"]["mean_samples"])


def test_measures_need_neither_torch_nor_matplotlib():
    code = "import sys, composer.analysis.measures; print(sorted({'torch', 'matplotlib', 'jinja2'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
