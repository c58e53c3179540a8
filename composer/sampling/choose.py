"""How each stream's next event is chosen from the model's logits, for all streams at once.

The model's logits pass, in order, through the key a stream holds (``hold_keys``), the
encoding's grammar (``follow_grammar``), temperature and the top-p nucleus
(``filter_probs``), and one inverse-CDF draw per row (``draw``).

This is numpy in float64 on a batch of a few rows: a sampling step on a CPU used to spend
more of its time in some forty small torch calls here (a few microseconds of dispatch
each) than in the network's matrix products. Each row is computed on its own, so a
stream's event is the same alone or in any batch.
"""

from __future__ import annotations

import numpy as np

from composer.codec import events

RELEASE_SHIFT_LIMIT = 745.0  # nats: where float64's exp reaches 0


def logsumexp(x: np.ndarray) -> np.ndarray:
    """log(sum(exp(x))) over the last axis, without overflow (each row has a finite value)."""
    top = x.max(-1)
    return top + np.log(np.exp(x - top[..., None]).sum(-1))


def log_softmax(x: np.ndarray) -> np.ndarray:
    return x - logsumexp(x)[..., None]


def hold_keys(logits: np.ndarray, rows: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """``logits`` with ``bias`` (one row of note-on biases per index in ``rows``) on those rows' note-ons.

    The bias moves probability between pitches, never between playing a note and not: the
    note-ons keep their total, so a held piece is as busy as a free one.
    """
    out = logits.copy()
    notes = logits[rows, : events.NUM_PITCHES]
    shaped = notes + bias
    shaped -= (logsumexp(shaped) - logsumexp(notes))[:, None]
    out[rows, : events.NUM_PITCHES] = shaped
    return out


def follow_grammar(logits: np.ndarray, ban: np.ndarray) -> np.ndarray:
    """``logits`` with the banned events at -inf, where a release keeps its probability.

    A model that has lost track of which keys are down puts some of its note-off
    probability on keys that are not sounding. That mass is the model's wish to end a note
    now: it goes to the sounding keys' note-offs (in their proportions), not to every other
    event. Spread over everything instead, it left about a third of the notes in classical
    samples without a release (held to the 5 s cap: mean duration 1.09 s against 0.36 s in
    real performances, polyphony 16.9 against 3.1); kept, durations match (0.34 s).
    Done on logits, so a confident model at a low temperature, whose allowed events all
    round to probability 0 after a softmax over everything, still samples from them.
    """
    off = slice(events.NOTE_OFF, events.TIME_SHIFT)
    releases = logits[:, off]
    weights = np.exp(releases - releases.max(-1, keepdims=True))
    every = weights.sum(-1)  # >= 1
    sounding = np.where(ban[:, off], 0.0, weights).sum(-1)
    # With no key sounding every release is banned and stays at -inf, whatever the shift; one
    # whose sounding releases round to 0 gets the largest finite shift instead of an infinite one.
    silent = np.log(sounding, out=np.full_like(sounding, -np.inf), where=sounding > 0)
    shift = np.minimum(np.log(every) - silent, RELEASE_SHIFT_LIMIT)
    out = np.where(ban, -np.inf, logits)
    out[:, off] += shift[:, None]
    return out


def filter_probs(
    logits: np.ndarray, temperature: np.ndarray, top_p: np.ndarray, ban: np.ndarray | None = None
) -> np.ndarray:
    """Softmax at each row's temperature, without the events ``ban`` rules out (see
    ``follow_grammar``), keeping each row's top-p nucleus: the likeliest events whose
    probabilities, taken in order, first reach ``top_p``, and any as likely as the least of
    them (a row with ``top_p`` 1 keeps all)."""
    scaled = logits / temperature[:, None]
    if ban is not None:
        scaled = follow_grammar(scaled, ban)
    probs = np.exp(scaled - scaled.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    cut = top_p < 1
    if cut.any():
        every = cut.all()  # the usual case: no copies in and out
        part = probs if every else probs[cut]
        ranked = -np.sort(-part, -1)  # likeliest first
        before = np.cumsum(ranked, -1) - ranked  # what the likelier events already hold
        needed = (before < (top_p if every else top_p[cut])[:, None]).sum(-1)
        floor = ranked[np.arange(len(ranked)), needed - 1]  # the least likely event the nucleus needs
        part = np.where(part >= floor[:, None], part, 0.0)
        part /= part.sum(-1, keepdims=True)
        if every:
            return part
        probs[cut] = part
    return probs


def draw(probs: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    """Inverse-CDF sampling: one event per row from its own uniform number in [0, 1)."""
    cdf = np.cumsum(probs, -1)
    # the events whose cumulative probability is still at or below the uniform are passed
    # over (">=" rather than ">": a uniform of exactly 0 never lands on a leading event of probability 0)
    index = (cdf <= (uniforms * cdf[:, -1])[:, None]).sum(-1)
    return np.minimum(index, probs.shape[-1] - 1)
