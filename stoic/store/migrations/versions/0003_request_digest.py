"""Batches keep a digest of the request that created them (Idempotency-Key conflicts).

A repeated ``Idempotency-Key`` used to return the stored batch whatever the new request
held, so a client bug could silently drop a batch. The digest (SHA-256 hex of the
options and of each file's name, size and SHA-256) lets the ingest tell a true replay
(200, the stored batch) from a reuse of the key for another request (409). Rows stored
before this revision have no digest and keep the old behaviour.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"


def upgrade() -> None:
    op.add_column("batches", sa.Column("request_digest", sa.String(length=64), nullable=True))


def downgrade() -> None:
    # batch mode: SQLite before 3.35 cannot drop a column in place.
    with op.batch_alter_table("batches") as batch:
        batch.drop_column("request_digest")
