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


def test_one_baseline_everywhere_the_best_order_on_validation_named(tmp_path):
    """`composer baseline` and the report show the same figure: the best order on validation, with its order."""
    import json
    import os
    import subprocess
    import sys

    from composer.cli import BASELINE_ORDERS_OPTION
    from composer.report.compute import ReportOptions, baseline_figures
    from composer.training.baseline import BASELINE_ORDERS
    from tests.conftest import make_midi

    assert (
        ",".join(map(str, BASELINE_ORDERS)) == BASELINE_ORDERS_OPTION
        and ReportOptions().baseline_orders == BASELINE_ORDERS
    )
    rng = np.random.default_rng(5)
    folder = tmp_path / "data" / "tunes"
    folder.mkdir(parents=True)
    for i in range(12):  # random tunes: long contexts never recur, so a high order is not the best
        notes = [(int(p), 80, k * 0.25, k * 0.25 + 0.2) for k, p in enumerate(rng.integers(48, 72, 60))]
        make_midi(folder / f"t{i}.mid", [{"notes": notes}])
    genres = tmp_path / "genres"
    genres.mkdir()
    (genres / "tunes.toml").write_text(
        'name = "tunes"\nsources = ["tunes"]\nlicense = "CC0-1.0"\nvalidation_fraction = 0.4\n'
    )
    env = {**os.environ, "COMPOSER_DATA_ROOT": str(tmp_path / "data"), "COMPOSER_GENRES_DIR": str(genres),
           "COMPOSER_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}  # fmt: skip

    def composer(*args):
        return subprocess.run([sys.executable, "-m", "composer.cli", *args], env=env, capture_output=True, text=True)

    assert composer("prepare", "--workers", "1").returncode == 0
    done = composer("baseline", "--genre", "tunes")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert set(result["orders"]) == {str(o) for o in BASELINE_ORDERS}
    best = min(result["orders"], key=result["orders"].get)
    assert result["order"] == int(best) < 7 and result["nll_per_event"] == result["orders"][best]
    assert f"tunes: baseline {result['nll_per_event']:.4f} nats/event, {best}-gram (the best of orders" in done.stdout
    report = baseline_figures(tmp_path / "cache", "tunes", BASELINE_ORDERS, [], None)
    assert report["best_order"] == result["order"] and report["best_whole"] == result["nll_per_event"]
    one = json.loads(composer("baseline", "--genre", "tunes", "--order", "7", "--json").stdout)
    assert one["order"] == 7 and one["nll_per_event"] == result["orders"]["7"]
