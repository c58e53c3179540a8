"""``bot bench-web``: fill an archive with many pieces and time the list page and the API over real HTTP.

Rows go in with bulk INSERTs (no media files: the pages only link to them). The server is
uvicorn in a thread of this process; requests are sequential, so each time is one request's
latency. Every SQL statement the server ran is logged, and the list queries are EXPLAINed.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import uvicorn
from sqlalchemy import create_engine, event, insert
from sqlalchemy.engine import Engine

from bot.config import load_settings
from bot.db import Composition, MentionRequest, make_engine
from bot.local_mastodon import free_port
from bot.migrate import upgrade
from bot.web.app import create_app

GENRES = ("classical", "folk", "pop")
VISIBILITIES = ("public", "public", "unlisted", "private", "direct")
BATCH = 5_000


def fill(engine: Engine, rows: int, seed: int = 0, now: datetime | None = None) -> None:
    """``rows`` replied requests and their pieces, spread over 90 days, in bulk."""
    rng = random.Random(seed)
    now = now or datetime.now(UTC)
    for start in range(0, rows, BATCH):
        requests, pieces = [], []
        for i in range(start, min(start + BATCH, rows)):
            created = now - timedelta(seconds=rng.uniform(0, 90 * 86400))
            piece_id = f"{uuid.UUID(int=rng.getrandbits(128)).hex[:24]}"
            genre = rng.choice(GENRES)
            requests.append(
                dict(
                    id=i + 1,
                    platform="mastodon",
                    bot_account="band",
                    mention_id=str(i + 1),
                    idempotency_key=f"band-mastodon-{i + 1}",
                    requester_id=str(i % 5000),
                    requester_acct=f"user{i % 5000}@example.social",
                    requester_display_name=f"User {i % 5000}",
                    requester_url=f"https://example.social/@user{i % 5000}",
                    mention_url=f"https://example.social/@user{i % 5000}/{i + 1}",
                    text=f"<p>@band {genre} please</p>",
                    plain_text=f"@band {genre} please",
                    visibility=rng.choice(VISIBILITIES),
                    spoiler_text="",
                    kind="compose",
                    genre=genre,
                    seconds=30.0,
                    temperature=1.0,
                    top_p=0.95,
                    seed=rng.randint(0, 2**31 - 1),
                    state="replied",
                    attempts=1,
                    next_attempt_at=created,
                    composition_id=piece_id,
                    reply_id=str(10**9 + i),
                    reply_url=f"https://example.social/@band/{10**9 + i}",
                    mentioned_at=created - timedelta(seconds=rng.uniform(5, 120)),
                    received_at=created,
                    replied_at=created + timedelta(seconds=rng.uniform(5, 60)),
                    updated_at=created,
                )
            )
            pieces.append(
                dict(
                    id=piece_id,
                    request_id=i + 1,
                    genre=genre,
                    model_version=rng.choice(("v1", "v2", "v3")),
                    seed=requests[-1]["seed"],
                    temperature=1.0,
                    top_p=0.95,
                    seconds_requested=30.0,
                    duration=rng.uniform(25, 31),
                    events=3000,
                    notes=400,
                    midi_path=f"{piece_id[:2]}/{piece_id}.mid",
                    audio_path=f"{piece_id[:2]}/{piece_id}.mp3",
                    audio_mime="audio/mpeg",
                    pianoroll_path=f"{piece_id[:2]}/{piece_id}.png",
                    description="A calm piano piece.",
                    hidden=rng.random() < 0.001,
                    created_at=created,
                )
            )
        with engine.begin() as connection:
            connection.execute(insert(Composition), pieces)
            connection.execute(insert(MentionRequest), requests)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _explain(engine: Engine, statement: str, parameters: object) -> list[str]:
    prefix = "EXPLAIN QUERY PLAN " if engine.dialect.name == "sqlite" else "EXPLAIN "
    with engine.connect() as connection:
        rows = connection.exec_driver_sql(prefix + statement, parameters).all()
    return [" ".join(str(c) for c in row[-1:]) for row in rows]


def run(rows: int, requests: int, database: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        schema = None
        admin_engine = None
        if database is None:
            database = f"sqlite:///{Path(tmp) / 'bench.sqlite3'}"
        elif database.startswith("postgresql"):
            schema = f"bench_web_{uuid.uuid4().hex[:8]}"
            admin_engine = create_engine(database)
            with admin_engine.begin() as connection:
                connection.exec_driver_sql(f"CREATE SCHEMA {schema}")
            database = f"{database}{'&' if '?' in database else '?'}options=-csearch_path%3D{schema}"
        try:
            _bench(rows, requests, database, Path(tmp))
        finally:
            if admin_engine is not None:
                with admin_engine.begin() as connection:
                    connection.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
                admin_engine.dispose()


def _bench(rows: int, requests: int, database: str, tmp: Path) -> None:
    upgrade(database)
    engine = make_engine(database)
    started = time.perf_counter()
    fill(engine, rows)
    with engine.begin() as connection:
        connection.exec_driver_sql("ANALYZE")  # both backends: fresh statistics for the planner
    print(f"{engine.dialect.name}: inserted {rows} pieces in {time.perf_counter() - started:.1f} s")
    engine.dispose()

    settings = load_settings(require_platform=False, database_url=database, bot_data_dir=tmp)
    app = create_app(settings, genre_catalog=lambda: [])
    site_engine = app.state.site.sessions.kw["bind"]
    statements: Counter[str] = Counter()
    samples: dict[str, tuple[str, object]] = {}

    @event.listens_for(site_engine, "before_cursor_execute")
    def _log(conn, cursor, statement, parameters, context, executemany) -> None:
        statements[statement] += 1
        samples.setdefault(statement, (statement, parameters))

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            page = client.get("/api/v1/pieces", params={"limit": 100}).json()
            cursor = page["next_cursor"]
            for _ in range(rows // 200):  # walk half-way down the archive, 100 at a time
                page = client.get("/api/v1/pieces", params={"limit": 100, "cursor": cursor}).json()
                cursor = page["next_cursor"] or cursor
            deep = cursor
            month_ago = (datetime.now(UTC) - timedelta(days=30)).date()
            targets = {
                "list page /": "/",
                "list page, half-way down": f"/?cursor={deep}",
                "list page ?genre=folk": "/?genre=folk",
                "list page ?model_version=v2&since=...": f"/?model_version=v2&since={month_ago}",
                "list page ?requester=user42": "/?requester=user42",
                "list page ?requester=user4242@ (one handle)": "/?requester=user4242%40",
                "list page ?requester=(matches none)": "/?requester=nobody",
                "API /api/v1/pieces": "/api/v1/pieces",
                "API, half-way down": f"/api/v1/pieces?cursor={deep}",
                "API ?genre=pop&limit=100": "/api/v1/pieces?genre=pop&limit=100",
                "piece page": f"/pieces/{page['items'][0]['id']}",
            }
            statements.clear()
            print(f"{'endpoint':<46} {'p50 ms':>8} {'p95 ms':>8}  (n={requests}, sequential)")
            for name, url in targets.items():
                assert client.get(url).status_code == 200, url
                times = []
                for _ in range(requests):
                    t0 = time.perf_counter()
                    response = client.get(url)
                    times.append((time.perf_counter() - t0) * 1000)
                    response.raise_for_status()
                print(f"{name:<46} {statistics.median(times):8.1f} {_percentile(times, 0.95):8.1f}")
    finally:
        server.should_exit = True
        thread.join(10)
    print("\nSQL statements the server ran (count, statement):")
    for statement, count in statements.most_common():
        print(f"{count:6d}  {' '.join(statement.split())}")
    print("\nquery plans of the list queries:")
    event.remove(site_engine, "before_cursor_execute", _log)
    for statement, parameters in list(samples.values()):
        if "LIMIT" in statement:  # the list queries and the requester-handle lookup
            flat = " ".join(statement.split())
            where = flat[flat.find("WHERE") :]
            print(f"-- {where[:160]}")
            for line in _explain(site_engine, statement, parameters):
                print(f"   {line}")
    site_engine.dispose()
