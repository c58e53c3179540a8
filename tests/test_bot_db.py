"""The archive database on SQLite and PostgreSQL: migrations, uniqueness, claiming jobs."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from datetime import timedelta

import pytest
from sqlalchemy import event, inspect, select, text
from sqlalchemy.exc import IntegrityError

from bot.db import (
    Composition,
    MentionRequest,
    State,
    claim_next,
    make_engine,
    reset_own_leases,
    session_factory,
    transaction,
    utcnow,
)
from bot.migrate import downgrade, upgrade
from tests.bot_helpers import postgres_schema


def job(mention_id: str, **kw) -> MentionRequest:
    now = utcnow()
    fields = dict(
        platform="mastodon",
        mention_id=mention_id,
        idempotency_key=f"band-mastodon-{mention_id}",
        requester_id="1",
        requester_acct="alice",
        mentioned_at=now,
        next_attempt_at=now,
    )
    return MentionRequest(**(fields | kw))


def test_upgrade_creates_the_tables_and_is_idempotent(database_url):
    upgrade(database_url)
    upgrade(database_url)
    engine = make_engine(database_url)
    tables = set(inspect(engine).get_table_names())
    assert {"requests", "compositions", "cursors", "alembic_version"} <= tables
    downgrade(database_url, "base")
    assert "requests" not in inspect(engine).get_table_names()
    engine.dispose()


def test_one_row_per_mention(database_url):
    upgrade(database_url)
    engine = make_engine(database_url)
    sessions = session_factory(engine)
    with transaction(sessions) as session:
        session.add(job("100"))
    with pytest.raises(IntegrityError), transaction(sessions) as session:
        session.add(job("100", idempotency_key="other"))
    with transaction(sessions) as session:
        session.add(job("100", platform="twitter", idempotency_key="band-twitter-100"))
    with sessions() as session:
        row = session.scalars(select(MentionRequest).where(MentionRequest.platform == "mastodon")).one()
        assert row.state == State.RECEIVED and row.mentioned_at.tzinfo is not None
    engine.dispose()


def test_claims_take_due_jobs_in_order_and_respect_leases(database_url):
    upgrade(database_url)
    engine = make_engine(database_url)
    sessions = session_factory(engine)
    now = utcnow()
    with transaction(sessions) as session:
        session.add(job("1", next_attempt_at=now - timedelta(seconds=5)))
        session.add(job("2", next_attempt_at=now + timedelta(hours=1)))  # not due
        session.add(job("3", state=State.REPLIED))  # done
    lease = timedelta(minutes=5)
    first = claim_next(sessions, "w1", lease, now)
    assert first is not None and first.mention_id == "1"
    assert claim_next(sessions, "w2", lease, now) is None  # leased to w1
    assert claim_next(sessions, "w1", lease, now) is None  # not even w1 takes a leased job again
    assert reset_own_leases(sessions, "w1") == 1  # w1 restarted (a stable BOT_WORKER_ID): frees its jobs
    assert claim_next(sessions, "w1", lease, now).mention_id == "1"
    assert claim_next(sessions, "w2", lease, now + timedelta(minutes=6)).mention_id == "1"  # lease ran out
    assert claim_next(sessions, "w1", lease, now + timedelta(minutes=6)) is None  # now w2's
    assert claim_next(sessions, "w1", lease, now, exclude={first.id}) is None
    engine.dispose()


def test_a_claim_lost_between_look_and_update_is_not_taken_on_sqlite(tmp_path):
    """Another process claims the row after our SELECT saw it free: our UPDATE must not win too."""
    url = f"sqlite:///{tmp_path / 'bot.sqlite3'}"
    upgrade(url)
    engine, other = make_engine(url), make_engine(url)
    sessions = session_factory(engine)
    with transaction(sessions) as session:
        session.add(job("1"))
    later = utcnow() + timedelta(minutes=5)

    def the_other_worker_claims(conn, cursor, statement, parameters, context, executemany) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "FROM requests" in statement and not raced:
            raced.append(True)
            with other.begin() as connection:
                connection.execute(MentionRequest.__table__.update().values(claimed_by="w2", lease_until=later))

    raced: list[bool] = []
    event.listen(engine, "after_cursor_execute", the_other_worker_claims)
    assert claim_next(sessions, "w1", timedelta(minutes=5)) is None
    assert raced
    with sessions() as session:
        assert session.scalars(select(MentionRequest)).one().claimed_by == "w2"
    engine.dispose()
    other.dispose()


def test_skip_locked_on_postgresql():
    with postgres_schema() as url:
        upgrade(url)
        engine = make_engine(url)
        sessions = session_factory(engine)
        with transaction(sessions) as session:
            session.add_all([job("1"), job("2")])
        locked, release = threading.Event(), threading.Event()

        def hold_first_row() -> None:
            with transaction(sessions) as session:
                session.scalars(select(MentionRequest).where(MentionRequest.mention_id == "1").with_for_update()).one()
                locked.set()
                release.wait(10)

        holder = threading.Thread(target=hold_first_row)
        holder.start()
        assert locked.wait(10)
        try:
            claimed = claim_next(sessions, "w2", timedelta(minutes=5))  # does not wait for the lock
            assert claimed is not None and claimed.mention_id == "2"
        finally:
            release.set()
            holder.join()
        engine.dispose()


def test_cli_db_upgrade(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "DATABASE_URL": f"sqlite:///{tmp_path / 'x.sqlite3'}"}
    done = subprocess.run([sys.executable, "-m", "bot.cli", "db", "upgrade"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "x.sqlite3").is_file()
    env["DATABASE_URL"] = "postgresql+psycopg://nobody@127.0.0.1:1/none"
    done = subprocess.run([sys.executable, "-m", "bot.cli", "db", "upgrade"], env=env, capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.startswith("error: ") and "Traceback" not in done.stderr


def test_the_migrations_match_the_models(database_url):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from bot.db import Base

    upgrade(database_url)
    engine = make_engine(database_url)
    with engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    engine.dispose()


def test_the_list_filters_have_composite_indexes_that_their_queries_use(database_url):
    """Genre and model-version filters page newest first on (created_at, id): migration 0003's indexes serve them."""
    from benchmarks.web import fill
    from bot.web.archive import Filters, list_query

    upgrade(database_url)
    engine = make_engine(database_url)
    indexes = {i["name"]: i["column_names"] for i in inspect(engine).get_indexes("compositions")}
    assert indexes["ix_compositions_genre_created_id"] == ["genre", "created_at", "id"]
    assert indexes["ix_compositions_version_created_id"] == ["model_version", "created_at", "id"]
    assert "ix_compositions_genre_created" not in indexes  # its prefix, now redundant
    fill(engine, 600)
    with engine.begin() as connection:
        connection.exec_driver_sql("ANALYZE")
    cursor = None
    for filters, index in (
        (Filters(genre="folk"), "ix_compositions_genre_created_id"),
        (Filters(model_version="v2"), "ix_compositions_version_created_id"),
    ):
        for cursor in (None, "MjAyNi0xMS0yM1QwMDowMDowMCswMDowMHxmZmZm"):  # first page, then keyset (2026-11-23|ffff)
            compiled = list_query(filters, cursor, 20).compile(engine)
            with engine.connect() as connection:
                if engine.dialect.name == "sqlite":
                    plan = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}", tuple(compiled.params.values()))
                else:  # a few hundred rows fit in a page or two: make the planner show the plan it takes at scale
                    connection.exec_driver_sql("SET enable_seqscan = off")
                    plan = connection.exec_driver_sql(f"EXPLAIN {compiled}", compiled.params)
                text = "\n".join(str(row[-1]) for row in plan)
            assert index in text, text
            if engine.dialect.name == "sqlite":  # (PostgreSQL's choice at scale: `bot bench-web` prints it)
                assert "TEMP B-TREE" not in text, text  # the index gives the order: no sort
    downgrade(database_url, "0002")
    names = {i["name"] for i in inspect(engine).get_indexes("compositions")}
    assert "ix_compositions_genre_created" in names and "ix_compositions_genre_created_id" not in names
    upgrade(database_url)
    engine.dispose()


