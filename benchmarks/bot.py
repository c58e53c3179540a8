"""Load benchmark: a burst of mentions against a local mastodon_mock, answered by one worker, then two.

Reports, per run, the time from each mention to its reply (p50, p95, from the archive's
own timestamps) and replies per minute, and checks that every mention got exactly one
reply. Two workers need PostgreSQL (they claim jobs with FOR UPDATE SKIP LOCKED).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, select

from bot.db import MentionRequest, make_engine, session_factory
from bot.local_mastodon import mock_mastodon
from bot.migrate import upgrade

GENRE_WORDS = ("folk", "a jig", "classical", "something classic", "pop", "k-pop")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def _schema(url: str) -> tuple[str, str]:
    schema = f"bot_bench_{uuid.uuid4().hex[:8]}"
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql(f"CREATE SCHEMA {schema}")
    engine.dispose()
    return schema, f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"


def _drop(url: str, schema: str) -> None:
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
    engine.dispose()


def run(
    mentions: int = 200,
    accounts: int = 50,
    workers: tuple[int, ...] = (1, 2),
    seconds: float = 5.0,
    postgres_url: str | None = None,
    models_dir: Path | None = None,
) -> list[dict[str, Any]]:
    names = [f"user{i:02d}" for i in range(accounts)]
    seeded = [("band", "Band", "", False)] + [(n, n.title(), "", False) for n in names]
    results = []
    with tempfile.TemporaryDirectory(prefix="bot-bench-") as tmp, mock_mastodon(Path(tmp) / "mock", seeded) as server:
        for count in workers:
            server.reset()
            workdir = Path(tmp) / f"run{count}"
            workdir.mkdir()
            schema = None
            if postgres_url:
                schema, url = _schema(postgres_url)
            elif count > 1:
                raise SystemExit("several workers need PostgreSQL: pass --postgres URL")
            else:
                url = f"sqlite:///{workdir / 'bot.sqlite3'}"
            try:
                upgrade(url)
                clients = {n: server.client(n) for n in names}
                for i in range(mentions):
                    clients[names[i % accounts]].status_post(
                        f"@band {GENRE_WORDS[i % len(GENRE_WORDS)]}, {seconds:g} seconds", visibility="public"
                    )
                env = {k: v for k, v in os.environ.items() if not k.startswith(("BOT_", "MASTODON_", "DATABASE_"))}
                env |= {
                    "MASTODON_API_BASE_URL": server.base_url,
                    "MASTODON_ACCESS_TOKEN": "band_token",
                    "DATABASE_URL": url,
                    "MEDIA_DIR": str(workdir / "media"),
                    "BOT_DATA_DIR": str(workdir),
                    "BOT_PER_ACCOUNT_PER_HOUR": "1000",
                    "BOT_GLOBAL_PER_HOUR": "100000",
                    "BOT_MIN_SECONDS": "1",
                    "BOT_LOG_LEVEL": "WARNING",
                    "OMP_NUM_THREADS": "1",
                }
                if models_dir:
                    env["COMPOSER_MODELS_DIR"] = str(models_dir)
                started = time.monotonic()
                procs = [
                    subprocess.Popen(
                        [sys.executable, "-m", "bot.cli", "once"],
                        env=env | {"BOT_WORKER_ID": f"bench-{i}"},
                        stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE,
                        text=True,
                    )
                    for i in range(count)
                ]
                outputs = [p.communicate() for p in procs]
                wall = time.monotonic() - started
                failed = [o[1][-2000:] for p, o in zip(procs, outputs) if p.returncode != 0]
                if failed:
                    raise RuntimeError(f"a worker failed: {failed[0]}")
                engine = make_engine(url)
                with session_factory(engine)() as session:
                    rows = session.scalars(select(MentionRequest)).all()
                engine.dispose()
                latencies = [(r.replied_at - r.mentioned_at).total_seconds() for r in rows if r.replied_at]
                span = max(r.replied_at for r in rows if r.replied_at) - min(r.mentioned_at for r in rows)
                replies = sum(len(server.replies_to(r.mention_id)) for r in rows)
                results.append(
                    {
                        "workers": count,
                        "mentions": mentions,
                        "accounts": accounts,
                        "piece_seconds": seconds,
                        "stored": len(rows),
                        "replied": len(latencies),
                        "replies_on_server": replies,
                        "p50_s": round(statistics.median(latencies), 2),
                        "p95_s": round(percentile(latencies, 95), 2),
                        "replies_per_minute": round(len(latencies) / span.total_seconds() * 60, 1),
                        "wall_s": round(wall, 1),
                        "database": "postgresql" if postgres_url else "sqlite",
                    }
                )
                print(json.dumps(results[-1]), flush=True)
            finally:
                if schema and postgres_url:
                    _drop(postgres_url, schema)
    return results
