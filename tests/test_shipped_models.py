"""The models the repository ships: present, documented, musical, and fast paths faithful to them."""

from __future__ import annotations

import numpy as np
import pytest

from composer.codec import events
from composer.codec.midi import find_midi_files, load_notes
from composer.models.registry import card, current_version, model_dir
from composer.nn.fastlstm import FusedLSTM, quantization_available
from composer.sampling.sample import Sampler, SampleRequest
from composer.training.evaluate import sequences_nll, stepwise_nll, with_markers
from tests.conftest import CORPORA, DATA_ROOT, needs_corpora

GENRES = ("classical", "pop", "folk", "chorale")


@pytest.mark.parametrize("genre", GENRES)
def test_every_genre_ships_a_documented_model(genre: str):
    assert current_version(genre), f"no CURRENT model for {genre}"
    info = card(genre)
    assert info["genre"] == genre
    assert info["vocabulary"]["events"] == events.NUM_EVENTS
    assert 0 < info["validation_nll"] < 4.0
    assert info["license"] and info["training"]["data"]
    assert (model_dir(genre) / "model.safetensors").stat().st_size < 30_000_000


@pytest.mark.parametrize("genre", GENRES)
def test_shipped_model_composes_music(genre: str):
    sampler = Sampler.from_dir(model_dir(genre))
    tokens = sampler.generate([SampleRequest(8, seed=3, temperature=0.9)])[0]
    notes = events.decode(tokens)
    assert len(notes) >= 8, "a trained model plays notes"
    assert len({n.pitch for n in notes}) >= 3
    assert 8 <= events.duration_steps(tokens) / 100 <= 8 * 1.15 + 1


@needs_corpora
@pytest.mark.skipif(not quantization_available(), reason="no fbgemm int8 kernels on this CPU")
def test_int8_sampling_engine_keeps_the_nll_within_001(genre: str = "folk"):
    """The int8 fast path must score real music within 0.01 nats/event of the float model (with its
    pointer head mixed in as the sampler mixes it, where the model has one)."""
    sampler = Sampler.from_dir(model_dir(genre), engine="naive")
    paths = find_midi_files(DATA_ROOT / CORPORA[genre])
    sequences = [with_markers(events.encode(load_notes(p))) for p in paths[:: len(paths) // 6][:6]]
    ref_total, ref_count = sequences_nll(sampler.model, sequences)
    int8_total, int8_count = stepwise_nll(FusedLSTM(sampler.model, "int8"), sequences, sampler.pointer)
    assert ref_count == int8_count > 1000
    assert abs(int8_total / int8_count - ref_total / ref_count) < 0.01
    int8w_total, _ = stepwise_nll(FusedLSTM(sampler.model, "int8w"), sequences, sampler.pointer)
    assert abs(int8w_total - ref_total) / ref_count < 0.01
    fp32_total, _ = stepwise_nll(FusedLSTM(sampler.model), sequences, sampler.pointer)
    assert abs(fp32_total - ref_total) / ref_count < 1e-4
    assert np.isfinite(ref_total)
