"""Service throughput with continuous batching on and off, under k concurrent clients.

The server runs in a subprocess (``composer serve``) so the load generator here does not
share its interpreter; each (clients, batching) run sends N requests for pieces of the
same length, k at a time, and measures requests per second and latency percentiles.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch

from composer.config import settings
from composer.models.registry import current_version, set_current
from composer.nn.model import ModelConfig, PerformanceRNN, save_model


def pick_model(genre: str, scratch: Path) -> tuple[Path, str]:
    """The shipped model of ``genre`` when there is one, else a random 3x512 model made in ``scratch``."""
    models_dir = settings().models_dir
    version = current_version(genre, models_dir)
    if version:
        return models_dir, f"{genre}/{version} (shipped)"
    torch.manual_seed(0)
    save_model(PerformanceRNN(ModelConfig()), scratch / genre / "random", {"genre": genre, "version": "random"})
    set_current(genre, "random", scratch)
    return scratch, "random 3x512 (untrained: no shipped model found)"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def server(models_dir: Path, max_batch: int, threads: int, device: str, log: Path) -> Iterator[str]:
    """``composer serve`` in a subprocess; yields its URL once every model is loaded."""
    port = _free_port()
    command = [sys.executable, "-m", "composer.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--models-dir", str(models_dir), "--max-batch", str(max_batch), "--queue-limit", "100000"]
    command += ["--timeout", "3600", "--threads", str(threads), "--log-level", "warning"]
    if device:
        command += ["--device", device]
    with log.open("w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited ({proc.returncode}): {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not get ready: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def load(url: str, genre: str, clients: int, requests: int, seconds: float, seed: int) -> dict[str, Any]:
    """``requests`` compositions, ``clients`` in flight at a time; wall time, latencies, events."""
    latencies: list[float] = []
    events = errors = 0
    todo = iter(range(requests))
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=3600, limits=limits) as http:

        async def client() -> None:
            nonlocal events, errors
            for i in todo:
                started = time.perf_counter()
                body = {"genre": genre, "seconds": seconds, "seed": seed + i}
                response = await http.post("/v1/compositions", json=body)
                latencies.append(time.perf_counter() - started)
                if response.status_code == 200:
                    events += response.json()["events"]
                else:
                    errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        wall = time.perf_counter() - started
    return {
        "requests": requests,
        "errors": errors,
        "wall_s": wall,
        "requests_per_s": requests / wall,
        "p50_s": float(np.percentile(latencies, 50)),
        "p95_s": float(np.percentile(latencies, 95)),
        "events_per_s": events / wall,
    }


def run_service_bench(
    clients: list[int],
    seconds: float = 30.0,
    requests: int = 0,
    genre: str = "folk",
    max_batch: int = 64,
    threads: int = 1,
    device: str = "",
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Every (clients, batching) run; returns the rows and the speedups that batching brings."""
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="composer-bench-") as tmp:
        scratch = Path(tmp)
        models_dir, model = pick_model(genre, scratch / "models")
        echo(f"model: {model}; {seconds:g} s pieces; server threads: {threads}; device: {device or 'auto'}")
        # Both servers up at once, and each k measured on then off back to back, so that the
        # two see the same machine (a training job next door comes and goes).
        with (
            server(models_dir, max_batch, threads, device, scratch / "server-on.log") as on,
            server(models_dir, 1, threads, device, scratch / "server-off.log") as off,
        ):
            for k in clients:
                n = requests or max(2 * k, 8)
                for batching, url in (("on", on), ("off", off)):
                    warm = min(k, 8)  # first requests pay for lazy allocations and batch shapes
                    asyncio.run(load(url, genre, warm, warm, seconds, seed=10**6))
                    row = {"clients": k, "batching": batching, **asyncio.run(load(url, genre, k, n, seconds, k * n))}
                    rows.append(row)
                    echo(
                        f"  clients {k:>3} batching {batching:<3} {row['requests_per_s']:7.2f} req/s "
                        f"p50 {row['p50_s']:6.2f} s p95 {row['p95_s']:6.2f} s ({n} requests)"
                    )
    by = {(r["clients"], r["batching"]): r for r in rows}
    speedup = {
        str(k): by[k, "on"]["requests_per_s"] / by[k, "off"]["requests_per_s"]
        for k in clients
        if (k, "on") in by and (k, "off") in by
    }
    return {"model": model, "seconds": seconds, "threads": threads, "rows": rows, "speedup": speedup}


def table(result: dict[str, Any]) -> str:
    head = ("clients", "batching", "requests", "req/s", "p50 s", "p95 s", "events/s", "errors")
    widths = (7, 8, 8, 8, 7, 7, 9, 6)
    lines = [" ".join(f"{h:>{w}}" for h, w in zip(head, widths))]
    for r in sorted(result["rows"], key=lambda r: (r["clients"], r["batching"] != "on")):
        lines.append(
            f"{r['clients']:>7} {r['batching']:>8} {r['requests']:>8} {r['requests_per_s']:>8.2f} "
            f"{r['p50_s']:>7.2f} {r['p95_s']:>7.2f} {r['events_per_s']:>9.0f} {r['errors']:>6}"
        )
    for k, x in result["speedup"].items():
        lines.append(f"batching speeds {k} client(s) up {x:.2f}x")
    return "\n".join(lines)
