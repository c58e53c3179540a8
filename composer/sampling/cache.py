"""A neural cache: the model's own earlier moments, pointed back to when the present resembles them.

Performance RNN forgets what it played a phrase ago, so its pieces never restate a theme
(issue #14). A continuous cache (Grave, Joulin & Usunier, ICLR 2017, "Improving neural
language models with a continuous cache") needs no training: every step keeps the
top LSTM layer's state ``h_i`` beside the event that followed it, and the next event is
drawn from

    p(x) = (1 - weight) * p_model(x) + weight * sum_i softmax_i(sharpness * cos(h_t, h_i)) [x_{i+1} = x]

so when the piece comes back to a moment it has been at before, it tends to go on the way
it went then: a pointer (copy) head over the piece's own past, mixed with the event softmax.
Measured on real pieces it is also a better model of music, which repeats itself: see
``cached_nll`` and ``composer neural-cache``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from composer.codec import events
from composer.nn.model import PerformanceRNN
from composer.nn.pointer import WINDOW as POINTER_WINDOW

SHARPNESS = 120.0
"""The cosine similarity's inverse temperature: 60 to 500 tried on training pieces of every
genre; near 120 each genre is within 0.01 nats of its own best."""

MIN_LAG = 0
"""The newest events the cache leaves out (0: none, as ``cached_nll`` measures it); sweeps that
left out the last 30 or 100 sampled events gave longer-range copies but no better pieces."""


class PieceCache:
    """One stream's past: its top-layer states (unit length; float64 by default, so that the
    products hardly depend on the CPU's summation order) and the event each one led to."""

    def __init__(
        self,
        weight: float,
        sharpness: float = SHARPNESS,
        min_lag: int = MIN_LAG,
        capacity: int = 512,
        window: int | None = None,
        dtype: torch.dtype = torch.float64,
    ):
        self.weight = weight
        self.sharpness = sharpness
        self.min_lag = min_lag
        self.window = window  # the most recent moments pointed back to (None: all)
        self.dtype = dtype
        self._keys: torch.Tensor | None = None  # (capacity, hidden)
        self._next = np.zeros(capacity, dtype=np.int64)
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def add(self, hidden: torch.Tensor, token: int) -> None:
        """Remember that state ``hidden`` (hidden,) led to ``token``."""
        self._store(torch.nn.functional.normalize(hidden.detach().double().cpu(), dim=-1), token)

    def _store(self, key: torch.Tensor, token: int) -> None:
        if self._keys is None:
            self._keys = torch.empty(len(self._next), key.shape[-1], dtype=self.dtype)
        if self._len == len(self._next):  # grow by doubling: a piece's length is not known ahead
            self._keys = torch.cat([self._keys, torch.empty_like(self._keys)])
            self._next = np.concatenate([self._next, np.zeros_like(self._next)])
        self._keys[self._len] = key
        self._next[self._len] = token
        self._len += 1

    def distribution(self, hidden: torch.Tensor, ban: np.ndarray | None = None) -> torch.Tensor | None:
        """The cache's distribution over the performance events from state ``hidden`` (float64,
        on the CPU), without the events ``ban`` rules out; None while nothing it may point to is
        old enough, or everything it points to is banned."""
        return self._pointed(torch.nn.functional.normalize(hidden.detach().double().cpu(), dim=-1), ban)

    def _reach(self) -> tuple[int, int]:
        """The moments a step may point back to: [first, reach)."""
        reach = self._len - self.min_lag
        return (max(0, reach - self.window) if self.window else 0), reach

    def _pointed(self, query: torch.Tensor, ban: np.ndarray | None) -> torch.Tensor | None:
        first, reach = self._reach()
        if reach <= 0:
            return None
        weights = torch.softmax((self._keys[first:reach] @ query) * self.sharpness, 0)
        out = torch.zeros(events.NUM_EVENTS, dtype=torch.float64)
        out.index_add_(0, torch.from_numpy(self._next[first:reach]), weights)
        if ban is not None:  # a copied release of a key not sounding now is no wish to end a note
            out[torch.from_numpy(ban[: events.NUM_EVENTS])] = 0.0
            total = float(out.sum())
            if total <= 0.0:
                return None
            out /= total
        return out


