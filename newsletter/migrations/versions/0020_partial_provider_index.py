"""delivery: the provider-id index only over rows that have one

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-04 03:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WHERE = sa.text("provider_message_id IS NOT NULL")


def upgrade() -> None:
    op.drop_index("ix_delivery_provider_message_id", table_name="delivery")
    op.create_index(
        "ix_delivery_provider_message_id",
        "delivery",
        ["provider_message_id"],
        postgresql_where=WHERE,
        sqlite_where=WHERE,
    )


def downgrade() -> None:
    op.drop_index("ix_delivery_provider_message_id", table_name="delivery")
    op.create_index("ix_delivery_provider_message_id", "delivery", ["provider_message_id"])
