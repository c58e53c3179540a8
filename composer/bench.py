"""Sampling speed: events per second for one stream, for 64, and against plain nn.LSTM.

All figures come from one process and one loaded model, so ratios between them are fair.
Fixed-length runs (the length guard disabled by asking for a long piece and stopping
after N steps) keep every engine doing the same amount of work.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from composer.model import load_model
from composer.sample import BatchSampler, Composer, SampleRequest


def events_per_second(composer: Composer, batch: int, steps: int, seed: int = 0) -> float:
    """Aggregate events/s of ``batch`` streams over ``steps`` sampling steps (priming excluded)."""
    sampler = BatchSampler(composer)
    for i in range(batch):
        sampler.add(SampleRequest(seconds=600, seed=seed + i))
    for _ in range(3):  # warm-up: allocator, caches, lazy kernels
        sampler.step()
    if composer.device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        sampler.step()
    if composer.device.type == "cuda":
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - started)


def piece_seconds(directory: Path, device: torch.device, seconds: float = 30.0, seed: int = 1) -> tuple[float, int]:
    """Wall time to load the model and compose one piece of ``seconds``; and its event count."""
    started = time.perf_counter()
    composer = Composer.from_dir(directory, device)
    tokens = composer.generate([SampleRequest(seconds, seed=seed)])[0]
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started, len(tokens)


def run_bench(directory: Path, device: torch.device, steps: int = 400, batch_sizes: tuple[int, ...] = ()) -> dict:
    model, card = load_model(directory, device)
    result: dict = {
        "device": str(device),
        "model": f"{card.get('genre', '?')}/{card.get('version', directory.name)}",
    }
    fast = Composer(model, card, device)
    naive = Composer(model, card, device, engine="naive")
    result["engine"] = fast.engine
    result["threads"] = torch.get_num_threads()
    result["single_events_per_s"] = events_per_second(fast, 1, steps)
    result["naive_single_events_per_s"] = events_per_second(naive, 1, max(50, steps // 4))
    result["speedup_vs_naive"] = result["single_events_per_s"] / result["naive_single_events_per_s"]
    result["batch64_events_per_s"] = events_per_second(fast, 64, max(50, steps // 4))
    if device.type == "cpu":
        for engine in ("fp16", "int8w", "fused"):
            if engine != fast.engine:
                other = Composer(model, card, device, engine=engine)
                result[f"{engine}_single_events_per_s"] = events_per_second(other, 1, steps)
    if device.type == "cuda":
        best = (0, 0.0)
        for size in batch_sizes or (256, 1024, 4096, 16384):
            rate = events_per_second(fast, size, 100)
            result[f"batch{size}_events_per_s"] = rate
            best = max(best, (size, rate), key=lambda x: x[1])
        result["batch_size"], result["batch_events_per_s"] = best
    result["piece30_s"], result["piece30_events"] = piece_seconds(directory, device)
    return result
