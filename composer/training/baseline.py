"""An n-gram baseline over event tokens: what a model must beat to have learned anything.

Interpolated Witten-Bell smoothing, which needs only counts and stays a proper
distribution: P(w | h) = (c(h w) + T(h) P(w | h')) / (c(h) + T(h)), where T(h) is the
number of distinct tokens seen after h and h' drops h's oldest token; the recursion ends
in the uniform distribution over the 388 events. Counts are kept as sorted int64 keys
(9 bits per token), so a 5-gram model of millions of events fits in numpy arrays.

*The* baseline, wherever one is shown (``composer baseline``, the report, its verdict on a
candidate), is ``genre_baseline``: fitted on the genre's training split, scored on its whole
validation split at each order of ``BASELINE_ORDERS``, the best order kept and named.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from composer.codec import events

log = logging.getLogger(__name__)

BITS = 9  # VOCAB_SIZE = 391 < 512
BASELINE_ORDERS = (2, 3, 4, 5, 6, 7)
"""The orders tried; the best on validation is the baseline (folk 7, pop and classical 3, chorale 4)."""


def _keys(tokens: np.ndarray, n: int) -> np.ndarray:
    """The int64 key of every n-gram in ``tokens`` (oldest token in the highest bits)."""
    key = np.zeros(len(tokens) - n + 1, dtype=np.int64)
    for i in range(n):
        key = (key << BITS) | tokens[i : len(tokens) - n + 1 + i].astype(np.int64)
    return key


@dataclass
class _Counts:
    keys: np.ndarray
    counts: np.ndarray

    def lookup(self, queries: np.ndarray) -> np.ndarray:
        """Counts for each query key (rows of them for 2-D counts); zero where unseen."""
        if len(self.keys) == 0:
            return np.zeros((len(queries), *self.counts.shape[1:]), dtype=np.int64)
        pos = np.searchsorted(self.keys, queries)
        pos = np.minimum(pos, len(self.keys) - 1)
        hit = self.keys[pos] == queries
        return np.where(hit.reshape(-1, *([1] * (self.counts.ndim - 1))), self.counts[pos], 0)


def _count(keys: np.ndarray) -> _Counts:
    unique, counts = np.unique(keys, return_counts=True)
    return _Counts(unique, counts.astype(np.int64))


class NGramModel:
    def __init__(self, order: int = 5):
        if order < 1:
            raise ValueError("order must be at least 1")
        self.order = order
        self.grams: list[_Counts] = []  # n-gram counts, n = 1..order
        self.contexts: list[_Counts] = []  # count and distinct followers of each (n-1)-gram context

    def fit(self, sequences: Sequence[np.ndarray]) -> NGramModel:
        """Count n-grams inside each sequence (never across two pieces)."""
        for n in range(1, self.order + 1):
            parts = [_keys(s, n) for s in sequences if len(s) >= n]
            keys = np.concatenate(parts) if parts else np.zeros(0, np.int64)
            grams = _count(keys)
            self.grams.append(grams)
            context_keys = grams.keys >> BITS
            ctx_unique, first = np.unique(context_keys, return_index=True)
            totals = np.add.reduceat(grams.counts, first) if len(first) else np.zeros(0, np.int64)
            followers = np.diff(np.append(first, len(context_keys)))
            self.contexts.append(_Counts(ctx_unique, np.stack([totals, followers], axis=1).astype(np.int64)))
        return self

    def token_probabilities(self, sequence: np.ndarray) -> np.ndarray:
        """P(token_t | up to order-1 previous tokens) for t = 1..len-1."""
        seq = sequence.astype(np.int64)
        targets = seq[1:]
        prob = np.full(len(targets), 1.0 / events.NUM_EVENTS)
        for n in range(1, self.order + 1):
            history = n - 1
            # Positions t with at least `history` tokens before them (the first token is never a target).
            t = np.arange(1, len(seq))
            usable = t >= history
            ctx = np.zeros(len(targets), dtype=np.int64)
            for back in range(history, 0, -1):
                tok = np.where(usable, seq[np.maximum(t - back, 0)], 0)
                ctx = (ctx << BITS) | tok
            gram = (ctx << BITS) | targets
            c_gram = self.grams[n - 1].lookup(gram)
            ctx_stats = self.contexts[n - 1].lookup(ctx)
            c_ctx, followers = ctx_stats[:, 0], ctx_stats[:, 1]
            seen = usable & (c_ctx > 0)
            mixed = (c_gram + followers * prob) / np.maximum(c_ctx + followers, 1)
            prob = np.where(seen, mixed, prob)
        return prob

    def nll(self, sequences: Sequence[np.ndarray]) -> tuple[float, int]:
        """Summed NLL (nats) and scored events, targets restricted to the 388 events as for the LSTM."""
        total, count = 0.0, 0
        for seq in sequences:
            probs = self.token_probabilities(seq)
            scored = seq[1:] < events.NUM_EVENTS
            total += float(-np.log(probs[scored]).sum())
            count += int(scored.sum())
        return total, count


def genre_baseline(
    cache_dir: Path, genre: str, orders: Sequence[int] = BASELINE_ORDERS, subset: Sequence[np.ndarray] = ()
) -> dict:
    """The genre's n-gram baseline: NLL (nats/event) on the whole validation split (``whole``) and
    on ``subset`` (the report's excerpts) at every order, and the best order on the whole split:
    ``{"orders": {"5": {"whole", "subset"}}, "best_order", "best_whole", "best_subset", "events",
    "subset_events"}``. One fit of the highest order serves all: its lower tables are the smaller models."""
    from composer.corpus.data import TokenBundle

    orders = sorted(set(orders))
    if not orders or orders[0] < 1:
        raise ValueError("n-gram orders must be at least 1")
    log.info("%s: fitting the n-gram baseline (orders %s)", genre, ", ".join(map(str, orders)))
    train = TokenBundle.load(cache_dir, genre, "train")
    val = TokenBundle.load(cache_dir, genre, "validation")
    full = NGramModel(orders[-1]).fit([train.sequence(i) for i in range(len(train))])
    del train
    whole = [val.sequence(i).astype(np.int64) for i in range(len(val))]
    result: dict = {"orders": {}, "events": 0, "subset_events": 0}
    for order in orders:
        model = copy.copy(full)
        model.order, model.grams, model.contexts = order, full.grams[:order], full.contexts[:order]
        total, count = model.nll(whole)
        sub_total, sub_count = model.nll(list(subset))
        result["orders"][str(order)] = {"whole": total / max(count, 1), "subset": sub_total / max(sub_count, 1)}
        result["events"], result["subset_events"] = count, sub_count
    best = min(result["orders"], key=lambda o: result["orders"][o]["whole"])
    result.update(
        best_order=int(best), best_whole=result["orders"][best]["whole"], best_subset=result["orders"][best]["subset"]
    )
    return result
