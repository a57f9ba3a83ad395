"""stoic's persistent store: SQLAlchemy tables, Alembic migrations, one ``Store`` API.

Start-up sequence (the controller does this)::

    from stoic.store import Store, migrate

    migrate(settings.database_url)  # fresh SQLite file or PostgreSQL: to head
    store = Store(settings.database_url)
    store.requeue_running(clock.now())  # crash recovery
    ...
    store.close()

See ``docs/store.md`` for the schema, the batch state machine and PostgreSQL set-up.
"""

from stoic.store.migrate import current_revision, head_revision, migrate
from stoic.store.store import BatchRecord, RuntimeRow, Store, make_engine

__all__ = [
    "BatchRecord",
    "RuntimeRow",
    "Store",
    "current_revision",
    "head_revision",
    "make_engine",
    "migrate",
]
