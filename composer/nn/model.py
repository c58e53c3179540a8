"""The Performance RNN: token embedding -> stacked LSTM -> logits over the vocabulary.

Weights are stored as safetensors with a JSON model card beside them; the card carries
the hyper-parameters needed to rebuild the network, so a model directory is self-contained.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from composer.nn.config import ModelConfig

WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "card.json"

State = tuple[torch.Tensor, torch.Tensor]


class PerformanceRNN(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.embed_dim)
        self.lstm = nn.LSTM(
            config.embed_dim,
            config.hidden_size,
            num_layers=config.num_layers,
            dropout=config.dropout if config.num_layers > 1 else 0.0,
            batch_first=True,
        )
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden_size, config.vocab_size)

    def forward(self, tokens: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """tokens (batch, time) -> logits (batch, time, vocab) and the LSTM state after them."""
        hidden, state = self.lstm(self.drop(self.embed(tokens)), state)
        return self.head(self.drop(hidden)), state

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def save_model(model: PerformanceRNN, directory: Path, card: dict[str, Any], half: bool = True) -> None:
    """Write weights (fp16 by default: half the size, same samples) and the model card."""
    directory.mkdir(parents=True, exist_ok=True)
    dtype = torch.float16 if half else torch.float32
    tensors = {k: v.detach().to("cpu", dtype).contiguous() for k, v in model.state_dict().items()}
    tmp = directory / f".{WEIGHTS_FILE}.tmp"
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    tmp.chmod(0o644)  # safetensors may write its file private; a service user must read it
    tmp.replace(directory / WEIGHTS_FILE)
    full_card = {**card, "config": asdict(model.config), "parameters": model.num_parameters()}
    (directory / CARD_FILE).write_text(json.dumps(full_card, indent=2, sort_keys=True) + "\n")


def read_card(directory: Path) -> dict[str, Any]:
    return json.loads((directory / CARD_FILE).read_text())


def load_model(directory: Path, device: str | torch.device = "cpu") -> tuple[PerformanceRNN, dict[str, Any]]:
    """Rebuild a model from its directory, in float32 on ``device``, in eval mode."""
    card = read_card(directory)
    model = PerformanceRNN(ModelConfig(**card["config"]))
    weights = load_file(str(directory / WEIGHTS_FILE))
    model.load_state_dict({k: v.float() for k, v in weights.items()})
    return model.to(device).eval(), card