def test_migration_0005_adds_the_key_and_density_asked_and_keeps_older_rows(database_url):
    """0004 -> 0005 on a database with a piece in it: the piece keeps its data, with NULL for what it was
    never asked; the columns hold a key and a density; downgrading drops them and keeps the rows."""
    upgrade(database_url, "0004")
    engine = make_engine(database_url)
    now = utcnow()
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO compositions (id, genre, model_version, seed, temperature, top_p, seconds_requested,"
                " duration, events, notes, midi_path, hidden, created_at)"
                " VALUES ('old1', 'folk', 'v1', 7, 1.0, 0.95, 30, 29.5, 400, 120, 'ol/old1.mid', :no, :now)"
            ),
            {"no": False, "now": now},
        )
        connection.execute(
            text(
                "INSERT INTO requests (platform, bot_account, mention_id, idempotency_key, requester_id,"
                " requester_acct, requester_display_name, text, plain_text, visibility, spoiler_text, kind,"
                " state, attempts, next_attempt_at, mentioned_at, received_at, updated_at, composition_id)"
                " VALUES ('mastodon', 'band', '1', 'k1', '9', 'alice', '', '', '', 'public', '', 'compose',"
                " 'replied', 1, :now, :now, :now, :now, 'old1')"
            ),
            {"now": now},
        )

    def columns(table: str) -> set[str]:
        return {c["name"] for c in inspect(engine).get_columns(table)}

    assert "key" not in columns("requests") and "asked_key" not in columns("compositions")
    upgrade(database_url)
    assert {"key", "density"} <= columns("requests")
    assert {"asked_key", "asked_density", "key_followed"} <= columns("compositions")
    sessions = session_factory(engine)
    with transaction(sessions) as session:
        old = session.get(Composition, "old1")
        request = session.scalars(select(MentionRequest)).one()
        assert (old.asked_key, old.asked_density, old.key_followed) == (None, None, None)
        assert (request.key, request.density, request.composition_id) == (None, None, "old1")
        old.asked_key, old.asked_density, old.key_followed = "E♭ minor", 12.0, False
        request.key, request.density = "E♭ minor", 12.0
    with sessions() as session:
        old = session.get(Composition, "old1")
        assert (old.asked_key, old.asked_density, old.key_followed) == ("E♭ minor", 12.0, False)
        assert session.scalars(select(MentionRequest.key)).one() == "E♭ minor"
    engine.dispose()
    downgrade(database_url, "0004")
    engine = make_engine(database_url)
    assert "key" not in columns("requests") and "key_followed" not in columns("compositions")
    with engine.connect() as connection:
        assert connection.execute(text("SELECT seed FROM compositions WHERE id = 'old1'")).scalar() == 7
        assert connection.execute(text("SELECT composition_id FROM requests")).scalar() == "old1"
    upgrade(database_url)
    assert "key_followed" in columns("compositions")
    engine.dispose()


