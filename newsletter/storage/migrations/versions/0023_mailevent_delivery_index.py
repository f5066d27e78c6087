"""mailevent: an index on delivery_id

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-04 18:00:00

``ledger prune`` deletes the delivery rows of old editions. For each deleted row the database
checks the foreign key ``mailevent.delivery_id`` (are reports still pointing at it?), and the
prune itself first clears that column for the rows it deletes. Without an index both read the
whole report table: with a delivered report per message (what the email APIs' webhooks send),
a prune took time proportional to deliveries times reports, 1.7 s for 5,000 deliveries and
24.7 s for 20,000 on PostgreSQL (``bench/prune.py``); a million would have taken hours. On a
large report table the index takes a while to build, and writes to ``mailevent`` wait for it.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0023"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_mailevent_delivery_id", "mailevent", ["delivery_id"])


def downgrade() -> None:
    op.drop_index("ix_mailevent_delivery_id", table_name="mailevent")
