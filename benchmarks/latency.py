"""Latency benchmark: single mentions at uneven moments, answered by `bot run` on its default settings.

One listener mentions the bot, waits for the reply, then waits a random while (seeded,
exponential) before the next, so each mention meets the worker at a different point of
its polling cycle. Reports p50/p95 mention -> reply (the archive's own timestamps) and
the median of each stage (requests.stage_seconds). ``stream=False`` runs the same against a
server with streaming switched off: the polling baseline.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select

from benchmarks.bot import percentile
from bot.db import MentionRequest, make_engine, session_factory
from bot.local_mastodon import MockMastodon
from bot.migrate import upgrade
from bot.worker.health import STAGES

LISTENERS = [(f"listener{i}", f"Listener {i}", "", False) for i in range(6)]
GENRE_WORDS = ("folk", "a jig", "classical", "pop")


def run(
    mentions: int = 12,
    seconds: float = 30.0,
    mean_gap: float = 8.0,
    stream: bool = True,
    seed: int = 0,
    models_dir: Path | None = None,
) -> dict[str, Any]:
    pick = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="bot-latency-") as tmp:
        work = Path(tmp)
        server = MockMastodon(work / "mock", [("band", "Band", "", False), *LISTENERS], streaming=stream).start()
        try:
            url = f"sqlite:///{work / 'bot.sqlite3'}"
            upgrade(url)
            env = {k: v for k, v in os.environ.items() if not k.startswith(("BOT_", "MASTODON_", "DATABASE_"))}
            env |= {
                "MASTODON_API_BASE_URL": server.base_url,
                "MASTODON_ACCESS_TOKEN": "band_token",
                "DATABASE_URL": url,
                "BOT_DATA_DIR": str(work),
                "BOT_LOG_LEVEL": "WARNING",
            }
            if models_dir:
                env["COMPOSER_MODELS_DIR"] = str(models_dir)
            bot = subprocess.Popen(
                [sys.executable, "-m", "bot.cli", "run"],
                env=env,
                stderr=open(work / "bot.log", "wb"),  # noqa: SIM115
            )
            try:
                time.sleep(5)  # started, the first poll done and the stream (if any) open
                for i in range(mentions):
                    user = LISTENERS[i % len(LISTENERS)][0]
                    words = GENRE_WORDS[i % len(GENRE_WORDS)]
                    status = server.client(user).status_post(f"@band {words}, {seconds:g} seconds", visibility="public")
                    deadline = time.monotonic() + 120
                    while not server.replies_to(str(status["id"])):
                        if time.monotonic() > deadline or bot.poll() is not None:
                            raise RuntimeError(f"no reply: {(work / 'bot.log').read_text()[-2000:]}")
                        time.sleep(0.05)
                    time.sleep(pick.expovariate(1 / mean_gap))
            finally:
                bot.terminate()
                bot.wait(60)
            engine = make_engine(url)
            with session_factory(engine)() as session:
                rows = list(session.scalars(select(MentionRequest)))
            engine.dispose()
        finally:
            server.stop()
    latencies = [(r.replied_at - r.mentioned_at).total_seconds() for r in rows if r.replied_at]
    stages = {s: [float((r.stage_seconds or {}).get(s, 0.0)) for r in rows] for s in STAGES}
    result = {
        "mode": "stream" if stream else "polling",
        "mentions": mentions,
        "piece_seconds": seconds,
        "replied": len(latencies),
        "p50_s": round(statistics.median(latencies), 2),
        "p95_s": round(percentile(latencies, 95), 2),
        "max_s": round(max(latencies), 2),
        "stage_p50_s": {s: round(statistics.median(v), 3) for s, v in stages.items()},
        "stage_p95_s": {s: round(percentile(v, 95), 3) for s, v in stages.items()},
    }
    print(json.dumps(result), flush=True)
    return result
