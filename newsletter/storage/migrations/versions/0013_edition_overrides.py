"""edition overrides: an editor's preheader and per-comparison verdicts for one edition

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03 16:15:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("edition", schema=None) as batch_op:
        batch_op.add_column(sa.Column("overrides", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("edition", schema=None) as batch_op:
        batch_op.drop_column("overrides")
