"""A model conditioned on key and density: warm-started exactly, stepped the same by the sampling engine."""

from __future__ import annotations

import base64

import numpy as np
import pytest
import torch

from composer.codec.controls import CONTROL_DIM, NO_CONTROL, control_vector
from composer.codec.keys import Key
from composer.nn.fastlstm import FusedLSTM, quantization_available
from composer.nn.model import ModelConfig, PerformanceRNN, load_model, save_model, with_controls


def stepwise(engine: FusedLSTM, tokens: torch.Tensor, controls: torch.Tensor) -> torch.Tensor:
    state, gates, out = engine.zero_state(tokens.shape[0]), engine.control_gates(controls), []
    for t in range(tokens.shape[1]):
        logits, state = engine.step(tokens[:, t], state, gates)
        out.append(logits)
    return torch.stack(out, dim=1)


@pytest.fixture(scope="module")
def plain() -> PerformanceRNN:
    torch.manual_seed(0)
    return PerformanceRNN(ModelConfig(embed_dim=24, hidden_size=48, num_layers=3)).eval()


@pytest.fixture(scope="module")
def conditioned(plain) -> PerformanceRNN:
    """Warm-started, then its control weights moved off zero, as training would."""
    model = with_controls(plain, CONTROL_DIM)
    with torch.no_grad():
        model.lstm.weight_ih_l0[:, -CONTROL_DIM:].normal_(0, 0.5)
    return model.eval()


def test_a_warm_start_computes_exactly_what_the_model_computed_whatever_the_controls(plain):
    tokens = torch.randint(0, 391, (4, 30))
    warm = with_controls(plain, CONTROL_DIM).eval()
    assert warm.config.control_dim == CONTROL_DIM
    with torch.no_grad():
        before, _ = plain(tokens)
        for controls in (torch.rand(4, 30, CONTROL_DIM), torch.as_tensor(control_vector(Key(2, "minor"), 6.0)), None):
            after, _ = warm(tokens, controls=controls)
            assert torch.equal(after, before)


def test_controls_change_what_a_trained_conditioned_model_predicts(conditioned):
    tokens = torch.randint(0, 388, (2, 20))
    with torch.no_grad():
        d_minor, _ = conditioned(tokens, controls=torch.as_tensor(control_vector(Key(2, "minor"))))
        none, _ = conditioned(tokens)
        explicit_none, _ = conditioned(tokens, controls=torch.as_tensor(NO_CONTROL))
    assert torch.equal(none, explicit_none) and not torch.allclose(d_minor, none)


@pytest.mark.parametrize(
    ("weights", "tolerance"),
    [
        ("fp32", 1e-5),
        pytest.param("int8", 0.05, marks=pytest.mark.skipif(not quantization_available(), reason="no fbgemm")),
    ],
)
def test_the_sampling_engine_steps_a_conditioned_model_like_the_model(conditioned, weights, tolerance):
    tokens = torch.randint(0, 388, (3, 25))
    asked = torch.as_tensor(np.stack([control_vector(Key(i * 5, "major"), 3.0 * (i + 1)) for i in range(3)]))
    with torch.no_grad():
        reference, _ = conditioned(tokens, controls=asked[:, None, :].expand(-1, 25, -1))
    assert (stepwise(FusedLSTM(conditioned, weights), tokens, asked) - reference).abs().max() < tolerance


def test_a_conditioned_model_saves_and_loads_with_its_control_inputs(conditioned, tmp_path):
    save_model(conditioned, tmp_path / "m", {"genre": "folk"}, half=False)
    loaded, card = load_model(tmp_path / "m")
    assert card["config"]["control_dim"] == CONTROL_DIM
    tokens = torch.randint(0, 388, (1, 10))
    controls = torch.as_tensor(control_vector(Key(7, "major")))
    with torch.no_grad():
        assert torch.equal(loaded(tokens, controls=controls)[0], conditioned(tokens, controls=controls)[0])