class PointerWeights:
    """A model's pointer head (composer.nn.pointer) on the CPU, shared by its streams, in float32
    as trained: the projections, the memories' keys and the products with them (float64 keys took
    3.8x as long to read, most of a pop step). What follows the products is float64."""

    ROWS = 4
    """States are projected in blocks of this many rows (the last one padded): every product has
    the same shape whatever the batch, so a row's numbers are its own."""

    def __init__(self, head: torch.nn.Module):
        with torch.no_grad():
            weights = [head.query.weight, head.key.weight, head.gate.weight]
            self.projection = torch.cat([w.detach().float().cpu() for w in weights]).T.contiguous()
            self.gate_bias = float(head.gate.bias.detach())
            self.sharpness = float(head.log_sharpness.detach().exp())
        self.hidden = head.query.weight.shape[1]

    def project(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Each row of ``states`` (batch, hidden): its query and key (unit length, float32) and its
        gate (float64)."""
        x = states.detach().float().cpu()
        rows, pad = x.shape[0], -x.shape[0] % self.ROWS
        if pad:
            x = torch.cat([x, x[:1].expand(pad, -1)])
        blocks = [x[i : i + self.ROWS] @ self.projection for i in range(0, len(x), self.ROWS)]
        out = torch.cat(blocks)[:rows]
        h = self.hidden
        queries = torch.nn.functional.normalize(out[:, :h], dim=-1)
        keys = torch.nn.functional.normalize(out[:, h : 2 * h], dim=-1)
        return queries, keys, torch.sigmoid(out[:, 2 * h].double() + self.gate_bias)


class PointerMemory(PieceCache):
    """One stream's memory for its model's pointer head: the neural cache with the head's learned
    keys (float32), sharpness and gate. Each step ``with_pointer`` compares the step's query with
    the memory (``similarities``) and holds the step's key, which ``remember`` then files with the
    event drawn."""

    def __init__(self, pointer: PointerWeights):
        super().__init__(weight=0.0, sharpness=pointer.sharpness, window=POINTER_WINDOW, dtype=torch.float32)
        self._key: torch.Tensor | None = None

    def similarities(self, query: torch.Tensor, key: torch.Tensor) -> tuple[torch.Tensor, np.ndarray] | None:
        """Cosines of ``query`` with the moments it may point back to, and the event after each
        (None while the memory is empty); ``key`` waits for ``remember``."""
        self._key = key
        first, reach = self._reach()
        if reach <= 0:
            return None
        return self._keys[first:reach] @ query, self._next[first:reach]

    def remember(self, token: int | None) -> None:
        """File the key of the last step with ``token`` (None: nothing to file, the key is dropped)."""
        if self._key is None:
            raise RuntimeError("remember() follows similarities()")
        if token is not None:
            self._store(self._key, token)
        self._key = None

    def fill(self, keys: torch.Tensor, tokens) -> None:
        """Remember a primer: ``keys`` (from ``PointerWeights.project``) and the events that followed."""
        for key, token in zip(keys, tokens):
            self._store(key, int(token))


def pointed(similarities: Sequence[torch.Tensor], followers: Sequence[np.ndarray], sharpness: float) -> torch.Tensor:
    """Each row's pointer distribution over the performance events (rows, NUM_EVENTS), float64:
    softmax(sharpness * cosine) over its moments, summed onto the event after each. All rows at
    once (in numpy: a step's few small operations cost less there than in torch), each still summed
    in its own order (one ``bincount`` runs through the moments in order), so a row's numbers do
    not depend on the rows beside it."""
    n = len(similarities)
    lengths = np.fromiter((len(s) for s in similarities), dtype=np.int64, count=n)
    scores = np.concatenate([s.numpy() for s in similarities]).astype(np.float64) * sharpness
    starts = np.cumsum(lengths) - lengths
    row = np.repeat(np.arange(n), lengths)
    weights = np.exp(scores - np.maximum.reduceat(scores, starts)[row])
    slots = row * events.NUM_EVENTS + np.concatenate(followers)
    out = np.bincount(slots, weights, minlength=n * events.NUM_EVENTS).reshape(n, events.NUM_EVENTS)
    return torch.from_numpy(out / out.sum(1, keepdims=True))


def mix(logits: torch.Tensor, cached: torch.Tensor, weight: float | torch.Tensor) -> torch.Tensor:
    """Logits of ``(1 - weight) * softmax(logits) + weight * cached``, row by row (``logits`` one
    row or (rows, vocab); ``weight`` a number or one per row); ``cached`` covers the performance
    events, which lead each row (the special tokens after them get none of it). The sampler's
    temperature, nucleus and grammar then apply to them."""
    probs = torch.softmax(logits.double(), -1)
    if isinstance(weight, torch.Tensor) and weight.dim():
        weight = weight.double()[:, None]
    mixed = (1.0 - weight) * probs
    mixed[..., : cached.shape[-1]] += weight * cached.to(probs.device)
    return torch.log(mixed).to(logits.dtype)


def with_pointer(
    logits: torch.Tensor, top: torch.Tensor, memories: Sequence[PointerMemory], pointer: PointerWeights
) -> torch.Tensor:
    """Each row of ``logits`` mixed with its memory's pointer, from the top states ``top`` behind
    them; a row whose memory holds nothing yet keeps its own. Each memory then waits for
    ``remember`` (the event taken)."""
    queries, keys, gates = pointer.project(top)
    rows, similarities, followers = [], [], []
    for row, memory in enumerate(memories):
        found = memory.similarities(queries[row], keys[row])
        if found is not None:
            rows.append(row)
            similarities.append(found[0])
            followers.append(found[1])
    if not rows:
        return logits
    logits = logits.clone()
    index = torch.tensor(rows)
    logits[index] = mix(logits[index], pointed(similarities, followers, pointer.sharpness), gates[index])
    return logits


def cached_nll(
    hidden: torch.Tensor,
    log_probs: torch.Tensor,
    targets: torch.Tensor,
    weights: tuple[float, ...],
    sharpness: float = SHARPNESS,
    chunk: int = 1024,
) -> list[float]:
    """Summed NLL of one piece's ``targets`` (time,) under the model mixed with its cache, per weight.

    ``hidden`` (time, hidden): the top layer's state that predicts each target; ``log_probs``
    (time, vocab): the model's own log-probabilities from those states. The state at step t
    points back to every earlier step i < t, whose next event targets[i] the piece has already
    played (nothing from the future leaks in).
    """
    keys = torch.nn.functional.normalize(hidden.float(), dim=-1)
    p_model = log_probs.double().gather(1, targets[:, None]).squeeze(1).exp()
    totals = [0.0] * len(weights)
    for lo in range(0, len(targets), chunk):
        hi = min(lo + chunk, len(targets))
        scores = (keys[lo:hi] @ keys[:hi].T).double() * sharpness
        steps = torch.arange(lo, hi)[:, None]
        scores = scores.masked_fill(torch.arange(hi)[None, :] >= steps, float("-inf"))
        same = targets[None, :hi] == targets[lo:hi, None]
        p_cache = (torch.softmax(scores, -1).nan_to_num(0.0) * same).sum(1)  # step 0's row has no past: 0
        has_past = steps.squeeze(1) > 0
        for k, weight in enumerate(weights):
            p = torch.where(has_past, (1 - weight) * p_model[lo:hi] + weight * p_cache, p_model[lo:hi])
            totals[k] -= float(torch.log(p).sum())
    return totals


@torch.inference_mode()
def pieces_cached_nll(
    model: PerformanceRNN,
    pieces: Sequence[np.ndarray],
    weights: Sequence[float],
    sharpness: float = SHARPNESS,
    max_events: int = 4096,
) -> tuple[list[float], int]:
    """Mean NLL per event over whole pieces (each a BOS ... EOS token array, cut at
    ``max_events``), of the model alone (first) and mixed with its cache at each weight."""
    totals = np.zeros(1 + len(weights))
    count = 0
    for piece in pieces:
        tokens = torch.as_tensor(np.asarray(piece[:max_events], dtype=np.int64))[None]
        hidden, _ = model.top_states(tokens[:, :-1])
        log_probs = torch.log_softmax(model.head(hidden[0]).double(), -1)
        totals += cached_nll(hidden[0], log_probs, tokens[0, 1:], (0.0, *weights), sharpness)
        count += tokens.shape[1] - 1
    return list(totals / max(count, 1)), count
