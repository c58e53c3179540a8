"""Sampling new pieces from a genre model, one or many streams at once.

Each stream has its own random generator seeded from its own seed, and draws one uniform
number per step, so a stream's piece depends on its seed and not on what else shares the
batch. A stream stops once its time shifts reach the asked length; the end-of-piece token
is masked until then, and decoding closes every note that is still sounding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from composer import events
from composer.fastlstm import FusedLSTM, quantization_available
from composer.model import PerformanceRNN, load_model

MAX_SECONDS = 600.0
# A guard against a model that never moves time forward: far above real densities
# (the busiest piano corpora average under 100 events per second).
MAX_EVENTS_PER_SECOND = 400


@dataclass(frozen=True)
class SampleRequest:
    seconds: float
    seed: int
    temperature: float = 1.0
    top_p: float = 1.0
    primer: np.ndarray | None = None
    """Event tokens the piece continues from (not part of the returned tokens)."""


def validate(request: SampleRequest) -> None:
    if not 0 < request.seconds <= MAX_SECONDS:
        raise ValueError(f"seconds must be in (0, {MAX_SECONDS:g}], got {request.seconds:g}")
    if not 0 < request.temperature <= 5:
        raise ValueError(f"temperature must be in (0, 5], got {request.temperature:g}")
    if not 0 < request.top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {request.top_p:g}")
    if request.primer is not None and request.primer.size:
        p = request.primer
        if p.min() < 0 or p.max() >= events.NUM_EVENTS:
            raise ValueError("primer tokens must be performance events (0..387)")


def filter_probs(logits: torch.Tensor, temperature: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Softmax at each row's temperature, keeping each row's top-p nucleus."""
    probs = torch.softmax(logits / temperature[:, None], dim=-1)
    if bool((top_p < 1).any()):
        sorted_p, order = probs.sort(dim=-1, descending=True)
        before = sorted_p.cumsum(-1) - sorted_p
        sorted_p = sorted_p.masked_fill(before >= top_p[:, None], 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
        probs = probs / probs.sum(-1, keepdim=True)
    return probs


def draw(probs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF sampling: one token per row from its own uniform number."""
    cdf = probs.double().cumsum(-1)
    cdf = cdf / cdf[:, -1:]
    idx = torch.searchsorted(cdf, uniforms.double()[:, None]).squeeze(-1)
    return idx.clamp_(max=probs.shape[-1] - 1)


ENGINES = ("auto", "int8", "fused", "naive")


class Composer:
    """A loaded genre model that samples pieces; reuse it, loading is the slow part.

    ``engine`` picks how each step runs: ``fused`` (pre-packed float32 weights),
    ``int8`` (fused with int8 weights, CPU only), ``naive`` (``nn.LSTM`` one step at a
    time, the reference) or ``auto`` (int8 on a CPU, fused on a GPU).
    """

    def __init__(
        self,
        model: PerformanceRNN,
        card: dict | None = None,
        device: str | torch.device = "cpu",
        engine: str = "auto",
    ):
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.card = card or {}
        if engine == "auto":
            engine = "int8" if self.device.type == "cpu" and quantization_available() else "fused"
        self.engine = engine
        self.fused = FusedLSTM(self.model, quantize=engine == "int8") if engine != "naive" else None

    @classmethod
    def from_dir(cls, directory: Path, device: str | torch.device = "cpu", engine: str = "auto") -> Composer:
        model, card = load_model(directory, device)
        return cls(model, card, device, engine)

    def _step(self, tokens: torch.Tensor, state):
        if self.fused is not None:
            return self.fused.step(tokens, state)
        logits, state = self.model(tokens[:, None], state)
        return logits[:, -1], state

    @torch.inference_mode()
    def generate(self, requests: Sequence[SampleRequest]) -> list[np.ndarray]:
        """Event tokens for each request (primer excluded), sampled together in one batch."""
        for r in requests:
            validate(r)
        n = len(requests)
        if n == 0:
            return []
        dev = self.device
        uniforms = _Uniforms([r.seed for r in requests])
        temperature = torch.tensor([r.temperature for r in requests], device=dev)
        top_p = torch.tensor([r.top_p for r in requests], device=dev)
        target = np.array([round(r.seconds * events.STEPS_PER_SECOND) for r in requests])
        limit = np.array([int(r.seconds * MAX_EVENTS_PER_SECOND) + 16 for r in requests])

        state, logits = self._prime(requests)
        if self.fused is not None:
            state = FusedLSTM.from_lstm_state(state)
        # Never PAD or BOS; nor EOS, since the length is asked for.
        ban = torch.zeros(events.VOCAB_SIZE, dtype=torch.bool, device=dev)
        ban[events.NUM_EVENTS :] = True
        shift_steps = np.zeros(events.VOCAB_SIZE, dtype=np.int64)
        shift_steps[events.TIME_SHIFT : events.VELOCITY] = np.arange(1, events.MAX_SHIFT_STEPS + 1)

        elapsed = np.zeros(n, dtype=np.int64)
        length = np.zeros(n, dtype=np.int64)
        done = np.zeros(n, dtype=bool)
        out = np.zeros((n, int(limit.max())), dtype=events.TOKEN_DTYPE)
        while True:
            probs = filter_probs(logits.masked_fill(ban, float("-inf")), temperature, top_p)
            tokens = draw(probs, torch.from_numpy(uniforms.next()).to(dev)).cpu().numpy()
            live = ~done
            out[live, length[live]] = tokens[live]
            length[live] += 1
            elapsed[live] += shift_steps[tokens[live]]
            done |= (elapsed >= target) | (length >= limit)
            if done.all():
                break
            logits, state = self._step(torch.from_numpy(tokens).to(dev), state)
            logits = logits.float()
        return [out[i, : length[i]].copy() for i in range(n)]

    def _prime(self, requests: Sequence[SampleRequest]):
        """Run BOS (and each primer) through the model; returns nn.LSTM state and next logits."""
        primers = [r.primer if r.primer is not None else np.zeros(0, np.int64) for r in requests]
        if all(len(p) == len(primers[0]) for p in primers):
            grid = np.stack([np.concatenate([[events.BOS], p]) for p in primers]).astype(np.int64)
            logits, state = self.model(torch.from_numpy(grid).to(self.device))
            return state, logits[:, -1].float()
        # Ragged primers: prime each stream alone so no padding enters its state.
        states, last = [], []
        for p in primers:
            seq = np.concatenate([[events.BOS], p]).astype(np.int64)[None]
            lg, st = self.model(torch.from_numpy(seq).to(self.device))
            states.append(st)
            last.append(lg[:, -1].float())
        h = torch.cat([s[0] for s in states], dim=1)
        c = torch.cat([s[1] for s in states], dim=1)
        return (h, c), torch.cat(last, dim=0)


class _Uniforms:
    """One uniform number per stream per step, from each stream's own seeded generator."""

    BLOCK = 256

    def __init__(self, seeds: Sequence[int]):
        self.rngs = [np.random.default_rng(int(s)) for s in seeds]
        self.block = np.empty((0, len(self.rngs)))  # (steps, streams): each step's row is contiguous
        self.pos = 0

    def next(self) -> np.ndarray:
        if self.pos >= len(self.block):
            self.block = np.stack([rng.random(self.BLOCK) for rng in self.rngs], axis=1)
            self.pos = 0
        self.pos += 1
        return self.block[self.pos - 1]


def primer_tokens(notes_tokens: np.ndarray, seconds: float) -> np.ndarray:
    """The last ``seconds`` of a token stream, to continue a piece from.

    Cuts at a time-shift boundary and re-states the current velocity so the primer is
    a valid stream on its own (notes still sounding at the cut simply have no onset).
    """
    keep_steps = round(seconds * events.STEPS_PER_SECOND)
    total = events.duration_steps(notes_tokens)
    start_step = max(0, total - keep_steps)
    step, velocity, cut = 0, None, 0
    for i, tok in enumerate(notes_tokens):
        if step >= start_step:
            cut = i
            break
        if events.TIME_SHIFT <= tok < events.VELOCITY:
            step += int(tok) - events.TIME_SHIFT + 1
        elif events.VELOCITY <= tok < events.NUM_EVENTS:
            velocity = int(tok)
    else:
        cut = len(notes_tokens)
    tail = notes_tokens[cut:]
    head = [velocity] if velocity is not None else []
    return np.concatenate([np.asarray(head, dtype=np.int64), tail.astype(np.int64)])
