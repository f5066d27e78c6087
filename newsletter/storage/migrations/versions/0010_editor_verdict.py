"""email content: an editor's verdict per comparison, the edition's own subject and the
comparisons past its cap, named in the email

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 15:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("comparison", schema=None) as batch_op:
        batch_op.add_column(sa.Column("verdict", sa.String(length=280), nullable=True))
    with op.batch_alter_table("edition", schema=None) as batch_op:
        batch_op.add_column(sa.Column("custom_subject", sa.String(length=300), nullable=True))
        batch_op.add_column(sa.Column("more_links", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("edition", schema=None) as batch_op:
        batch_op.drop_column("more_links")
        batch_op.drop_column("custom_subject")
    with op.batch_alter_table("comparison", schema=None) as batch_op:
        batch_op.drop_column("verdict")
