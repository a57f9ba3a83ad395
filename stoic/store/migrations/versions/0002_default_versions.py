"""Default application versions: which version new batches of an app get.

Written by ``PUT /v1/models/default`` (``stoic model default``); without a row the
daemon uses ``controller.app_version``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"


def upgrade() -> None:
    op.create_table(
        "default_versions",
        sa.Column("app", sa.String(length=64), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("app", name=op.f("pk_default_versions")),
    )


def downgrade() -> None:
    op.drop_table("default_versions")
