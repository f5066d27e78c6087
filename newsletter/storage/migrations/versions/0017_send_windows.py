"""sendwindow: per-domain minute budgets, domain back-off and the warm-up's daily count;
edition.breaker_baseline: the reputation counts when a tripped send was resumed

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-03 22:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sendwindow",
        sa.Column("key", sa.String(length=300), nullable=False),
        sa.Column("window_start", sa.Float(), nullable=False),
        sa.Column("used", sa.Integer(), nullable=False),
        sa.Column("backoff_until", sa.Float(), nullable=False),
        sa.Column("backoff_step", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    with op.batch_alter_table("edition", schema=None) as batch_op:
        batch_op.add_column(sa.Column("breaker_baseline", sa.String(length=100), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("edition", schema=None) as batch_op:
        batch_op.drop_column("breaker_baseline")
    op.drop_table("sendwindow")
