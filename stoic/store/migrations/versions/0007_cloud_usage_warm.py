"""Cloud usage gains the cause ``warm``: pods kept warm between batches.

With ``keepalive.enabled`` a pod stays up after its batch (docs/scheduling.md, "Warm
pods"); the seconds it idles belong to no batch, so they are added to the day's row of
cause ``warm``. The CHECK constraint of ``cloud_usage.cause`` admits it.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"


def _causes(causes: Sequence[str]) -> str:
    return "cause IN (" + ", ".join(f"'{c}'" for c in causes) + ")"


def upgrade() -> None:
    # batch mode: SQLite changes a CHECK constraint by copying the table.
    with op.batch_alter_table("cloud_usage") as batch:
        batch.drop_constraint(op.f("ck_cloud_usage_cause"), type_="check")
        batch.create_check_constraint(
            op.f("ck_cloud_usage_cause"), _causes(("bootstrap", "probe", "warm"))
        )


def downgrade() -> None:
    op.execute("DELETE FROM cloud_usage WHERE cause = 'warm'")
    with op.batch_alter_table("cloud_usage") as batch:
        batch.drop_constraint(op.f("ck_cloud_usage_cause"), type_="check")
        batch.create_check_constraint(op.f("ck_cloud_usage_cause"), _causes(("bootstrap", "probe")))
