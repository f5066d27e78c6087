"""one comparison per live edition of a newsletter

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 12:00:00

Edition items get their edition's newsletter and a ``live`` flag (false once the edition is
cancelled), and a partial unique index on (newsletter_id, comparison_id) where live. Databases
that already hold a comparison in two live editions (the bug this fixes) keep it live in one:
an edition that went out before a draft, else the oldest; the others keep their history, not
the claim.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("editionitem", schema=None) as batch_op:
        batch_op.add_column(sa.Column("newsletter_id", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column("live", sa.Boolean(), nullable=False, server_default=sa.true())
        )
    op.execute(
        "UPDATE editionitem SET newsletter_id = "
        "(SELECT e.newsletter_id FROM edition AS e WHERE e.id = editionitem.edition_id)"
    )
    op.execute(
        "UPDATE editionitem SET live = false WHERE edition_id IN "
        "(SELECT e.id FROM edition AS e WHERE e.status = 'cancelled')"
    )
    # Of two live editions holding one comparison, the one that went out (sending, paused,
    # sent) keeps it, else the older: a stale draft must not keep a comparison already mailed.
    rank = (
        "(SELECT CASE WHEN e.status = 'draft' THEN 1 ELSE 0 END FROM edition AS e "
        "WHERE e.id = {item}.edition_id)"
    )
    op.execute(
        f"""
        UPDATE editionitem SET live = false
        WHERE live AND EXISTS (
            SELECT 1 FROM editionitem AS o
            WHERE o.newsletter_id = editionitem.newsletter_id
              AND o.comparison_id = editionitem.comparison_id
              AND o.live AND o.edition_id <> editionitem.edition_id
              AND ({rank.format(item="o")} < {rank.format(item="editionitem")}
                   OR ({rank.format(item="o")} = {rank.format(item="editionitem")}
                       AND o.edition_id < editionitem.edition_id))
        )
        """
    )
    with op.batch_alter_table("editionitem", schema=None) as batch_op:
        batch_op.alter_column("newsletter_id", existing_type=sa.Integer(), nullable=False)
        batch_op.alter_column("live", existing_type=sa.Boolean(), server_default=None)
        batch_op.create_foreign_key(
            "fk_editionitem_newsletter_id_newsletter", "newsletter", ["newsletter_id"], ["id"]
        )
        batch_op.create_index(
            "uq_editionitem_live_comparison",
            ["newsletter_id", "comparison_id"],
            unique=True,
            sqlite_where=sa.text("live"),
            postgresql_where=sa.text("live"),
        )


def downgrade() -> None:
    with op.batch_alter_table("editionitem", schema=None) as batch_op:
        batch_op.drop_index("uq_editionitem_live_comparison")
        batch_op.drop_constraint("fk_editionitem_newsletter_id_newsletter", type_="foreignkey")
        batch_op.drop_column("live")
        batch_op.drop_column("newsletter_id")
