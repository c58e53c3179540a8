"""The network's shape, torch-free: what a model card records and ``composer train`` sets."""

from __future__ import annotations

from dataclasses import dataclass

from composer.codec import events


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = events.VOCAB_SIZE
    embed_dim: int = 256
    hidden_size: int = 512
    num_layers: int = 3
    dropout: float = 0.0
    control_dim: int = 0
    """Floats of control (composer.codec.controls) fed beside each event; 0: an unconditioned model."""
    pointer: bool = False
    """A pointer head that copies from the piece's own past (composer.nn.pointer)."""
