"""Bringing a database to the schema of this version of stoic (Alembic, run in-process).

The daemon calls :func:`migrate` at start-up, before it builds a :class:`Store`, so a
fresh SQLite file and an existing PostgreSQL database both end at the head revision
without anyone running the ``alembic`` tool. The revisions ship inside the package
(``migrations/``, ``alembic.ini``), so an installed wheel can migrate as well.

Two daemons starting together on one PostgreSQL database would race to create the
tables; :func:`migrate` takes a transaction-scoped advisory lock first, so the second
waits and then finds the schema at head. On SQLite the migration runs in a
``BEGIN IMMEDIATE`` transaction, which serialises the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from stoic.errors import ConfigError, StoreError
from stoic.store.store import _IMMEDIATE, make_engine

HERE = Path(__file__).resolve().parent
ALEMBIC_INI = HERE / "alembic.ini"
MIGRATIONS = HERE / "migrations"

# An arbitrary constant naming stoic's advisory lock (pg_advisory_xact_lock takes a bigint).
_PG_LOCK_ID = 0x5707C_0001


def alembic_config() -> Config:
    """The packaged Alembic configuration, with ``script_location`` made absolute."""
    cfg = Config(str(ALEMBIC_INI))
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head_revision() -> str:
    """The newest revision shipped with this version of stoic."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def migrate(target: str | Engine, revision: str = "head") -> None:
    """Upgrade the database at ``target`` (a URL or an engine) to ``revision``.

    Idempotent: a database already at head is left alone. Pass the engine of a
    ``Store("sqlite://")`` to migrate an in-memory database.
    """
    with _connected(target, _engine, _migration_failed) as engine, engine.connect() as conn:
        conn.execution_options(**{_IMMEDIATE: True})
        with conn.begin():
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_ID})
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)


@contextmanager
def _connected(
    target: str | Engine,
    make: Callable[[str], Engine],
    describe: Callable[[SQLAlchemyError], str],
) -> Iterator[Engine]:
    """The engine of ``target``: one made for a URL is disposed of on the way out, and a
    database error becomes a :class:`StoreError` naming the URL without its password."""
    engine = make(target) if isinstance(target, str) else target
    try:
        yield engine
    except SQLAlchemyError as exc:
        url = engine.url.render_as_string(hide_password=True)
        raise StoreError(f"database {url}: {describe(exc)}") from exc
    finally:
        if isinstance(target, str):
            engine.dispose()


def _migration_failed(exc: SQLAlchemyError) -> str:
    return f"migration failed: {one_line(exc)}"


def _engine(url: str) -> Engine:
    """:func:`make_engine`, with a URL it cannot use named as a setting."""
    try:
        return make_engine(url)
    except (ArgumentError, ValueError) as exc:
        raise ConfigError(f"database.url: not a usable URL ({one_line(exc)})") from None
    except OSError as exc:  # the SQLite file's directory cannot be made
        raise ConfigError(f"database.url: {exc.strerror or exc}: {exc.filename}") from None


def one_line(exc: BaseException) -> str:
    """A database error's message on one line, without SQLAlchemy's link and SQL."""
    text = str(getattr(exc, "orig", None) or exc)
    return " ".join(text.split("\n(Background on this error")[0].split())


def current_revision(target: str | Engine) -> str | None:
    """The revision the database is at (None for an empty database)."""
    with _connected(target, make_engine, str) as engine, engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
