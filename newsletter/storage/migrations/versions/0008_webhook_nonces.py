"""webhook nonces: a signed webhook request is accepted once

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 13:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "webhooknonce",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("token", sa.String(length=200), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("provider", "token"),
    )
    with op.batch_alter_table("webhooknonce", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_webhooknonce_expires_at"), ["expires_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("webhooknonce", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_webhooknonce_expires_at"))
    op.drop_table("webhooknonce")
