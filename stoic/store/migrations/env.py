"""Alembic environment for stoic: migrations run against ``stoic.store.tables``.

In-process (``stoic.store.migrate``) the caller hands a connection that is already in
a transaction through ``config.attributes["connection"]``. From the ``alembic``
command line the URL comes from ``-x url=...``, ``STOIC_DATABASE__URL`` or the ini.
SQLite gets ``render_as_batch`` so that ALTERs are done by table copy.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy.engine import Connection

from stoic.errors import ConfigError
from stoic.store.store import make_engine
from stoic.store.tables import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = (
        context.get_x_argument(as_dictionary=True).get("url")
        or os.environ.get("STOIC_DATABASE__URL")
        or config.get_main_option("sqlalchemy.url")
    )
    if not url:
        raise ConfigError("alembic: no database URL; pass -x url=... or set STOIC_DATABASE__URL")
    return url


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_offline() -> None:
    context.configure(
        url=_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    given = config.attributes.get("connection")
    if given is not None:
        _run(given)
        return
    engine = make_engine(_url())
    try:
        with engine.connect() as connection:
            _run(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
