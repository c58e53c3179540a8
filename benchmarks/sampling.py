"""Sampling speed: events per second for one stream, for 64, and against plain nn.LSTM.

All figures come from one process and one loaded model, so ratios between them are fair.
Fixed-length runs (the length guard disabled by asking for a long piece and stopping
after N steps) keep every engine doing the same amount of work.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch

from composer.nn.model import load_model
from composer.sampling.sample import BatchSampler, Sampler, SampleRequest


def events_per_second(sampler: Sampler, batch: int, steps: int, seed: int = 0) -> float:
    """Aggregate events/s of ``batch`` streams over ``steps`` sampling steps (priming excluded)."""
    streams = BatchSampler(sampler)
    for i in range(batch):
        streams.add(SampleRequest(seconds=600, seed=seed + i))
    return batch / seconds_per_call(streams.step, steps, sampler.device, warmup=3)


def seconds_per_call(fn: Callable[[], object], calls: int, device: torch.device, warmup: int) -> float:
    """Mean wall time of ``fn`` over ``calls`` calls, after ``warmup`` calls (allocator, caches,
    lazy kernels); on CUDA the queued work is waited for on both ends."""
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(calls):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - started) / calls


def products_us_per_step(sampler: Sampler, steps: int = 400) -> float | None:
    """Microseconds one stream's step spends in its weight products alone (the four
    matrix-vector products on one row, in the step's order): what a step would cost if
    everything around them were free. None for engines without them. (The CPU ``fused``
    engine steps streams in blocks of 16 rows on a CPU; its figure here is for one.)"""
    fused = sampler.fused
    if fused is None:
        return None
    linears = [*fused.cells, fused.head]
    widths = [fused.hidden] + [2 * fused.hidden] * (len(fused.cells) - 1) + [fused.hidden]
    inputs = [torch.rand(1, w, device=sampler.device) * 2 - 1 for w in widths]

    def one_step() -> None:
        for linear, x in zip(linears, inputs):
            linear(x)

    with torch.inference_mode():
        return seconds_per_call(one_step, steps, sampler.device, warmup=10) * 1e6


def weight_bytes(sampler: Sampler) -> int | None:
    """Bytes of matrix weights one step reads (the first layer's input table is a row lookup)."""
    fused = sampler.fused
    if fused is None:
        return None
    per_value = {"fp32": 4, "fp16": 2, "half": 2, "int8": 1, "int8w": 1}[fused.weights]
    h = fused.hidden
    rows, vocab = 4 * h, sampler.model.head.out_features
    return per_value * (rows * h + (fused.layers - 1) * rows * 2 * h + vocab * h)


def piece_seconds(directory: Path, device: torch.device, seconds: float = 30.0, seed: int = 1) -> tuple[float, int]:
    """Wall time to load the model and compose one piece of ``seconds``; and its event count."""
    started = time.perf_counter()
    sampler = Sampler.from_dir(directory, device)
    tokens = sampler.generate([SampleRequest(seconds, seed=seed)])[0]
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started, len(tokens)


def run_bench(directory: Path, device: torch.device, steps: int = 400, batch_sizes: tuple[int, ...] = ()) -> dict:
    model, card = load_model(directory, device)
    result: dict = {
        "device": str(device),
        "model": f"{card.get('genre', '?')}/{card.get('version', directory.name)}",
    }
    fast = Sampler(model, card, device)
    naive = Sampler(model, card, device, engine="naive")
    result["engine"] = fast.engine
    result["threads"] = torch.get_num_threads()
    result["single_events_per_s"] = events_per_second(fast, 1, steps)
    result["naive_single_events_per_s"] = events_per_second(naive, 1, max(50, steps // 4))
    result["speedup_vs_naive"] = result["single_events_per_s"] / result["naive_single_events_per_s"]
    # Where a single stream's time goes: the weight products alone bound what any overhead cut can reach.
    products = products_us_per_step(fast, steps)
    if products is not None:
        result["weight_mb_per_event"] = weight_bytes(fast) / 1e6
        result["products_us_per_event"] = products
        result["step_us_per_event"] = 1e6 / result["single_events_per_s"]
        result["speedup_vs_naive_if_only_products"] = 1e6 / products / result["naive_single_events_per_s"]
    result["batch64_events_per_s"] = events_per_second(fast, 64, max(50, steps // 4))
    if device.type == "cpu":
        for engine in ("fp16", "int8w", "fused"):
            if engine != fast.engine:
                other = Sampler(model, card, device, engine=engine)
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
