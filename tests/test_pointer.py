"""The pointer head (composer.nn.pointer): the neural cache made part of the model, trained, sampled."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from composer.codec import events
from composer.codec.events import Note, encode
from composer.nn.model import ModelConfig, PerformanceRNN, load_model, save_model
from composer.nn.pointer import with_pointer
from composer.sampling.cache import pieces_cached_nll
from composer.sampling.sample import BatchSampler, Sampler, SampleRequest
from composer.training.evaluate import pieces_nll
from tests.test_train import TINY, composer, metrics, project  # noqa: F401  (project: the shared fixture)


def tune(repeats: int = 3) -> np.ndarray:
    """BOS and a little tune played ``repeats`` times: events only, no EOS."""
    phrase = [(60, 0.0), (62, 0.25), (64, 0.5), (65, 0.75), (67, 1.0), (64, 1.5)]
    notes = [Note(p, 80, r * 2.0 + t, r * 2.0 + t + 0.2) for r in range(repeats) for p, t in phrase]
    return np.concatenate([[events.BOS], encode(notes)]).astype(np.int64)


def tiny(pointer: bool = False, seed: int = 0) -> PerformanceRNN:
    torch.manual_seed(seed)
    model = PerformanceRNN(ModelConfig(embed_dim=16, hidden_size=32, num_layers=2))
    return (with_pointer(model) if pointer else model).eval()


def test_a_new_pointer_head_is_the_neural_cache_at_half_weight():
    base = tiny()
    pieces = [tune(), tune(2)]
    (alone, cached), count = pieces_cached_nll(base, pieces, [0.5])
    total, scored, _ = pieces_nll(with_pointer(base).eval(), pieces)
    assert scored == count
    assert total / scored == pytest.approx(cached, rel=1e-5)
    assert total / scored < alone  # the tune repeats: copying pays


def test_the_pointer_s_memory_carries_across_chunks():
    model = tiny(pointer=True)
    pieces = [tune(4), tune(2)]
    whole = pieces_nll(model, pieces, chunk=4096)[0]
    assert pieces_nll(model, pieces, chunk=7)[0] == pytest.approx(whole, rel=1e-6)


def test_a_model_with_a_pointer_saves_and_loads_it(tmp_path: Path):
    model = tiny(pointer=True)
    with torch.no_grad():
        model.pointer.gate.bias.fill_(-1.5)
    save_model(model, tmp_path / "m", {"genre": "folk"}, half=False)
    loaded, card = load_model(tmp_path / "m")
    assert card["config"]["pointer"] is True
    assert float(loaded.pointer.gate.bias.detach()) == -1.5
    with pytest.raises(ValueError, match="already has a pointer"):
        with_pointer(loaded)


def sampled(sampler: Sampler, requests: list[SampleRequest]) -> list[tuple[list[int], float]]:
    batch = BatchSampler(sampler)
    streams = [batch.add(r) for r in requests]
    while batch.active:
        batch.step()
    return [(s.tokens, s.log_likelihood) for s in streams]


@pytest.mark.parametrize("engine", ["naive", "int8"])
def test_sampling_scores_each_event_as_the_model_does_alone_or_in_a_batch(engine: str):
    from composer.nn.fastlstm import quantization_available

    if engine == "int8" and not quantization_available():
        pytest.skip("no fbgemm here")
    model = tiny(pointer=True)
    with torch.no_grad():
        model.pointer.gate.bias.fill_(1.0)  # a pointer that matters: it copies most of the time
        # The sampler weighs the performance events only; without special tokens the model does too.
        model.head.bias[events.NUM_EVENTS :] = -1e4
    sampler = Sampler(model, device="cpu", engine=engine)
    requests = [SampleRequest(seconds=10, seed=seed, top_p=1.0) for seed in range(1, 7)]  # two blocks of rows
    together = sampled(sampler, requests)
    alone = [sampled(sampler, [r])[0] for r in requests]
    assert [tokens for tokens, _ in alone] == [tokens for tokens, _ in together]
    assert [score for _, score in alone] == pytest.approx([score for _, score in together], rel=1e-6)
    if engine == "naive":  # the float32 network: the sampler's mixture is the model's
        for tokens, log_likelihood in together:
            piece = np.asarray([events.BOS, *tokens], dtype=np.int64)
            total, count, _ = pieces_nll(model, [piece])
            assert count == len(tokens)
            assert -total == pytest.approx(log_likelihood, rel=1e-4)


def test_a_primer_is_in_the_pointer_s_memory():
    model = tiny(pointer=True)
    with torch.no_grad():
        model.pointer.gate.bias.fill_(4.0)  # copies nearly always
        model.head.bias[events.NUM_EVENTS :] = -1e4
    sampler = Sampler(model, device="cpu", engine="naive")
    primer = tune(2)[1:]
    request = SampleRequest(seconds=2, seed=5, primer=primer, top_p=1.0)
    ((tokens, log_likelihood),) = sampled(sampler, [request])
    primed = np.concatenate([[events.BOS], primer, tokens]).astype(np.int64)
    total, _, _ = pieces_nll(model, [primed])
    primer_only, _, _ = pieces_nll(model, [np.concatenate([[events.BOS], primer]).astype(np.int64)])
    # The continuation scores as the model scores it after the primer, which its pointer points into: a
    # sampler that forgot the primer would have weighed the first events without it.
    assert -(total - primer_only) == pytest.approx(log_likelihood, rel=1e-4)


def test_pointer_only_training_moves_the_pointer_and_nothing_else(project):  # noqa: F811
    run = ("train", "--genre", "tunes", "--run-name", "ptr", "--eval-every", "3", "--steps", "3")
    first = composer(project, "train", "--genre", "tunes", "--run-name", "base", "--steps", "2", *TINY)
    assert first.returncode == 0, first.stderr
    base_dir = Path(project["COMPOSER_RUNS_DIR"]) / "tunes" / "base" / "best"
    done = composer(project, *run, "--init-from", str(base_dir), "--pointer", "--pointer-only", "--lr", "0.01", *TINY)
    assert done.returncode == 0, done.stderr
    base, _ = load_model(base_dir)
    trained, card = load_model(Path(project["COMPOSER_RUNS_DIR"]) / "tunes" / "ptr" / "best")
    assert card["config"]["pointer"] and card["training"]["pointer_only"]
    below = {k: v for k, v in trained.state_dict().items() if not k.startswith("pointer.")}
    assert below.keys() == base.state_dict().keys()
    assert all(torch.equal(v, base.state_dict()[k]) for k, v in below.items())
    fresh = with_pointer(base).state_dict()
    assert any(not torch.equal(v, fresh[k]) for k, v in trained.state_dict().items() if k.startswith("pointer."))
    assert [m["step"] for m in metrics(project, "ptr") if "val_nll" in m] == [3]
    refused = composer(project, *replace_run(run, "lonely"), "--init-from", str(base_dir), "--pointer-only", *TINY)
    assert refused.returncode != 0 and "--pointer" in refused.stderr + refused.stdout


def replace_run(run: tuple[str, ...], name: str) -> tuple[str, ...]:
    return tuple(name if i and run[i - 1] == "--run-name" else a for i, a in enumerate(run))
