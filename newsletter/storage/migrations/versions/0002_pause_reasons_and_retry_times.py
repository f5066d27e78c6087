"""pause reasons and retry times

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 14:53:19.708180
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    with op.batch_alter_table("delivery", schema=None) as batch_op:
        batch_op.add_column(sa.Column("retry_at", sa.DateTime(timezone=True), nullable=True))

    with op.batch_alter_table("edition", schema=None) as batch_op:
        batch_op.add_column(sa.Column("status_reason", sa.String(length=500), nullable=True))


def downgrade() -> None:

    with op.batch_alter_table("edition", schema=None) as batch_op:
        batch_op.drop_column("status_reason")

    with op.batch_alter_table("delivery", schema=None) as batch_op:
        batch_op.drop_column("retry_at")
