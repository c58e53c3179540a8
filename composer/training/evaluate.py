"""Negative log-likelihood of whole pieces, in nats per event.

The LSTM reads each piece from its start to its end, carrying its state (and a pointer
head's memory) across chunks, so every event is scored with its full history. Only the 388
performance events count as targets (not the start, end or padding tokens), which makes the
figure comparable with Magenta's. Training validation and ``composer eval`` both use this one
function.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from composer.codec import controls, events
from composer.codec.midi import MidiError, find_midi_files, load_notes
from composer.nn.model import PerformanceRNN


@dataclass
class NLLResult:
    nll_per_event: float
    events: int
    files: int


def sequences_nll(
    model: PerformanceRNN,
    sequences: Sequence[np.ndarray],
    device: torch.device | str = "cpu",
    batch_size: int = 16,
    chunk: int = 1024,
    controlled: bool = False,
    progress: str = "",
) -> tuple[float, int]:
    """Summed NLL (nats) and number of scored events over ``BOS ... [EOS]`` sequences.

    A conditioned model is scored without controls, unless ``controlled``: then each event is
    predicted knowing its true key and density (composer.codec.controls). ``progress``: a
    progress bar on stderr with this description (none when empty)."""
    known = None
    if controlled and model.config.control_dim:
        known = [controls.piece_controls(s) for s in sequences]
    total, count, _ = pieces_nll(model, sequences, device, known, batch_size, chunk, progress=progress)
    return total, count


def crop_loss(log_probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The mean NLL of training crops' targets from ``PerformanceRNN.forward(..., targets=)``,
    padding left out: what ``composer train`` and the GPU run minimise."""
    trained = targets != events.PAD
    return -(log_probs.float() * trained).sum() / trained.sum().clamp_min(1)


@torch.no_grad()
def pieces_nll(
    model: PerformanceRNN,
    sequences: Sequence[np.ndarray],
    device: torch.device | str = "cpu",
    piece_controls: Sequence | None = None,
    batch_size: int = 16,
    chunk: int = 1024,
    deadline: float | None = None,
    progress: str = "",
) -> tuple[float, int, bool]:
    """``sequences_nll`` with each piece's controls given (row i the control of token i, numpy or
    torch, precomputed) and a ``time.monotonic()`` deadline; returns (summed NLL, events, whether
    every piece was scored). Sums stay on the device, so a GPU is not stopped once per chunk."""
    was_training = model.training
    model.eval()
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = torch.zeros((), dtype=torch.long, device=device)
    complete = True
    bar = tqdm(total=sum(len(s) for s in sequences), desc=progress, unit="event", unit_scale=True, disable=not progress)
    for b in range(0, len(order), batch_size):
        if deadline is not None and time.monotonic() > deadline:
            complete = False
            break
        group = order[b : b + batch_size]
        width = max(len(sequences[i]) for i in group)
        padded = np.full((len(group), width), events.PAD, dtype=np.int64)
        for row, i in enumerate(group):
            padded[row, : len(sequences[i])] = sequences[i]
        tokens = torch.from_numpy(padded).to(device)
        known = None
        if piece_controls is not None:  # row j carries the control of token j+1, as in training
            known = torch.as_tensor(controls.NO_CONTROL, device=device).repeat(len(group), width, 1)
            for row, i in enumerate(group):
                known[row, : len(sequences[i]) - 1] = torch.as_tensor(piece_controls[i], device=device)[1:].float()
        state = memory = None
        for lo in range(0, width - 1, chunk):
            inputs = tokens[:, lo : lo + chunk]
            targets = tokens[:, lo + 1 : lo + chunk + 1]
            inputs = inputs[:, : targets.shape[1]]
            step_controls = known[:, lo : lo + inputs.shape[1]] if known is not None else None
            log_probs, state, memory = model(inputs, state, controls=step_controls, targets=targets, memory=memory)
            scored = targets < events.NUM_EVENTS
            total -= (log_probs * scored).sum(dtype=torch.float64)
            count += scored.sum()
        bar.update(sum(len(sequences[i]) for i in group))
    bar.close()
    model.train(was_training)
    return float(total), int(count), complete


