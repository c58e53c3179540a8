"""How each stream's next event is chosen from the model's logits, for all streams at once.

The model's logits pass, in order, through the key a stream holds (``hold_keys``), the
encoding's grammar (``follow_grammar``), temperature and the top-p nucleus
(``filter_probs``), and one inverse-CDF draw per row (``draw``).

Written once against the array API (array_api_compat), so the same code runs on numpy
arrays and on torch tensors. On a CPU the sampler hands it numpy float64 arrays: a step there
spent more time in some forty small torch calls (a few microseconds of dispatch each) than
numpy needs for all of it. On a GPU it gets the logits where they are, as torch tensors, so a
large batch never leaves the device. Each row is computed on its own, so on a CPU a stream's
event is the same alone or in any batch (on a GPU the reductions may be split by batch shape, as
the network's products may: there a replayed seed is expected, not guaranteed, to repeat).
"""

from __future__ import annotations

from typing import Any

import array_api_compat.numpy
import array_api_compat.torch
import numpy as np

from composer.codec import events

Array = Any  # a numpy array or a torch tensor; each function keeps to its input's kind
RELEASE_SHIFT_LIMIT = 745.0  # nats: where float64's exp reaches 0


def array_namespace(x: Array) -> Any:
    """The array API of ``x``'s kind (array_api_compat's own lookup costs more than a small step's arithmetic)."""
    return array_api_compat.numpy if isinstance(x, np.ndarray) else array_api_compat.torch


def logsumexp(x: Array) -> Array:
    """log(sum(exp(x))) over the last axis, without overflow (each row has a finite value)."""
    xp = array_namespace(x)
    top = xp.max(x, axis=-1)
    return top + xp.log(xp.sum(xp.exp(x - top[..., None]), axis=-1))


def log_softmax(x: Array) -> Array:
    return x - logsumexp(x)[..., None]


def hold_keys(logits: Array, bias: Array, rows: Array | None = None) -> Array:
    """``logits`` with ``bias`` on the note-ons of ``rows`` (one bias row each; None: every row).

    The bias moves probability between pitches, never between playing a note and not: the
    note-ons keep their total, so a held piece is as busy as a free one.
    """
    xp = array_namespace(logits)
    notes = logits[:, : events.NUM_PITCHES] if rows is None else logits[rows, : events.NUM_PITCHES]
    shaped = notes + xp.astype(bias, logits.dtype)
    shaped -= (logsumexp(shaped) - logsumexp(notes))[:, None]
    if rows is None:
        return xp.concat([shaped, logits[:, events.NUM_PITCHES :]], axis=1)
    out = xp.asarray(logits, copy=True)
    out[rows, : events.NUM_PITCHES] = shaped
    return out


def follow_grammar(logits: Array, ban: Array) -> Array:
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
    xp = array_namespace(logits)
    off = slice(events.NOTE_OFF, events.TIME_SHIFT)
    releases = xp.astype(logits[:, off], xp.float64)  # float64: weights down to RELEASE_SHIFT_LIMIT nats below the top
    weights = xp.exp(releases - xp.max(releases, axis=-1, keepdims=True))
    every = xp.sum(weights, axis=-1)  # >= 1
    sounding = xp.sum(xp.where(ban[:, off], 0.0, weights), axis=-1)
    # With no key sounding every release is banned and stays at -inf, whatever the shift; one
    # whose sounding releases round to 0 gets the largest finite shift instead of an infinite one.
    heard = sounding > 0
    silent = xp.where(heard, xp.log(xp.where(heard, sounding, 1.0)), -float("inf"))
    shift = xp.minimum(xp.log(every) - silent, RELEASE_SHIFT_LIMIT)
    out = xp.where(ban, -float("inf"), logits)
    out[:, off] += xp.astype(shift, out.dtype)[:, None]
    return out


def filter_probs(
    logits: Array, temperature: Array, top_p: Array, nucleus: str = "some", ban: Array | None = None
) -> Array:
    """Softmax at each row's temperature, without the events ``ban`` rules out (see
    ``follow_grammar``), keeping each row's top-p nucleus: the likeliest events whose
    probabilities, taken in order, first reach ``top_p``, and any as likely as the least of
    them (a row with ``top_p`` 1 keeps all). ``nucleus``: which rows have ``top_p`` < 1
    ("none", "some" or "all"), known to the caller without asking a tensor on a GPU."""
    xp = array_namespace(logits)
    scaled = logits / temperature[:, None]
    if ban is not None:
        scaled = follow_grammar(scaled, ban)
    probs = xp.exp(scaled - xp.max(scaled, axis=-1, keepdims=True))
    probs /= xp.sum(probs, axis=-1, keepdims=True)
    if nucleus == "none":
        return probs
    ranked = xp.sort(probs, axis=-1, stable=False)  # least likely first
    cumulative = xp.cumulative_sum(ranked, axis=-1)
    likelier = cumulative[:, -1:] - cumulative  # what the likelier events hold
    floor = xp.min(xp.where(likelier < top_p[:, None], ranked, float("inf")), axis=-1)  # the least one needed
    kept = xp.where(probs >= floor[:, None], probs, 0.0)
    kept /= xp.sum(kept, axis=-1, keepdims=True)
    return kept if nucleus == "all" else xp.where((top_p < 1)[:, None], kept, probs)


def draw(probs: Array, uniforms: Array) -> Array:
    """Inverse-CDF sampling: one event per row from its own uniform number in [0, 1)."""
    xp = array_namespace(probs)
    cdf = xp.cumulative_sum(xp.astype(probs, xp.float64), axis=-1)
    target = xp.astype(uniforms, xp.float64) * cdf[:, -1]
    # the events whose cumulative probability is still at or below the uniform are passed over
    # (so a uniform of exactly 0 never lands on a leading event of probability 0)
    index = xp.sum(xp.astype(cdf <= target[:, None], xp.int64), axis=-1)
    return xp.minimum(index, probs.shape[-1] - 1)
