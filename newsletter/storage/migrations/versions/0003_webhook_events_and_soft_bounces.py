"""webhook events, soft bounces, confirmation throttle

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 16:23:54.875918
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "mailevent",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("provider_event_id", sa.String(length=250), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("email_key", sa.String(length=320), nullable=False),
        sa.Column("subscriber_id", sa.Integer(), nullable=True),
        sa.Column("delivery_id", sa.Integer(), nullable=True),
        sa.Column("edition_id", sa.Integer(), nullable=True),
        sa.Column("detail", sa.String(length=500), nullable=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["delivery.id"],
        ),
        sa.ForeignKeyConstraint(
            ["edition_id"],
            ["edition.id"],
        ),
        sa.ForeignKeyConstraint(
            ["subscriber_id"],
            ["subscriber.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("provider", "provider_event_id"),
    )
    with op.batch_alter_table("mailevent", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_mailevent_edition_id"), ["edition_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_mailevent_email_key"), ["email_key"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_mailevent_subscriber_id"), ["subscriber_id"], unique=False
        )

    with op.batch_alter_table("delivery", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_delivery_provider_message_id"), ["provider_message_id"], unique=False
        )

    with op.batch_alter_table("subscriber", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("soft_bounces", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(sa.Column("confirm_sent_at", sa.DateTime(timezone=True), nullable=True))

    with op.batch_alter_table("subscriptionevent", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_subscriptionevent_edition_id"), ["edition_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("subscriptionevent", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_subscriptionevent_edition_id"))

    with op.batch_alter_table("subscriber", schema=None) as batch_op:
        batch_op.drop_column("confirm_sent_at")
        batch_op.drop_column("soft_bounces")

    with op.batch_alter_table("delivery", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_delivery_provider_message_id"))

    with op.batch_alter_table("mailevent", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_mailevent_subscriber_id"))
        batch_op.drop_index(batch_op.f("ix_mailevent_email_key"))
        batch_op.drop_index(batch_op.f("ix_mailevent_edition_id"))

    op.drop_table("mailevent")