def test_the_database_and_media_files_are_private_whatever_the_umask(tmp_path):
    """They hold direct messages' text and pieces: readable by their owner alone (a shell's umask is 022)."""
    from bot.media import MediaStore

    previous = os.umask(0o022)
    try:
        url = f"sqlite:///{tmp_path / 'data' / 'bot.sqlite3'}"
        upgrade(url)
        engine = make_engine(url)
        with engine.begin() as connection:  # a write: the WAL and its index appear
            connection.exec_driver_sql("CREATE TABLE touch (x INTEGER)")
            connection.exec_driver_sql("INSERT INTO touch VALUES (1)")
            created = sorted((tmp_path / "data").iterdir())
            assert [p.name for p in created] == ["bot.sqlite3", "bot.sqlite3-shm", "bot.sqlite3-wal"]
            modes = {path: path.stat().st_mode for path in [*created, tmp_path / "data"]}
        engine.dispose()
        media = MediaStore(tmp_path / "var" / "media")
        relative = media.write("6f140f98-0000-4000-8000-000000000001", "mp3", b"ID3")
        for path in (media.path(relative), media.path(relative).parent, media.root):
            modes[path] = path.stat().st_mode
    finally:
        os.umask(previous)
    for path, mode in modes.items():
        assert mode & 0o077 == 0, f"{path}: {oct(mode)}"


def test_an_in_memory_database_leaves_no_file_behind(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for url in ("sqlite://", "sqlite:///:memory:"):
        engine = make_engine(url)
        with engine.begin() as connection:
            assert connection.exec_driver_sql("SELECT 1").scalar() == 1
        engine.dispose()
    assert list(tmp_path.iterdir()) == []  # "sqlite://" once left a file named "sqlite:" in the working folder
