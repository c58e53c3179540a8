"""A learned pointer head: the model copies from its own piece's past when the present resembles it.

The LSTM forgets what it played a phrase ago; real music restates itself. The neural cache
(composer.sampling.cache) showed how much: pointing back from the top LSTM state to earlier
states and to the event that followed each took folk validation NLL 28 % lower, with no
training. This head is that cache, made part of the model and trained:

    p(x_t+1) = (1 - g_t) p_lstm(x_t+1) + g_t sum_{s<t} softmax_s(sharpness cos(Q h_t, K h_s)) [x_s+1 = x_t+1]
    g_t = sigmoid(w . h_t + b)

with Q, K, the sharpness, w and b learned. It starts as the cache (Q = K = identity, sharpness
120, g = 1/2), so a model given a pointer starts where the cache left it, and training moves
on from there: when to copy (the gate) and what counts as the same moment (Q and K).
Only performance events are pointed at (never padding or the end), and a step points back at
most ``WINDOW`` events.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from composer.codec import events

START_SHARPNESS = 120.0  # the neural cache's (composer.sampling.cache.SHARPNESS)
WINDOW = 2048
"""Events a step may point back to: a 30 s piece of dense piano music holds about 2,000."""

Memory = tuple[torch.Tensor, torch.Tensor]
"""Earlier chunks' keys (batch, m, hidden) and the event that followed each (batch, m)."""


class PointerHead(nn.Module):
    def __init__(self, hidden_size: int):
        super().__init__()
        self.query = nn.Linear(hidden_size, hidden_size, bias=False)
        self.key = nn.Linear(hidden_size, hidden_size, bias=False)
        self.log_sharpness = nn.Parameter(torch.tensor(math.log(START_SHARPNESS)))
        self.gate = nn.Linear(hidden_size, 1)
        with torch.no_grad():
            nn.init.eye_(self.query.weight)
            nn.init.eye_(self.key.weight)
            nn.init.zeros_(self.gate.weight)
            nn.init.zeros_(self.gate.bias)

    def keys(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.key(hidden), dim=-1)

    def queries(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.query(hidden), dim=-1) * self.log_sharpness.exp()

    def gate_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.gate(hidden).squeeze(-1)

    def mixed_log_probs(
        self,
        hidden: torch.Tensor,
        model_log_probs: torch.Tensor,
        targets: torch.Tensor,
        memory: Memory | None = None,
    ) -> tuple[torch.Tensor, Memory]:
        """Each target's log-probability under the LSTM mixed with the pointer.

        ``hidden`` (batch, time, hidden): the top states that predict ``targets`` (batch, time);
        ``model_log_probs`` (batch, time): the LSTM's own log-probabilities of the targets;
        ``memory``: what earlier chunks of the same pieces left (None at a piece's start).
        Returns the mixed log-probabilities and the memory for the next chunk. A step with
        nothing to point back to keeps the LSTM's probability.
        """
        with torch.autocast(hidden.device.type, enabled=False):  # bf16 would blur scores of up to ~120
            return self._mixed(hidden.float(), model_log_probs.float(), targets, memory)

    def _mixed(
        self, hidden: torch.Tensor, model_log_probs: torch.Tensor, targets: torch.Tensor, memory: Memory | None
    ) -> tuple[torch.Tensor, Memory]:
        steps = targets.shape[1]
        keys = self.keys(hidden)
        if memory is not None:
            keys = torch.cat([memory[0].to(keys.dtype), keys], 1)
            nexts = torch.cat([memory[1], targets], 1)
        else:
            nexts = targets
        earlier = keys.shape[1] - steps
        scores = self.queries(hidden) @ keys.transpose(1, 2)  # (batch, time, earlier + time)
        t = torch.arange(steps, device=targets.device)[:, None] + earlier
        s = torch.arange(keys.shape[1], device=targets.device)[None, :]
        allowed = (s < t) & (s >= t - WINDOW)
        allowed = allowed[None] & (nexts < events.NUM_EVENTS)[:, None, :]
        anywhere = allowed.any(-1)
        scores = scores.float().masked_fill(~allowed, float("-inf"))
        weights = torch.softmax(scores.masked_fill(~anywhere[..., None], 0.0), -1)
        same = (nexts[:, None, :] == targets[:, :, None]) & allowed
        pointed = (weights * same).sum(-1)
        gate = self.gate_logits(hidden).float()
        keep = torch.where(anywhere, F.logsigmoid(-gate), 0.0) + model_log_probs.float()
        can_copy = anywhere & (pointed > 0)
        copy = torch.where(can_copy, F.logsigmoid(gate) + torch.log(pointed.clamp_min(1e-30)), float("-inf"))
        kept = min(keys.shape[1], WINDOW)
        return torch.logaddexp(keep, copy), (keys[:, -kept:].detach(), nexts[:, -kept:])


def with_pointer(model: nn.Module) -> nn.Module:
    """The same network with a pointer head that starts as the neural cache (see the module doc)."""
    from dataclasses import replace

    from composer.nn.model import PerformanceRNN

    if model.config.pointer:
        raise ValueError("the model already has a pointer head")
    wider = PerformanceRNN(replace(model.config, pointer=True)).to(next(model.parameters()).device)
    missing, unexpected = wider.load_state_dict(model.state_dict(), strict=False)
    if unexpected or not all(name.startswith("pointer.") for name in missing):
        raise ValueError(f"cannot add a pointer head: {missing} {unexpected}")
    return wider.train(model.training)
