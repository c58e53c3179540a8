"""The neural cache (composer.sampling.cache): a pointer over the piece's own past, mixed with the model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from composer.codec import events
from composer.sampling.cache import PieceCache, cached_nll, mix
from composer.sampling.sample import Sampler, SampleRequest, validate
from tests.conftest import write_manifest


def brute_force_nll(hidden: torch.Tensor, log_probs: torch.Tensor, targets: torch.Tensor, weight: float) -> float:
    """The cache's definition, one step at a time."""
    keys = torch.nn.functional.normalize(hidden.double(), dim=-1)
    total = 0.0
    for t in range(len(targets)):
        p = float(log_probs[t, targets[t]].double().exp())
        if t:
            w = torch.softmax(120.0 * keys[:t] @ keys[t], 0)
            p = (1 - weight) * p + weight * float(w[targets[:t] == targets[t]].sum())
        total -= np.log(p)
    return total


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 40), st.integers(0, 2**31), st.sampled_from([1, 4, 64]))
def test_the_chunked_cache_nll_is_the_definition_step_by_step_with_no_future_in_it(length: int, seed: int, chunk: int):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(length, 8, generator=g)
    hidden[length // 2 :] = hidden[: length - length // 2].clone()  # a piece that repeats itself
    log_probs = torch.log_softmax(torch.randn(length, 5, generator=g), -1)
    targets = torch.randint(0, 5, (length,), generator=g)
    got = cached_nll(hidden, log_probs, targets, (0.0, 0.3), chunk=chunk)
    assert got[0] == pytest.approx(-float(log_probs.double().gather(1, targets[:, None]).sum()), rel=1e-9)
    assert got[1] == pytest.approx(brute_force_nll(hidden, log_probs, targets, 0.3), rel=1e-6)


def test_a_repeated_passage_is_cheaper_with_the_cache():
    g = torch.Generator().manual_seed(0)
    phrase = torch.randn(20, 16, generator=g)
    targets = torch.randint(0, 5, (20,), generator=g)
    log_probs = torch.log_softmax(torch.zeros(40, 5), -1)  # a model that knows nothing: 5 choices each step
    hidden, repeated = torch.cat([phrase, phrase]), torch.cat([targets, targets])
    plain, cached = cached_nll(hidden, log_probs, repeated, (0.0, 0.5))
    assert cached < plain - 10  # the second half is nearly free


def test_the_cache_points_back_past_its_lag_to_what_followed_the_most_similar_moment():
    cache = PieceCache(0.5, sharpness=500.0, min_lag=2)
    states = torch.eye(4)
    for state, token in zip(states, (60, 62, 64, 65)):
        cache.add(state, token)
    past = cache.distribution(states[1])
    assert past is not None and float(past.sum()) == pytest.approx(1.0, abs=1e-5)
    assert int(past.argmax()) == 62  # state 1 led to 62
    assert float(past[64]) == 0.0 and float(past[65]) == 0.0  # the last two are within the lag
    assert PieceCache(0.5, min_lag=1).distribution(states[0]) is None  # nothing old enough yet
    ban = np.zeros(events.NUM_EVENTS, dtype=bool)
    ban[62] = True  # what the most similar moment led to is not allowed now: the rest share its weight
    allowed = cache.distribution(states[1], ban)
    assert float(allowed[62]) == 0.0 and float(allowed.sum()) == pytest.approx(1.0, abs=1e-5)
    ban[60] = True
    assert cache.distribution(states[1], ban) is None  # everything it may point to is banned
    mixed = torch.softmax(mix(torch.zeros(events.NUM_EVENTS), past, 0.5), -1)
    assert float(mixed[62]) > 0.45 and float(mixed.sum()) == pytest.approx(1.0, abs=1e-5)  # float32 over 391 events


def test_a_cached_piece_replays_alone_or_in_a_batch_and_weight_zero_is_the_model_alone(tiny_model_dir: Path):
    sampler = Sampler.from_dir(tiny_model_dir, "cpu", "fused")
    cached = SampleRequest(10.0, seed=5, cache=0.6)
    alone = sampler.generate([cached])[0]
    batch = sampler.generate([SampleRequest(6.0, seed=2), cached, SampleRequest(10.0, seed=5)])
    assert np.array_equal(batch[1], alone)
    assert not np.array_equal(batch[2], alone)  # the cache changed the piece
    assert np.array_equal(batch[2], sampler.generate([SampleRequest(10.0, seed=5, cache=0.0)])[0])
    assert all(events.duration_steps(t) >= 600 for t in (alone, batch[2]))
    with pytest.raises(ValueError, match="cache must be in"):
        validate(SampleRequest(8.0, seed=1, cache=1.0))


def test_the_cache_weight_comes_from_the_genres_manifest_and_bad_ones_are_refused(tmp_path: Path):
    from composer.corpus.genres import load_genre
    from composer.serving.composition import genre_style

    genres = tmp_path / "genres"
    genres.mkdir()
    write_manifest(genres, "reel", "cache = 0.3\n")
    write_manifest(genres, "air")
    assert genre_style("reel", genres).cache == 0.3 and genre_style("air", genres).cache == 0.0
    for bad in ("1", "-0.1", "true", '"some"'):
        write_manifest(genres, "bad", f"cache = {bad}\n")
        with pytest.raises(ValueError, match="cache"):
            load_genre("bad", genres)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 60), min_size=1, max_size=5), st.integers(0, 2**31))
def test_pointed_is_each_row_s_softmax_summed_onto_its_followers_whatever_the_rows_beside_it(
    lengths: list[int], seed: int
):
    """The sampler's batched pointer (all rows in one flat sum) against its definition, row by row;
    and a row alone gives the very same numbers as in company (seed replay in a batch)."""
    from composer.sampling.cache import pointed

    g = torch.Generator().manual_seed(seed)
    sims = [torch.rand(n, generator=g) * 2 - 1 for n in lengths]
    followers = [torch.randint(0, events.NUM_EVENTS, (n,), generator=g).numpy() for n in lengths]
    together = pointed(sims, followers, 120.0)
    assert together.shape == (len(lengths), events.NUM_EVENTS) and together.dtype == torch.float64
    for row, (s, f) in enumerate(zip(sims, followers)):
        expected = torch.zeros(events.NUM_EVENTS, dtype=torch.float64)
        expected.index_add_(0, torch.from_numpy(f), torch.softmax(s.double() * 120.0, 0))
        torch.testing.assert_close(together[row], expected, rtol=1e-12, atol=1e-15)
        assert torch.equal(pointed([s], [f], 120.0)[0], together[row])


def test_mix_takes_one_weight_per_row():
    logits = torch.randn(3, events.NUM_EVENTS + 3, dtype=torch.float64)
    cached = torch.softmax(torch.randn(3, events.NUM_EVENTS, dtype=torch.float64), -1)
    weights = torch.tensor([0.0, 0.25, 0.9], dtype=torch.float64)
    rows = mix(logits, cached, weights)
    for row in range(3):
        torch.testing.assert_close(rows[row], mix(logits[row], cached[row], float(weights[row])))
    torch.testing.assert_close(torch.softmax(rows[0], -1), torch.softmax(logits[0], -1))  # weight 0: the model's own
