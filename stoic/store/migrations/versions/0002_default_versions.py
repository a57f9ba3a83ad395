"""Default application versions: which version new batches of an app get.

Written by ``PUT /v1/models/default`` (``stoic model default``); without a row the
daemon uses ``controller.app_version``.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


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
