"""Operator actions: a batch may be ``cancelled``; a runtime may be out of service.

An operator can cancel a queued or running batch (it ends ``cancelled``, never
re-queued), retry a failed or cancelled one, and take a runtime out of service (the
scheduler places nothing on it, the inquisitor does not probe it) until it is put back.
The state's CHECK constraint gains ``cancelled``; the runtime rows keep when, why and by
whom one was taken out of service, so a restart keeps it out. See
``stoic/daemon/actions.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"

STATES = ("queued", "running", "done", "failed")


def _states(states: Sequence[str]) -> str:
    return "state IN (" + ", ".join(f"'{s}'" for s in states) + ")"


def upgrade() -> None:
    # batch mode: SQLite changes a CHECK constraint by copying the table.
    with op.batch_alter_table("batches") as batch:
        batch.drop_constraint(op.f("ck_batches_state"), type_="check")
        batch.create_check_constraint(op.f("ck_batches_state"), _states((*STATES, "cancelled")))
    with op.batch_alter_table("runtimes") as batch:
        batch.add_column(sa.Column("out_of_service_since", sa.Double(), nullable=True))
        batch.add_column(sa.Column("out_of_service_reason", sa.Text(), nullable=True))
        batch.add_column(sa.Column("out_of_service_by", sa.String(length=255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runtimes") as batch:
        batch.drop_column("out_of_service_by")
        batch.drop_column("out_of_service_reason")
        batch.drop_column("out_of_service_since")
    op.execute(
        "UPDATE batches SET state = 'failed', error = 'cancelled (downgraded)' "
        "WHERE state = 'cancelled'"
    )
    with op.batch_alter_table("batches") as batch:
        batch.drop_constraint(op.f("ck_batches_state"), type_="check")
        batch.create_check_constraint(op.f("ck_batches_state"), _states(STATES))
