"""The fused sampling engine computes the same function as the model it was built from."""

from __future__ import annotations

import torch

from composer.fastlstm import FusedLSTM, quantization_available
from composer.model import ModelConfig, PerformanceRNN


def stepwise(engine: FusedLSTM, tokens: torch.Tensor) -> torch.Tensor:
    state = engine.zero_state(tokens.shape[0])
    out = []
    for t in range(tokens.shape[1]):
        logits, state = engine.step(tokens[:, t], state)
        out.append(logits)
    return torch.stack(out, dim=1)


def test_fused_matches_nn_lstm_and_int8_stays_close():
    torch.manual_seed(0)
    model = PerformanceRNN(ModelConfig(embed_dim=24, hidden_size=48, num_layers=3)).eval()
    tokens = torch.randint(0, 391, (3, 40))
    with torch.no_grad():
        reference, _ = model(tokens)
    fused = stepwise(FusedLSTM(model), tokens)
    assert torch.allclose(fused, reference, atol=1e-5)
    if quantization_available():
        int8 = stepwise(FusedLSTM(model, quantize=True), tokens)
        assert (int8 - reference).abs().max() < 0.05
        assert not torch.equal(int8, reference)
