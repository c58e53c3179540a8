"""The ``bot`` command line: ``once`` for one tick, ``run`` for ticks on a schedule, ``web``, ``db``.

Every expected failure (settings, a database that cannot be used, a port in use) ends in
one line on stderr and a non-zero exit, never a traceback; tests/test_cli_settings.py runs
every command against broken settings.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import typer

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from bot.config import BotSettings
    from bot.worker import Worker

app = typer.Typer(help="The composing bot for Mastodon and X.", no_args_is_help=True, add_completion=False)
db_app = typer.Typer(help="The archive database.", no_args_is_help=True)
app.add_typer(db_app, name="db")

log = logging.getLogger("bot")


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _setup_logging() -> None:
    level = os.environ.get("BOT_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("urllib3", "httpx", "alembic", "matplotlib"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))


def _settings(require_platform: bool = True) -> BotSettings:
    from bot.config import ConfigError, load_settings

    try:
        return load_settings(require_platform=require_platform)
    except ConfigError as exc:
        _fail(f"configuration: {exc}")


def _database(settings: BotSettings, schema: bool = True) -> Engine:
    """The database engine once it answers (and, with ``schema``, is at the code's revision); else one line."""
    from bot.migrate import DatabaseProblem, reachable, ready

    try:
        return (ready if schema else reachable)(settings.resolved_database_url, settings.database_url is not None)
    except DatabaseProblem as exc:
        _fail(str(exc))


def _revision(settings: BotSettings) -> str | None:
    """The revision the reachable database is at (None: no schema yet), whatever the code's."""
    from bot.migrate import current_revision

    engine = _database(settings, schema=False)
    try:
        return current_revision(engine)
    finally:
        engine.dispose()


def _database_option(url: str) -> None:
    """Check a benchmark's database URL option the way DATABASE_URL is checked."""
    from bot.migrate import DatabaseProblem, reachable

    try:
        reachable(url).dispose()
    except DatabaseProblem as exc:
        _fail(str(exc).replace("DATABASE_URL", "the database URL"))


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def build_worker(
    checkpoint: Callable[[str], None] | None = None, stage: Callable[[str, float], None] | None = None
) -> Worker:
    """The worker of `bot once` and `bot run`, from the settings; ``checkpoint`` is Worker's hook (the crash tests')."""
    from bot.db import session_factory
    from bot.platforms import platform_from_settings
    from bot.worker import Worker
    from composer.client import composer_client_from_env

    settings = _settings()
    engine = _database(settings)
    env = dict(os.environ)
    if settings.composer_url:
        env["COMPOSER_URL"] = settings.composer_url
    platform, composer = platform_from_settings(settings), composer_client_from_env(env)
    return Worker(settings, platform, composer, session_factory(engine), checkpoint=checkpoint, stage=stage)


@app.command()
def genres() -> None:
    """List the genres the bot can compose, with their current model versions."""
    from composer.client import composer_client_from_env
    from composer.contract import CompositionError

    logging.getLogger("composer").setLevel(logging.ERROR)  # its retries' warnings: the one error line says it all
    try:
        catalog = composer_client_from_env().genres()
    except CompositionError as exc:
        _fail(f"the composer cannot be asked: {exc}")
    for info in catalog:
        typer.echo(f"{info.name:<12} {info.current_version or '(no model yet)'}")


@app.command()
def once() -> None:
    """One tick: fetch new mentions, then compose, render, upload and reply for each."""
    run_once()


def run_once(checkpoint: Callable[[str], None] | None = None) -> None:
    """`bot once`, with ``checkpoint`` passed to the worker (tests/crash_worker.py kills itself there)."""
    from sqlalchemy.exc import SQLAlchemyError

    from bot.platforms.base import ConfigurationError, TransientError

    _setup_logging()
    worker = build_worker(checkpoint)
    try:
        report = worker.tick()
    except ConfigurationError as exc:
        _fail(str(exc))
    except TransientError as exc:  # the platform is unreachable now; nothing was lost, the next run resumes
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    except SQLAlchemyError as exc:  # the database went away mid-tick; every finished step is committed
        typer.echo(f"error: the database failed during the tick: {_first_line(exc)}", err=True)
        raise typer.Exit(1) from None
    typer.echo(str(report))


@app.command()
def run(
    metrics_port: int = typer.Option(
        0, min=0, max=65535, help="Serve /healthz and /metrics (Prometheus) on this port; 0: off."
    ),
    metrics_host: str = typer.Option("0.0.0.0", help="Address for --metrics-port."),
) -> None:
    """Answer mentions as the stream brings them (Mastodon), polling every BOT_INTERVAL_SECONDS as catch-up
    (every BOT_CATCHUP_SECONDS while the stream is up), until SIGTERM or Ctrl-C, finishing the tick in progress.

    A tick longer than the interval is followed by the next one at once (no overlap, no
    warning); an idle tick logs nothing at INFO.
    """
    from bot.platforms.base import ConfigurationError, TransientError
    from bot.stream import MentionStream
    from bot.worker.health import WorkerHealth, serve
    from bot.worker.loop import run_loop

    _setup_logging()
    settings = _settings()
    stopping, wake = threading.Event(), threading.Event()

    def stop(signum: int, _frame: object) -> None:
        log.info("received %s; finishing the current tick", signal.Signals(signum).name)
        stopping.set()
        wake.set()

    signal.signal(signal.SIGTERM, stop)  # from here on: a stop while starting ends before the first tick
    signal.signal(signal.SIGINT, stop)
    # Alive while a tick starts, ends or moves a job on; a job step outlasting its lease is stuck.
    health = WorkerHealth(stale_after=settings.bot_lease_seconds + 2 * settings.poll_seconds)
    worker = build_worker(health.passed, health.stage)
    try:  # wrong credentials end here in one line; a platform that is down now is retried each tick
        worker.start()
    except ConfigurationError as exc:
        _fail(str(exc))
    except TransientError as exc:
        log.warning("the platform does not answer yet (%s); retrying each tick", exc)
    server = None
    if metrics_port:
        try:
            server = serve(health, metrics_host, metrics_port)
        except OSError as exc:
            _fail(f"cannot serve metrics on {metrics_host}:{metrics_port}: {exc.strerror or exc}")
    listen = getattr(worker.platform, "listen", None) if settings.bot_stream else None
    stream = MentionStream(listen, wake, on_state=health.stream_changed).start() if listen else None
    where = f"; health and metrics on http://{metrics_host}:{metrics_port}/" if server else ""
    how = "mentions by stream, " if stream else ""
    log.info("bot running: %spolling every %g s%s", how, settings.poll_seconds, where)
    failure = run_loop(worker, health, stopping, wake, stream)
    if stream is not None:
        stream.stop()
    if server is not None:
        server.shutdown()
    log.info("bot stopped")
    if failure:
        _fail(failure)


@app.command()
def demo(
    data_dir: Path = typer.Option(Path("var/demo"), help="where the demo keeps its server, archive and logs"),
    mastodon_port: int = typer.Option(3000, min=1, max=65535, help="port of the local Mastodon server"),
    web_port: int = typer.Option(8080, min=1, max=65535, help="port of the archive web"),
    exit_after_reply: bool = typer.Option(False, help="stop once the sample mention is answered (for CI)"),
    prompt: bool = typer.Option(None, help="read requests to post from stdin (default: when it is a terminal)"),
) -> None:
    """Run everything on this machine: a local Mastodon server, the bot, the archive web; then mention the bot."""
    from bot.demo import run as run_demo

    raise typer.Exit(run_demo(data_dir.resolve(), mastodon_port, web_port, exit_after_reply, prompt))


@app.command()
def bench(
    mentions: int = typer.Option(200, min=1),
    accounts: int = typer.Option(50, min=1),
    workers: str = typer.Option("1,2", help="worker counts to run, comma-separated"),
    seconds: float = typer.Option(5.0, help="length of each piece"),
    postgres: str = typer.Option(None, help="PostgreSQL URL (needed for more than one worker)"),
    models_dir: Path = typer.Option(None, help="models to compose with (default: COMPOSER_MODELS_DIR)"),
) -> None:
    """Load benchmark against a local mastodon_mock: p50/p95 mention-to-reply time and replies per minute."""
    from benchmarks.bot import run as run_bench

    counts = tuple(int(w) for w in workers.split(",") if w.strip())
    if postgres:
        _database_option(postgres)
    run_bench(mentions, accounts, counts, seconds, postgres, models_dir)


@app.command("bench-latency")
def bench_latency(
    mentions: int = typer.Option(12, min=2, help="single mentions, one after another's reply"),
    seconds: float = typer.Option(30.0, min=1, help="length of each piece"),
    mean_gap: float = typer.Option(8.0, min=0, help="mean seconds between a reply and the next mention (random)"),
    stream: bool = typer.Option(True, "--stream/--polling", help="the mock's streaming on, or off (polling)"),
    seed: int = typer.Option(0, help="seed of the gaps"),
    models_dir: Path = typer.Option(None, help="models to compose with (default: COMPOSER_MODELS_DIR)"),
) -> None:
    """`bot run` on its default settings against a local mastodon_mock: p50/p95 mention -> reply for single
    mentions at uneven moments, and each stage's p50/p95 (notice, parse, compose, render, upload, media, post)."""
    from benchmarks.latency import run as run_bench

    if models_dir is not None and not models_dir.is_dir():
        _fail(f"--models-dir: no such folder {str(models_dir)!r}")
    run_bench(mentions, seconds, mean_gap, stream, seed, models_dir)


@app.command()
def web(
    host: str = typer.Option("127.0.0.1", help="address to listen on"),
    port: int = typer.Option(8080, min=1, max=65535),
    access_log: bool = typer.Option(False, "--access-log/--no-access-log", help="one log line per request"),
) -> None:
    """Serve the archive on the web: pages, feeds, media and the JSON API (docs at /api/v1/docs)."""
    import uvicorn

    from bot.web import create_app

    _setup_logging()
    settings = _settings(require_platform=False)
    _database(settings).dispose()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:  # bound here, so a port in use is one line and "listening" is only said once it is true
        sock = socket.create_server((host, port), family=family)
    except OSError as exc:
        _fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
    shown_host = f"[{host}]" if family == socket.AF_INET6 else host
    log.info(
        "archive web listening on http://%s:%d/ (public address %s; access log %s)",
        shown_host,
        sock.getsockname()[1],
        settings.archive_base_url,
        "on" if access_log else "off: --access-log",
    )
    config = uvicorn.Config(
        create_app(settings),
        log_level="info" if access_log else "warning",
        access_log=access_log,
        log_config=None,  # uvicorn's lines go through this command's logging: stderr, one format
        proxy_headers=True,
    )
    uvicorn.Server(config).run(sockets=[sock])


@app.command("bench-web")
def bench_web(
    rows: int = typer.Option(100_000, min=1, help="pieces to insert"),
    requests: int = typer.Option(200, min=10, help="timed requests per endpoint"),
    database: str = typer.Option(None, help="SQLAlchemy URL (default: a fresh SQLite file in a temporary folder)"),
) -> None:
    """Fill an archive with ROWS pieces and time the list page and the API (p50/p95), with the queries they ran."""
    from benchmarks.web import run as run_bench

    if database:
        _database_option(database)
    run_bench(rows, requests, database)


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head", help="target revision")) -> None:
    """Create or migrate the archive database at DATABASE_URL."""
    from bot.migrate import upgrade

    settings = _settings(require_platform=False)
    _database(settings, schema=False).dispose()
    try:
        upgrade(settings.resolved_database_url, revision)
    except Exception as exc:  # a one-line error, not a traceback, for an unknown revision or a failed migration
        _fail(f"database upgrade failed: {_first_line(exc)}")
    typer.echo(f"database at revision {revision}")


@db_app.command("current")
def db_current() -> None:
    """Say which revision the database at DATABASE_URL is at, and whether the code needs another."""
    from bot.migrate import head_revision, history

    settings = _settings(require_platform=False)
    current = _revision(settings)
    head = head_revision()
    if current == head:
        typer.echo(f"{current} (head): up to date")
    elif current is None:
        typer.echo(f"no schema yet (the code's head is {head}): run `bot db upgrade`")
    elif current in {r.id for r in history()}:
        typer.echo(f"{current}: behind the code's head {head}: run `bot db upgrade`")
    else:
        typer.echo(f"{current}: unknown to this code (head {head}): newer code migrated it")


@db_app.command("history")
def db_history() -> None:
    """List the code's migrations, oldest first (needs no database)."""
    from bot.migrate import head_revision, history

    head = head_revision()
    for revision in history():
        first = revision.message.strip().splitlines()[0] if revision.message.strip() else ""
        typer.echo(f"{revision.id}{' (head)' if revision.id == head else '       '}  {first}")


@db_app.command("downgrade")
def db_downgrade(
    revision: str = typer.Argument(..., help="the revision to go back to (see `bot db history`), or base"),
    yes: bool = typer.Option(False, "--yes", help="go ahead: a downgrade drops the newer columns and their data"),
) -> None:
    """Take the database at DATABASE_URL back to REVISION (before rolling the code back to a release that needs it)."""
    from bot.migrate import downgrade, history

    known = {r.id for r in history()}
    if revision != "base" and revision not in known:
        _fail(f"unknown revision {revision!r} (known: {', '.join(sorted(known))}, base)")
    settings = _settings(require_platform=False)
    current = _revision(settings)
    if current is None:
        _fail("the database has no schema: nothing to downgrade")
    if not yes:
        _fail(f"downgrading from {current} to {revision} drops the newer columns and their data: add --yes")
    try:
        downgrade(settings.resolved_database_url, revision)
    except Exception as exc:
        _fail(f"database downgrade failed: {_first_line(exc)}")
    typer.echo(f"database at revision {revision}")


if __name__ == "__main__":
    app()
