"""The fused sampling engine computes the same function as the model it was built from."""

from __future__ import annotations

import pytest
import torch

from composer.nn.fastlstm import FusedLSTM, quantization_available
from composer.nn.model import ModelConfig, PerformanceRNN

needs_fbgemm = pytest.mark.skipif(not quantization_available(), reason="no fbgemm kernels on this CPU")


def stepwise(engine: FusedLSTM, tokens: torch.Tensor) -> torch.Tensor:
    state = engine.zero_state(tokens.shape[0])
    out = []
    for t in range(tokens.shape[1]):
        logits, state = engine.step(tokens[:, t], state)
        out.append(logits)
    return torch.stack(out, dim=1)


@pytest.fixture(scope="module")
def model() -> PerformanceRNN:
    torch.manual_seed(0)
    return PerformanceRNN(ModelConfig(embed_dim=24, hidden_size=48, num_layers=3)).eval()


def test_fused_fp32_matches_nn_lstm(model):
    tokens = torch.randint(0, 391, (3, 40))
    with torch.no_grad():
        reference, _ = model(tokens)
    assert torch.allclose(stepwise(FusedLSTM(model), tokens), reference, atol=1e-5)


@needs_fbgemm
@pytest.mark.parametrize(("weights", "tolerance"), [("fp16", 5e-3), ("int8", 0.05), ("int8w", 0.05), ("half", 0.02)])
def test_packed_weights_stay_close(model, weights: str, tolerance: float):
    tokens = torch.randint(0, 391, (3, 40))
    with torch.no_grad():
        reference, _ = model(tokens)
    packed = stepwise(FusedLSTM(model, weights), tokens)
    assert (packed - reference).abs().max() < tolerance
    assert not torch.equal(packed, reference)


@pytest.mark.parametrize(
    "weights", ["fp32", "int8w", pytest.param("fp16", marks=needs_fbgemm), pytest.param("int8", marks=needs_fbgemm)]
)
def test_a_row_is_computed_the_same_alone_or_in_any_batch(weights: str):
    torch.manual_seed(1)
    big = PerformanceRNN(ModelConfig(embed_dim=64, hidden_size=256, num_layers=3)).eval()
    engine = FusedLSTM(big, weights)
    tokens = torch.randint(0, 388, (130, 12))
    alone = stepwise(engine, tokens[:1])[0]
    for size in (2, 3, 17, 64, 130):
        assert torch.equal(stepwise(engine, tokens[:size])[0], alone), f"batch of {size}"


def test_unknown_weights_are_refused(model):
    with pytest.raises(ValueError, match="weights must be one of"):
        FusedLSTM(model, "fp8")
