"""The Performance RNN: token embedding -> stacked LSTM -> logits over the vocabulary, and
optionally a pointer head that copies from the piece's own past (composer.nn.pointer).

Weights are stored as safetensors with a JSON model card beside them; the card carries
the hyper-parameters needed to rebuild the network, so a model directory is self-contained.
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from composer.codec.controls import CONTROL_DIM, NO_CONTROL
from composer.nn.config import ModelConfig
from composer.nn.pointer import Memory, PointerHead

WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "card.json"

State = tuple[torch.Tensor, torch.Tensor]


class PerformanceRNN(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.embed_dim)
        self.lstm = nn.LSTM(
            config.embed_dim + config.control_dim,
            config.hidden_size,
            num_layers=config.num_layers,
            dropout=config.dropout if config.num_layers > 1 else 0.0,
            batch_first=True,
        )
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden_size, config.vocab_size)
        self.pointer = PointerHead(config.hidden_size) if config.pointer else None

    def forward(
        self,
        tokens: torch.Tensor,
        state: State | None = None,
        controls: torch.Tensor | None = None,
        targets: torch.Tensor | None = None,
        memory: Memory | None = None,
    ):
        """tokens (batch, time) -> logits (batch, time, vocab) and the LSTM state after them.

        A conditioned model takes ``controls`` (batch, time, control_dim), or (batch, control_dim)
        or (control_dim,) for one control throughout; none means "no control"
        (composer.codec.controls.NO_CONTROL).

        Given ``targets`` (batch, time), the next token of each input, it returns instead each
        target's log-probability under the whole model, its pointer head included, the LSTM
        state, and the pointer's memory for the next chunk of the same pieces (``memory``: what
        the chunk before left; None for a model without a pointer). Training and validation
        score through here, so a model with a pointer is trained and judged as it samples.
        The logits are the LSTM's own: the sampler mixes the pointer in (composer.sampling.sample).
        """
        hidden, state = self.top_states(tokens, state, controls)
        logits = self.head(self.drop(hidden))
        if targets is None:
            return logits, state
        log_probs = torch.log_softmax(logits.float(), -1).gather(-1, targets[..., None]).squeeze(-1)
        if self.pointer is None:
            return log_probs, state, None
        log_probs, memory = self.pointer.mixed_log_probs(hidden, log_probs, targets, memory)
        return log_probs, state, memory

    def top_states(
        self, tokens: torch.Tensor, state: State | None = None, controls: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, State]:
        """The top LSTM layer's output at every step (batch, time, hidden), before the head: what
        the neural cache (composer.sampling.cache) compares moments by."""
        x = self.drop(self.embed(tokens))
        if self.config.control_dim:
            if controls is None:
                controls = torch.as_tensor(no_control(self.config.control_dim), device=x.device)
            if controls.dim() < 3:  # (control_dim,) or (batch, control_dim): the same control throughout
                controls = controls.reshape(-1, 1, controls.shape[-1]).expand(tokens.shape[0], tokens.shape[1], -1)
            x = torch.cat([x, controls.to(x.dtype)], dim=-1)
        return self.lstm(x, state)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def no_control(control_dim: int) -> np.ndarray:
    """The "no control" vector for a model that takes ``control_dim`` control floats."""
    if control_dim != CONTROL_DIM:
        raise ValueError(f"this model takes {control_dim} control floats; composer.codec.controls makes {CONTROL_DIM}")
    return NO_CONTROL


def with_controls(model: PerformanceRNN, control_dim: int) -> PerformanceRNN:
    """The same network with ``control_dim`` control inputs whose weights start at zero.

    It computes exactly what ``model`` computed, whatever the controls, so training a
    conditioned model starts from where the unconditioned one is (a warm start)."""
    if model.config.control_dim:
        raise ValueError("the model already takes controls")
    config = replace(model.config, control_dim=control_dim)
    wider = PerformanceRNN(config).to(next(model.parameters()).device)
    state = model.state_dict()
    w = state["lstm.weight_ih_l0"]
    state["lstm.weight_ih_l0"] = torch.cat([w, w.new_zeros(w.shape[0], control_dim)], dim=1)
    wider.load_state_dict(state)
    return wider.train(model.training)


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