@torch.no_grad()
def stepwise_nll(engine, sequences: Sequence[np.ndarray], pointer=None) -> tuple[float, int]:
    """Summed NLL and scored events when a sampling engine reads the sequences one step at a time.

    ``engine`` is a ``composer.nn.fastlstm.FusedLSTM`` (or anything with ``zero_state`` and
    ``step``); comparing this with ``sequences_nll`` shows what a fast path costs in accuracy.
    ``pointer`` (a sampler's ``composer.sampling.cache.PointerWeights``) mixes a pointer head in
    the way the sampler does, each piece with its own memory.
    """
    from composer.sampling.cache import PointerMemory, with_pointer

    width = max(len(s) for s in sequences)
    grid = np.full((len(sequences), width), events.PAD, dtype=np.int64)
    for row, seq in enumerate(sequences):
        grid[row, : len(seq)] = seq
    tokens = torch.from_numpy(grid)
    state = engine.zero_state(len(sequences))
    memories = [PointerMemory(pointer) for _ in sequences] if pointer is not None else []
    total, count = 0.0, 0
    for t in range(width - 1):
        logits, state = engine.step(tokens[:, t], state)
        target = tokens[:, t + 1]
        scored = target < events.NUM_EVENTS
        log_probs = torch.log_softmax(logits.float(), -1)
        if memories:
            log_probs = with_pointer(log_probs.double(), state[0][-1], memories, pointer)
            for memory, token in zip(memories, target.tolist()):  # the end and padding are never pointed at
                memory.remember(token if token < events.NUM_EVENTS else None)
        if scored.any():
            loss = -log_probs.gather(1, target[:, None]).squeeze(1)
            total += float(loss[scored].sum())
            count += int(scored.sum())
    return total, count


def validation_nll(
    model: PerformanceRNN, cache_dir: Path, genre: str, device: torch.device | str = "cpu", progress: str = ""
) -> NLLResult:
    """NLL of a model on a genre's whole validation split, as prepared in the cache."""
    from composer.corpus.data import TokenBundle

    bundle = TokenBundle.load(cache_dir, genre, "validation")
    sequences = [bundle.sequence(i).astype(np.int64) for i in range(len(bundle))]
    total, count = sequences_nll(model, sequences, device, progress=progress)
    return NLLResult(total / count if count else float("nan"), count, len(sequences))


def with_markers(tokens: np.ndarray) -> np.ndarray:
    """A bare event stream as the model reads a whole piece: BOS ... EOS."""
    return np.concatenate([[events.BOS], tokens, [events.EOS]]).astype(np.int64)


def evaluate_files(
    model: PerformanceRNN,
    root: Path,
    device: torch.device | str = "cpu",
    on_skip=None,
    progress: str = "",
) -> NLLResult:
    """Mean NLL per event over every MIDI file under ``root`` (unreadable files skipped)."""
    paths = [root] if root.is_file() else find_midi_files(root)
    sequences = []
    for path in tqdm(paths, desc=f"{progress}: reading MIDI", unit="file", disable=not progress or len(paths) < 2):
        try:
            notes = load_notes(path)
        except MidiError as exc:
            if on_skip:
                on_skip(path, str(exc))
            continue
        if not notes:
            if on_skip:
                on_skip(path, "holds no notes")
            continue
        sequences.append(with_markers(events.encode(notes)))
    total, count = sequences_nll(model, sequences, device, progress=progress)
    return NLLResult(total / count if count else float("nan"), count, len(sequences))


def evaluate_model(
    model: PerformanceRNN,
    cache_dir: Path,
    genre: str,
    data: Path | None = None,
    device: torch.device | str = "cpu",
    on_skip=None,
    progress: str = "",
) -> NLLResult:
    """``composer eval``: NLL on the MIDI files under ``data``, or on the genre's validation split.

    Raises FileNotFoundError when ``data`` does not exist or the split is not prepared, and
    ValueError when ``data`` holds no readable MIDI file."""
    if data is None:
        return validation_nll(model, cache_dir, genre, device, progress)
    if not data.exists():
        raise FileNotFoundError(f"{data}: no such file or folder")
    result = evaluate_files(model, data, device, on_skip=on_skip, progress=progress)
    if result.files == 0:
        raise ValueError(f"{data}: no readable MIDI files")
    return result
