"""Schema migrations with Alembic, driven from code so ``bot db`` needs no alembic.ini.

Also the checks every ``bot`` command runs before it touches the database, each ending in
one line an operator can act on (``DatabaseProblem``): a URL SQLAlchemy cannot use
(``postgres://``), a SQLite file in a folder that does not exist, a server that does not
answer, a schema that is missing, behind the code or ahead of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from bot.db import make_engine

MIGRATIONS = Path(__file__).parent / "migrations"
POSTGRES_DRIVER = "postgresql+psycopg"  # psycopg 3 is the driver this project installs


class DatabaseProblem(Exception):
    """The database cannot be used as configured; the message is one line for the operator."""


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database at ``url`` to ``revision`` (idempotent)."""
    engine = make_engine(url)
    try:
        upgrade_engine(engine, revision)
    finally:
        engine.dispose()


def upgrade_engine(engine: Engine, revision: str = "head") -> None:
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def downgrade(url: str, revision: str) -> None:
    engine = make_engine(url)
    try:
        config = alembic_config(url)
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, revision)
    finally:
        engine.dispose()


def is_current(engine: Engine) -> bool:
    """Whether the schema exists (the worker refuses to start on an unmigrated database)."""
    return inspect(engine).has_table("requests")


def scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config("sqlite://"))


def head_revision() -> str:
    head = scripts().get_current_head()
    assert head is not None, "bot/migrations has no revisions"
    return head


@dataclass(frozen=True)
class Revision:
    id: str
    message: str
    down: str | None


def history() -> list[Revision]:
    """Every migration, oldest first."""
    found = [Revision(s.revision, s.doc or "", s.down_revision) for s in scripts().walk_revisions()]  # type: ignore[arg-type]
    return found[::-1]


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at; None when it has no schema yet."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def shown(url: str) -> str:
    """``url`` with its password masked, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(an unreadable URL)"


def checked_url(url: str, explicit: bool) -> str:
    """``url`` if SQLAlchemy can use it, else a DatabaseProblem saying what to write instead.

    ``explicit``: the operator set DATABASE_URL, so a SQLite file in a folder that does not
    exist is a mistake to report (the default file's folder, BOT_DATA_DIR, is made).
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DatabaseProblem(
            f"DATABASE_URL is not a database URL: {shown(url)} (e.g. {POSTGRES_DRIVER}://user@host/db)"
        ) from None
    backend = parsed.drivername.split("+", 1)[0]
    if backend in ("postgres", "postgresql") and parsed.drivername != POSTGRES_DRIVER:
        fixed = parsed.set(drivername=POSTGRES_DRIVER).render_as_string(hide_password=True)
        raise DatabaseProblem(f"DATABASE_URL: write the scheme {POSTGRES_DRIVER}:// (psycopg 3), e.g. {fixed}")
    if parsed.drivername not in (POSTGRES_DRIVER, "sqlite", "sqlite+pysqlite"):
        raise DatabaseProblem(
            f"DATABASE_URL: unsupported database {parsed.drivername}:// (use {POSTGRES_DRIVER}:// or sqlite:///)"
        )
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        folder = Path(parsed.database).absolute().parent
        if not folder.is_dir():
            if explicit:
                raise DatabaseProblem(f"DATABASE_URL: the folder {folder} does not exist (create it, or fix the path)")
            folder.mkdir(parents=True, exist_ok=True)
    return url


def reachable(url: str, explicit: bool = True) -> Engine:
    """An engine for ``url`` once a connection succeeded; DatabaseProblem otherwise."""
    engine = make_engine(checked_url(url, explicit))
    try:
        with engine.connect():
            pass
    except SQLAlchemyError as exc:
        engine.dispose()
        lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        reason = lines[0] if lines else type(exc).__name__
        raise DatabaseProblem(f"cannot reach the database at {shown(url)}: {reason}") from None
    return engine


def ready(url: str, explicit: bool = True) -> Engine:
    """An engine for ``url`` whose schema is exactly the code's; DatabaseProblem otherwise.

    A worker or web on a database behind the code would write or read columns that are not
    there yet; one ahead (an older release rolled back) may miss constraints it relies on.
    """
    engine = reachable(url, explicit)
    try:
        current, head = current_revision(engine), head_revision()
        if current == head:
            return engine
        if current is None:
            problem = "the database has no tables yet: run `bot db upgrade` first"
        elif current in {r.id for r in history()}:
            problem = f"the database is at revision {current}, behind this code ({head}): run `bot db upgrade` first"
        else:
            problem = (
                f"the database is at revision {current}, which this code does not know (newer code wrote it; "
                f"this code's head is {head}): run the newer code, or `bot db downgrade {head}` with it"
            )
    except SQLAlchemyError as exc:
        problem = f"cannot read the database's revision: {str(exc).strip().splitlines()[0]}"
    engine.dispose()
    raise DatabaseProblem(problem)
