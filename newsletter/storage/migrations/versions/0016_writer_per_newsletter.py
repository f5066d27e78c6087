"""writers: chosen per newsletter (its schedule file's ``writer``), and intro suggestions

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-03 19:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("newsletter", schema=None) as batch_op:
        batch_op.add_column(sa.Column("writer", sa.String(length=16), nullable=True))
    op.create_table(
        "introsuggestion",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("edition_id", sa.Integer(), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("writer", sa.String(length=16), nullable=False),
        sa.Column("model", sa.String(length=120), nullable=False),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("refusal", sa.Text(), nullable=True),
        sa.Column("input_tokens", sa.Integer(), nullable=False),
        sa.Column("output_tokens", sa.Integer(), nullable=False),
        sa.Column("cache_creation_tokens", sa.Integer(), nullable=False),
        sa.Column("cache_read_tokens", sa.Integer(), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=True),
        sa.Column("provider", sa.String(length=40), nullable=True),
        sa.Column("latency_ms", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["edition_id"], ["edition.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("edition_id", "fingerprint", "writer", "model"),
    )
    op.create_index(
        op.f("ix_introsuggestion_edition_id"), "introsuggestion", ["edition_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_introsuggestion_edition_id"), table_name="introsuggestion")
    op.drop_table("introsuggestion")
    with op.batch_alter_table("newsletter", schema=None) as batch_op:
        batch_op.drop_column("writer")
