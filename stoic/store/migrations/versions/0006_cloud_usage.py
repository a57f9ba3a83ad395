"""Cloud seconds outside batches: bootstrap runs and the inquisitor's probes.

Their pod time was counted nowhere (issue 25, "cloud cost complete"); one row per
local day, runtime and cause keeps them for the operator page's "Today".
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"


def upgrade() -> None:
    op.create_table(
        "cloud_usage",
        sa.Column("day", sa.Double(), nullable=False),
        sa.Column("runtime", sa.String(length=64), nullable=False),
        sa.Column("cause", sa.String(length=16), nullable=False),
        sa.Column("seconds", sa.Double(), nullable=False),
        sa.CheckConstraint("cause IN ('bootstrap', 'probe')", name=op.f("ck_cloud_usage_cause")),
        sa.PrimaryKeyConstraint("day", "runtime", "cause", name=op.f("pk_cloud_usage")),
    )


def downgrade() -> None:
    op.drop_table("cloud_usage")
