"""`bot bench-web` on a small archive: it fills, times every endpoint and shows the queries and their plans."""

from __future__ import annotations

import subprocess
import sys

from tests.bot_helpers import postgres_schema


def run_bench(*extra: str) -> str:
    command = [sys.executable, "-m", "bot.cli", "bench-web", "--rows", "400", "--requests", "10", *extra]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_bench_web_on_sqlite_reports_latencies_queries_and_plans():
    out = run_bench()
    assert "sqlite: inserted 400 pieces" in out
    assert "list page /" in out and "API /api/v1/pieces" in out and "p95 ms" in out
    assert "ORDER BY compositions.created_at DESC, compositions.id DESC" in out
    assert "USING INDEX ix_compositions_created" in out  # keyset paging walks the index


def test_bench_web_on_postgresql():
    with postgres_schema() as url:  # skips the test when PostgreSQL is unreachable
        base = url.split("?")[0]
    out = run_bench("--database", base)  # the bench makes (and drops) its own schema
    assert "postgresql: inserted 400 pieces" in out and "list page /" in out
    assert "query plans of the list queries:" in out and "Limit" in out
