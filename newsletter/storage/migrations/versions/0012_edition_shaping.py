"""edition shaping: an editor's intro for the edition, and the comparisons dropped from it

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03 15:55:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("edition", schema=None) as batch_op:
        batch_op.add_column(sa.Column("intro", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("dropped", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("edition", schema=None) as batch_op:
        batch_op.drop_column("dropped")
        batch_op.drop_column("intro")