def test_an_unconditioned_engine_has_no_control_gates(plain):
    assert FusedLSTM(plain).control_gates(torch.zeros(1, CONTROL_DIM)) is None


def test_a_conditioned_sampler_keeps_a_seed_alone_or_in_a_batch_and_the_key_changes_the_piece(conditioned, tmp_path):
    from composer.sampling.sample import Sampler, SampleRequest

    save_model(conditioned, tmp_path / "m", {"genre": "folk"})
    engines = ["fused", "naive"] + (["int8"] if quantization_available() else [])
    d_minor = control_vector(Key(2, "minor"), 4.0)
    for engine in engines:
        sampler = Sampler.from_dir(tmp_path / "m", "cpu", engine)
        keyed = SampleRequest(2.0, seed=5, controls=d_minor)
        alone = sampler.generate([keyed])[0]
        batched = sampler.generate([SampleRequest(2.0, seed=9), keyed, SampleRequest(1.0, seed=3, controls=None)])
        assert np.array_equal(batched[1], alone), engine
        assert not np.array_equal(sampler.generate([SampleRequest(2.0, seed=5)])[0], alone), engine


def test_an_unconditioned_sampler_refuses_a_key(plain, tmp_path):
    from composer.sampling.sample import Sampler, SampleRequest

    save_model(plain, tmp_path / "p", {"genre": "folk"})
    with pytest.raises(ValueError, match="takes no key or density"):
        Sampler.from_dir(tmp_path / "p").generate([SampleRequest(1.0, 1, controls=control_vector(Key(0, "major")))])


def test_the_composer_follows_a_key_when_its_model_can_and_says_so(conditioned, plain, tmp_path):
    from fastapi.testclient import TestClient

    from composer.contract import CompositionRejected
    from composer.serving.local import LocalComposerClient
    from composer.serving.service import create_app

    models = tmp_path / "models"
    for genre, model in (("folk", conditioned), ("pop", plain)):
        save_model(model, models / genre / "v1", {"genre": genre})
        (models / genre / "CURRENT").write_text("v1\n")
    local = LocalComposerClient(models_dir=models, genres_dir=tmp_path / "no-manifests")
    keyed = local.compose("folk", 3, seed=4, key="d minor", density=6)
    assert (keyed.asked_key, keyed.asked_density, keyed.controlled) == ("D minor", 6.0, True)
    assert keyed.midi != local.compose("folk", 3, seed=4).midi
    ignored = local.compose("pop", 3, seed=4, key="E flat")  # a model without controls composes anyway
    assert (ignored.asked_key, ignored.controlled) == ("E♭ major", False)
    assert ignored.midi == local.compose("pop", 3, seed=4).midi
    with pytest.raises(CompositionRejected, match="name one like 'D minor'"):
        local.compose("folk", 3, key="H dorian")

    with TestClient(create_app(models_dir=models, genres_dir=tmp_path / "no-manifests")) as http:
        body = {"genre": "folk", "seconds": 3, "seed": 4, "key": "d minor", "density": 6}
        over_http = http.post("/v1/compositions", json=body).json()
        assert (over_http["asked_key"], over_http["controlled"]) == ("D minor", True)
        assert over_http["midi"] == base64.b64encode(keyed.midi).decode()
        refused = http.post("/v1/compositions", json={**body, "key": "H dorian"})
        assert refused.status_code == 422 and "name one like 'D minor'" in refused.json()["detail"]


def test_stepping_a_conditioned_model_without_controls_means_no_control(conditioned):
    tokens = torch.randint(0, 388, (2, 15))
    engine = FusedLSTM(conditioned)
    state, out = engine.zero_state(2), []
    for t in range(tokens.shape[1]):
        logits, state = engine.step(tokens[:, t], state)
        out.append(logits)
    with torch.no_grad():
        reference, _ = conditioned(tokens)
    assert (torch.stack(out, dim=1) - reference).abs().max() < 1e-5
