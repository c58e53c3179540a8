"""The ``bot`` command line: ``once`` for one tick, ``run`` for ticks on a schedule, ``db upgrade``."""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import typer

if TYPE_CHECKING:
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
    for noisy in ("urllib3", "httpx", "alembic", "apscheduler.executors.default", "matplotlib"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))


def _settings(require_platform: bool = True) -> BotSettings:
    from bot.config import ConfigError, load_settings

    try:
        return load_settings(require_platform=require_platform)
    except ConfigError as exc:
        _fail(f"configuration: {exc}")


def build_worker(checkpoint: Callable[[str], None] | None = None) -> Worker:
    """The worker of `bot once` and `bot run`, from the settings; ``checkpoint`` is Worker's hook (the crash tests')."""
    from bot.db import make_engine, session_factory
    from bot.migrate import is_current
    from bot.platforms import platform_from_settings
    from bot.worker import Worker
    from composer.client import composer_client_from_env

    settings = _settings()
    engine = make_engine(settings.resolved_database_url)
    if not is_current(engine):
        _fail("the database has no tables yet: run `bot db upgrade` first")
    env = dict(os.environ)
    if settings.composer_url:
        env["COMPOSER_URL"] = settings.composer_url
    platform, composer = platform_from_settings(settings), composer_client_from_env(env)
    return Worker(settings, platform, composer, session_factory(engine), checkpoint=checkpoint)


@app.command()
def genres() -> None:
    """List the genres the bot can compose, with their current model versions."""
    from composer.client import composer_client_from_env

    for info in composer_client_from_env().genres():
        typer.echo(f"{info.name:<12} {info.current_version or '(no model yet)'}")


@app.command()
def once() -> None:
    """One tick: fetch new mentions, then compose, render, upload and reply for each."""
    run_once()


def run_once(checkpoint: Callable[[str], None] | None = None) -> None:
    """`bot once`, with ``checkpoint`` passed to the worker (tests/crash_worker.py kills itself there)."""
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
    typer.echo(str(report))


@app.command()
def run() -> None:
    """Run ticks every BOT_INTERVAL_SECONDS until SIGTERM or Ctrl-C, finishing the tick in progress."""
    from apscheduler.schedulers.blocking import BlockingScheduler

    from bot.platforms.base import ConfigurationError

    _setup_logging()
    worker = build_worker()
    scheduler = BlockingScheduler(timezone="UTC")
    failure: list[str] = []

    def tick() -> None:
        try:
            worker.tick()
        except ConfigurationError as exc:
            failure.append(str(exc))
            scheduler.shutdown(wait=False)
        except Exception:  # one bad tick must not stop the schedule; the jobs it held resume next time
            log.exception("tick failed")

    def stop(signum: int, _frame: object) -> None:
        log.info("received %s; finishing the current tick", signal.Signals(signum).name)
        scheduler.shutdown(wait=False)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    scheduler.add_job(
        tick,
        "interval",
        seconds=worker.settings.bot_interval_seconds,
        next_run_time=datetime.now(UTC),
        max_instances=1,
        coalesce=True,
        id="tick",
    )
    log.info("bot running: a tick every %g s", worker.settings.bot_interval_seconds)
    scheduler.start()
    log.info("bot stopped")
    if failure:
        _fail(failure[0])


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
    run_bench(mentions, accounts, counts, seconds, postgres, models_dir)


@app.command()
def web(
    host: str = typer.Option("127.0.0.1", help="address to listen on"),
    port: int = typer.Option(8080, min=1, max=65535),
) -> None:
    """Serve the archive on the web: pages, feeds, media and the JSON API (docs at /api/v1/docs)."""
    import uvicorn

    from bot.db import make_engine
    from bot.migrate import is_current
    from bot.web import create_app

    _setup_logging()
    settings = _settings(require_platform=False)
    if not is_current(make_engine(settings.resolved_database_url)):
        _fail("the database has no tables yet: run `bot db upgrade` first")
    uvicorn.run(create_app(settings), host=host, port=port, log_level="warning", proxy_headers=True)


@app.command("bench-web")
def bench_web(
    rows: int = typer.Option(100_000, min=1, help="pieces to insert"),
    requests: int = typer.Option(200, min=10, help="timed requests per endpoint"),
    database: str = typer.Option(None, help="SQLAlchemy URL (default: a fresh SQLite file in a temporary folder)"),
) -> None:
    """Fill an archive with ROWS pieces and time the list page and the API (p50/p95), with the queries they ran."""
    from benchmarks.web import run as run_bench

    run_bench(rows, requests, database)


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head", help="target revision")) -> None:
    """Create or migrate the archive database at DATABASE_URL."""
    from bot.migrate import upgrade

    settings = _settings(require_platform=False)
    try:
        upgrade(settings.resolved_database_url, revision)
    except Exception as exc:  # a one-line error, not a traceback, for a wrong URL or an unreachable server
        _fail(f"database upgrade failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    typer.echo(f"database at revision {revision}")


if __name__ == "__main__":
    app()
