"""The n-gram baseline is a proper distribution and learns what repeats."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from composer.codec import events
from composer.training.baseline import NGramModel


def distribution_after(model: NGramModel, history: list[int]) -> np.ndarray:
    """P(w | history) for every event w, computed through the public scoring path."""
    probs = []
    for w in range(events.NUM_EVENTS):
        probs.append(model.token_probabilities(np.array([*history, w]))[-1])
    return np.array(probs)


@settings(max_examples=20, deadline=None)
@given(
    st.lists(st.lists(st.integers(0, events.NUM_EVENTS - 1), min_size=1, max_size=40), min_size=1, max_size=5),
    st.lists(st.integers(0, events.NUM_EVENTS - 1), min_size=1, max_size=4),
    st.integers(1, 4),
)
def test_probabilities_over_events_sum_to_at_most_one(corpus, history, order):
    model = NGramModel(order).fit([np.array(s) for s in corpus])
    total = distribution_after(model, history).sum()
    assert 0.99 < total <= 1.0 + 1e-9  # mass left for tokens outside the 388 events (BOS/EOS) only


def test_learns_a_repeated_phrase():
    phrase = [events.VELOCITY + 20, events.NOTE_ON + 60, events.TIME_SHIFT + 24, events.NOTE_OFF + 60]
    corpus = [np.array([events.BOS, *phrase * 50, events.EOS])]
    model = NGramModel(4).fit(corpus)
    total, count = model.nll([np.array([events.BOS, *phrase * 5, events.EOS])])
    assert count == 20
    assert total / count < 0.2
    unseen_total, _ = model.nll([np.array([events.BOS, *[events.NOTE_ON + 70] * 20])])
    assert unseen_total / 20 > 2.0
