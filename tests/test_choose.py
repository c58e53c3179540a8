"""Choosing the next event from logits: each step checked against its plain definition, row by row."""

from __future__ import annotations

import bisect

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from composer.codec import events
from composer.sampling.choose import draw, filter_probs, follow_grammar, hold_keys, logsumexp

V = events.NUM_EVENTS


@st.composite
def batches(draw_, rows: tuple[int, int] = (1, 6)):
    """Logits, bans, temperatures and top-p values for a few rows, as the sampler meets them."""
    n = draw_(st.integers(*rows))
    seed = draw_(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, V)) * draw_(st.sampled_from([0.5, 3.0, 30.0]))
    ban = rng.random((n, V)) < draw_(st.sampled_from([0.0, 0.5, 0.95]))
    ban[:, events.TIME_SHIFT] = False  # a row always has something it may play
    temperature = rng.choice([0.3, 0.9, 1.0, 1.5], size=n)
    top_p = rng.choice([0.5, 0.9, 0.95, 1.0], size=n)
    return logits, ban, temperature, top_p


def nucleus_by_definition(probs: np.ndarray, top_p: float) -> set[int]:
    """The likeliest events (ties in event order) whose probabilities, taken in order, first reach top_p."""
    if top_p >= 1:
        return set(np.flatnonzero(probs >= 0))
    kept, total = set(), 0.0
    for i in sorted(range(len(probs)), key=lambda i: (-probs[i], i)):
        if total >= top_p:
            break
        kept.add(i)
        total += probs[i]
    return kept


@settings(max_examples=60, deadline=None)
@given(batches())
def test_the_nucleus_is_the_smallest_likeliest_set_that_reaches_top_p(batch):
    logits, ban, temperature, top_p = batch
    probs = filter_probs(logits, temperature, top_p, "some", ban)
    plain = filter_probs(logits, temperature, np.ones(len(logits)), "some", ban)
    assert np.allclose(probs.sum(-1), 1.0)
    assert not probs[ban].any()  # nothing banned is ever played
    for row in range(len(logits)):
        kept = nucleus_by_definition(plain[row], top_p[row]) - set(np.flatnonzero(ban[row]))
        assert set(np.flatnonzero(probs[row])) == {i for i in kept if plain[row, i] > 0}
        assert np.allclose(probs[row][sorted(kept)], plain[row][sorted(kept)] / plain[row][sorted(kept)].sum())


@settings(max_examples=60, deadline=None)
@given(batches(), st.integers(0, 2**32 - 1))
def test_a_draw_is_the_inverse_cdf_of_its_uniform(batch, seed):
    logits, ban, temperature, top_p = batch
    probs = filter_probs(logits, temperature, top_p, "some", ban)
    uniforms = np.random.default_rng(seed).random(len(probs))
    uniforms[0] = 0.0  # the edge: never a leading event of probability 0
    for row, token in enumerate(draw(probs, uniforms)):
        cdf = list(np.cumsum(probs[row]))
        assert token == min(bisect.bisect_right(cdf, uniforms[row] * cdf[-1]), V - 1)
        assert probs[row, token] > 0


@settings(max_examples=40, deadline=None)
@given(batches(rows=(2, 8)), st.data())
def test_a_row_chooses_the_same_alone_as_in_any_batch(batch, data):
    logits, ban, temperature, top_p = batch
    row = data.draw(st.integers(0, len(logits) - 1))
    rng = np.random.default_rng(row)
    bias = rng.normal(size=(len(logits), events.NUM_PITCHES))
    held = np.arange(len(logits))
    together = filter_probs(hold_keys(logits, bias, held), temperature, top_p, "some", ban)
    one = slice(row, row + 1)
    held_alone = hold_keys(logits[one], bias[one], np.arange(1))
    alone = filter_probs(held_alone, temperature[one], top_p[one], "some", ban[one])
    assert np.array_equal(together[row], alone[0])  # bit for bit: a seed's piece cannot depend on its company


@settings(max_examples=40, deadline=None)
@given(batches(rows=(2, 6)), st.integers(0, 2**32 - 1))
def test_holding_a_key_moves_probability_between_pitches_only(batch, seed):
    logits = batch[0]
    held = np.array([0])  # the first row holds a key, the others play free
    bias = np.random.default_rng(seed).normal(size=(1, events.NUM_PITCHES)) * 2
    out = hold_keys(logits, bias, held)
    notes = slice(0, events.NUM_PITCHES)
    assert np.allclose(logsumexp(out[0, notes]), logsumexp(logits[0, notes]))  # as busy as before
    assert np.array_equal(out[0, events.NUM_PITCHES :], logits[0, events.NUM_PITCHES :])
    assert np.array_equal(out[1:], logits[1:])
    shifted = out[0, notes] - logits[0, notes]
    assert np.allclose(shifted - shifted.mean(), bias[0] - bias[0].mean())


def test_a_release_of_a_silent_key_goes_to_the_sounding_ones_in_their_proportions():
    logits = np.zeros((1, V))
    off = events.NOTE_OFF
    logits[0, [off + 60, off + 64, off + 67]] = np.log([1.0, 2.0, 5.0])  # 67 is not sounding
    ban = np.zeros((1, V), dtype=bool)
    ban[0, off : events.TIME_SHIFT] = True
    ban[0, [off + 60, off + 64]] = False
    before = filter_probs(logits, np.ones(1), np.ones(1))[0]
    after = filter_probs(follow_grammar(logits, ban), np.ones(1), np.ones(1))[0]
    releases = before[off : events.TIME_SHIFT].sum()
    assert np.isclose(after[off + 60] + after[off + 64], releases)  # the whole release mass
    assert np.isclose(after[off + 64] / after[off + 60], 2.0) and after[off + 67] == 0
    assert np.isclose(after[events.TIME_SHIFT], before[events.TIME_SHIFT])


@settings(max_examples=40, deadline=None)
@given(batches(), st.integers(0, 2**32 - 1))
def test_torch_tensors_choose_as_numpy_arrays_do(batch, seed):
    """The GPU's path (torch tensors, kept on their device) and the CPU's (numpy) are one code."""
    import torch

    logits, ban, temperature, top_p = batch
    rng = np.random.default_rng(seed)
    bias = rng.normal(size=(len(logits), events.NUM_PITCHES))
    uniforms = rng.random(len(logits))

    def choose(convert):
        held = hold_keys(convert(logits), convert(bias))
        probs = filter_probs(held, convert(temperature), convert(top_p), "some", convert(ban))
        return probs, draw(probs, convert(uniforms))

    probs, tokens = choose(lambda a: a)
    t_probs, t_tokens = choose(torch.from_numpy)
    assert np.allclose(t_probs.numpy(), probs, rtol=1e-9, atol=1e-12)
    assert t_tokens.tolist() == tokens.tolist()
