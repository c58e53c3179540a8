"""Sampling: determinism, length, batching, primers and argument checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from composer.codec import events
from composer.sampling.choose import draw, filter_probs, follow_grammar
from composer.sampling.sample import Sampler, SampleRequest, Stream, piece_notes, primer_tokens


@pytest.fixture
def sampler(tiny_model_dir: Path) -> Sampler:
    return Sampler.from_dir(tiny_model_dir)


def seconds_of(tokens: np.ndarray) -> float:
    return events.duration_steps(tokens) / events.STEPS_PER_SECOND


@pytest.mark.parametrize("engine", ["naive", "fused", "fp16", "int8", "int8w", "half"])
def test_same_seed_same_piece_and_other_seed_other_piece(tiny_model_dir: Path, engine: str):
    sampler = Sampler.from_dir(tiny_model_dir, engine=engine)
    a, b, c = sampler.generate([SampleRequest(5, seed=7), SampleRequest(5, seed=7), SampleRequest(5, seed=8)])
    assert a.tolist() == b.tolist()
    assert a.tolist() != c.tolist()


def test_a_stream_does_not_depend_on_its_batch(sampler: Sampler):
    alone = sampler.generate([SampleRequest(4, seed=3, temperature=0.9)])[0]
    batched = sampler.generate(
        [SampleRequest(9, seed=1), SampleRequest(4, seed=3, temperature=0.9), SampleRequest(2, seed=5, top_p=0.8)]
    )[1]
    assert alone.tolist() == batched.tolist()


@pytest.mark.parametrize("seconds", [1.0, 7.5, 30.0])
def test_piece_stops_at_the_asked_length(sampler: Sampler, seconds: float):
    tokens = sampler.generate([SampleRequest(seconds, seed=11)])[0]
    assert seconds <= seconds_of(tokens) <= seconds * 1.15 + 1.0  # the last shift may overshoot by < 1 s
    assert tokens.min() >= 0 and tokens.max() < events.NUM_EVENTS


def test_every_note_is_closed(sampler: Sampler):
    tokens = sampler.generate([SampleRequest(10, seed=2)])[0]
    notes = events.decode(tokens)
    assert notes and all(n.end > n.start for n in notes)


def test_primer_is_continued_not_repeated(sampler: Sampler):
    primer = events.encode([events.Note(60, 80, 0, 0.5), events.Note(64, 80, 0.5, 1.0)]).astype(np.int64)
    _, primed = sampler.prime(SampleRequest(3, seed=4, primer=primer))
    _, fresh = sampler.prime(SampleRequest(3, seed=4))
    assert not torch.allclose(primed, fresh), "the primer should change what comes next"
    with_primer = sampler.generate([SampleRequest(3, seed=4, primer=primer)])[0]
    ragged = sampler.generate([SampleRequest(3, seed=4, primer=primer), SampleRequest(3, seed=4, primer=primer[:2])])
    assert ragged[0].tolist() == with_primer.tolist()


@pytest.mark.parametrize(
    "request_",
    [
        SampleRequest(0, seed=1),
        SampleRequest(601, seed=1),
        SampleRequest(5, seed=1, temperature=0),
        SampleRequest(5, seed=1, top_p=0),
        SampleRequest(5, seed=1, primer=np.array([999])),
    ],
)
def test_bad_requests_are_refused(sampler: Sampler, request_: SampleRequest):
    with pytest.raises(ValueError):
        sampler.generate([request_])


def test_top_p_keeps_only_the_nucleus():
    logits = np.log([[0.5, 0.3, 0.15, 0.05]])
    probs = filter_probs(logits, np.array([1.0]), np.array([0.7]))
    assert np.allclose(probs, [[0.625, 0.375, 0.0, 0.0]])
    assert draw(probs, np.array([0.99])).item() == 1
    assert draw(probs, np.array([0.1])).item() == 0


def test_primer_tokens_take_the_end_of_a_piece():
    notes = [events.Note(60 + i, 40 + i * 10, i * 1.0, i * 1.0 + 0.5) for i in range(6)]
    tokens = events.encode(notes)
    tail = primer_tokens(tokens, 2.0)
    decoded = events.decode(tail)
    assert [n.pitch for n in decoded] == [64, 65]
    assert events.VELOCITY <= tail[0] < events.NUM_EVENTS  # velocity re-stated up front


def test_streams_can_join_a_running_batch(sampler: Sampler):
    from composer.sampling.sample import BatchSampler

    alone = sampler.generate([SampleRequest(3, seed=21)])[0]
    batch = BatchSampler(sampler)
    first = batch.add(SampleRequest(60, seed=20))
    finished = []
    for _ in range(25):
        finished += batch.step()
    assert not finished
    late = batch.add(SampleRequest(3, seed=21))
    while batch.active:
        finished += batch.step()
    assert set(map(id, finished)) == {id(first), id(late)}
    assert late.result().tolist() == alone.tolist()


def test_a_continuation_keeps_its_primers_loudness(sampler: Sampler):
    primer = np.array([events.VELOCITY + 22, 60, events.TIME_SHIFT + 49, events.NOTE_OFF + 60], dtype=np.int64)
    tokens = sampler.generate([SampleRequest(3, seed=s, primer=primer) for s in range(4)])
    for piece in tokens:
        assert piece[0] == events.VELOCITY + 22
        notes = piece_notes(piece)
        before_any_change = [n for n in notes if not any(t >= events.VELOCITY for t in piece[1:])]
        assert all(n.velocity == events.bin_to_velocity(23) for n in before_any_change)


def test_a_row_without_nucleus_samples_the_same_beside_rows_with_one(sampler: Sampler):
    alone = sampler.generate([SampleRequest(6, seed=9)])[0]
    mixed = sampler.generate([SampleRequest(6, seed=9), SampleRequest(6, seed=10, top_p=0.5)])[0]
    assert alone.tolist() == mixed.tolist()
    logits = np.random.default_rng(0).normal(size=(2, 388))
    both = filter_probs(logits, np.ones(2), np.array([1.0, 0.5]))
    assert np.array_equal(both[0], filter_probs(logits[:1], np.ones(1), np.ones(1))[0])
    assert np.count_nonzero(both[0]) == 388 and np.count_nonzero(both[1]) < 388


def test_sampling_never_releases_a_key_that_is_not_sounding(sampler: Sampler):
    for piece in sampler.generate([SampleRequest(8, seed=s) for s in range(4)]):
        strikes = np.zeros(128, dtype=int)  # unreleased note-ons per key: a unison takes two releases
        assert piece[0] >= events.VELOCITY  # a velocity is stated before anything else
        for t in piece.tolist():
            if t < events.NOTE_OFF:
                strikes[t] += 1
            elif t < events.TIME_SHIFT:
                assert strikes[t - events.NOTE_OFF] > 0
                strikes[t - events.NOTE_OFF] -= 1


def test_a_release_keeps_its_probability_when_its_key_is_not_sounding():
    probs = np.full((2, events.NUM_EVENTS), 1e-12)
    # 30 % on releases: a third on key 60 (sounding), two thirds on key 62 (not sounding)
    probs[:, events.NOTE_OFF + 60], probs[:, events.NOTE_OFF + 62] = 0.1, 0.2
    probs[:, events.NOTE_ON + 64], probs[:, events.TIME_SHIFT + 9] = 0.3, 0.4
    ban = np.zeros((2, events.NUM_EVENTS), dtype=bool)
    ban[:, events.NOTE_OFF : events.TIME_SHIFT] = True
    ban[0, events.NOTE_OFF + 60] = False  # row 0: key 60 sounding; row 1: nothing sounding
    out = filter_probs(follow_grammar(np.log(probs), ban), np.ones(2), np.ones(2))
    assert out[0, events.NOTE_OFF + 60] == pytest.approx(0.3)  # the whole release mass
    assert out[0, events.NOTE_ON + 64] == pytest.approx(0.3) and out[0, events.NOTE_OFF + 62] == 0
    # Nothing to release: a plain mask, renormalized over what is left.
    assert out[1, events.NOTE_ON + 64] == pytest.approx(0.3 / 0.7)
    assert out[1, events.NOTE_OFF : events.TIME_SHIFT].sum() == 0


def test_a_confident_model_at_a_low_temperature_still_samples_an_allowed_event():
    logits = np.zeros((2, events.NUM_EVENTS))
    logits[:, events.TIME_SHIFT + 5] = 3.0  # what the model wants most, banned in row 0 (no velocity yet)
    logits[1, events.NOTE_OFF + 62] = 6.0  # a release of a key that is not sounding (row 1)
    ban = np.zeros((2, events.NUM_EVENTS), dtype=bool)
    ban[0, : events.VELOCITY] = True
    ban[1, events.NOTE_OFF : events.TIME_SHIFT] = True
    ban[1, events.NOTE_OFF + 60] = False
    probs = filter_probs(logits, np.array([0.02, 0.02]), np.ones(2), "none", ban)
    assert not np.isnan(probs).any()
    tokens = draw(probs, np.array([0.5, 0.5])).tolist()
    assert events.VELOCITY <= tokens[0] < events.NUM_EVENTS
    assert tokens[1] == events.NOTE_OFF + 60  # the wish to release goes to the key that sounds


def test_a_unison_takes_two_releases():
    stream = Stream(SampleRequest(5, seed=0))
    for token in (events.VELOCITY + 20, 60, 60, events.NOTE_OFF + 60):
        stream.accept(token)
    assert not stream.ban[events.NOTE_OFF + 60]  # one strike still sounds
    stream.accept(events.NOTE_OFF + 60)
    assert stream.ban[events.NOTE_OFF + 60]


def test_a_batch_that_emptied_takes_new_streams_afresh(sampler: Sampler):
    from composer.sampling.sample import BatchSampler

    batch = BatchSampler(sampler)
    batch.add(SampleRequest(1, seed=1, temperature=0.5, top_p=0.8))
    while batch.active:
        batch.step()
    late = batch.add(SampleRequest(2, seed=2, temperature=1.3))
    while batch.active:
        batch.step()
    assert late.result().tolist() == sampler.generate([SampleRequest(2, seed=2, temperature=1.3)])[0].tolist()


def test_a_race_ranks_the_sparsest_candidates_and_does_not_wait_for_the_rest(sampler: Sampler):
    requests = [SampleRequest(6, seed=s) for s in range(4)]
    full = sampler.generate_scored(requests)
    raced = sampler.generate_scored(requests, keep=3)
    densest = max(range(4), key=lambda i: (len(full[i][0]), i))
    assert raced[densest] is None
    for i in set(range(4)) - {densest}:
        assert raced[i][0].tolist() == full[i][0].tolist() and raced[i][1] == full[i][1]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 40), st.integers(0, 10)), min_size=1, max_size=8),
    st.integers(1, 9),
    st.integers(0, 60),
)
def test_a_race_decides_only_what_the_finished_pieces_already_show(pieces, keep, now):
    """Candidates of given lengths (events) joining the batch at given steps: at any moment, what
    the race decides is the ``keep`` shortest, ties to the earlier candidate."""
    from composer.sampling.sample import fewest_events

    def progress(t: int) -> list[tuple[int, bool]]:
        return [(min(max(t - start, 0), length), t - start >= length) for length, start in pieces]

    truth = sorted(sorted(range(len(pieces)), key=lambda i: (pieces[i][0], i))[:keep])
    decided = fewest_events(progress(now), keep)
    assert decided is None or decided == truth
    assert fewest_events(progress(max(length + start for length, start in pieces)), keep) == truth


def test_choosing_on_tensors_as_on_a_gpu_gives_the_pieces_numpy_gives(tiny_model_dir: Path):
    from composer.sampling.sample import BatchSampler

    sampler = Sampler.from_dir(tiny_model_dir)
    requests = [SampleRequest(4, seed=s, temperature=t, top_p=p) for s, t, p in ((1, 1.0, 0.9), (2, 0.8, 1.0))]
    requests.append(SampleRequest(4, seed=3, key_hold=0.5, form="AA", cache=0.3))
    pieces = {}
    for on_numpy in (True, False):
        batch = BatchSampler(sampler)
        batch.numpy = on_numpy
        streams = [batch.add(r) for r in requests]
        while batch.active:
            batch.step()
        pieces[on_numpy] = [s.result().tolist() for s in streams]
    assert pieces[True] == pieces[False]
