"""editiontotals: an edition's delivery counts, kept when its delivery rows are pruned

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-03 22:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "editiontotals",
        sa.Column("edition_id", sa.Integer(), nullable=False),
        sa.Column("counts", sa.String(length=2000), nullable=False),
        sa.Column("pruned_rows", sa.Integer(), nullable=False),
        sa.Column("pruned_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["edition_id"], ["edition.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("edition_id"),
    )


def downgrade() -> None:
    op.drop_table("editiontotals")
