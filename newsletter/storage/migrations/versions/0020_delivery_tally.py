"""deliverytally, deliverypulse: each edition's deliveries by state and its acceptances per
second, kept by triggers on delivery; a partial index of the troubled deliveries

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-04 12:00:00

PostgreSQL gets statement-level triggers with transition tables: one aggregate per statement
(a claim of 500 rows moves two counters once, not 500 times), written to the counters of the
backend that runs it (``pg_backend_pid()``), so concurrent senders never lock the same row
(and need no agreed order of rows to avoid deadlocks: no ORDER BY, which inside a claim, whose
transaction prices sorts out, made the planner's cost large enough for JIT compilation, 100 ms).
SQLite has row-level triggers only; its writers take turns anyway, so one shard (0) is enough.
The existing rows are counted once here. ``deliverypulse`` counts the deliveries that became
sent or queued, per second of their ``updated_at`` (the send rate over the last minute).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_UPSERT = (
    "INSERT INTO deliverytally AS t (edition_id, shard, status, n) {rows} "
    "ON CONFLICT (edition_id, shard, status) DO UPDATE SET n = t.n + excluded.n"
)

_ACCEPTED = "{row}.status IN ('sent', 'queued')"

_PG_FUNCTION = """
CREATE FUNCTION delivery_tally() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    {insert};
  ELSIF TG_OP = 'DELETE' THEN
    {delete};
  ELSE
    {update};
  END IF;
  RETURN NULL;
END $$
""".format(
    insert=_UPSERT.format(
        rows="SELECT edition_id, pg_backend_pid(), status, count(*) FROM new_rows "
        "GROUP BY edition_id, status"
    ),
    delete=_UPSERT.format(
        rows="SELECT edition_id, pg_backend_pid(), status, -count(*) FROM old_rows "
        "GROUP BY edition_id, status"
    ),
    update=_UPSERT.format(
        rows="SELECT edition_id, pg_backend_pid(), status, sum(d) FROM ("
        "SELECT edition_id, status, 1 AS d FROM new_rows "
        "UNION ALL SELECT edition_id, status, -1 FROM old_rows) AS c "
        "GROUP BY edition_id, status HAVING sum(d) <> 0"
    )
    + ";\n    "
    + (
        "INSERT INTO deliverypulse AS t (edition_id, second, shard, n) "
        "SELECT n.edition_id, floor(extract(epoch FROM n.updated_at))::bigint, "
        "pg_backend_pid(), count(*) FROM new_rows AS n JOIN old_rows AS o ON o.id = n.id "
        f"WHERE {_ACCEPTED.format(row='n')} AND NOT {_ACCEPTED.format(row='o')} "
        "AND n.updated_at IS NOT NULL GROUP BY 1, 2 "
        "ON CONFLICT (edition_id, second, shard) DO UPDATE SET n = t.n + excluded.n"
    ),
)

_PG_TRIGGERS = [
    "CREATE TRIGGER delivery_tally_insert AFTER INSERT ON delivery "
    "REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION delivery_tally()",
    "CREATE TRIGGER delivery_tally_update AFTER UPDATE ON delivery "
    "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows "
    "FOR EACH STATEMENT EXECUTE FUNCTION delivery_tally()",
    "CREATE TRIGGER delivery_tally_delete AFTER DELETE ON delivery "
    "REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION delivery_tally()",
]


def _sqlite_add(row: str, sign: str) -> str:
    return (
        "INSERT INTO deliverytally (edition_id, shard, status, n) "
        f"VALUES ({row}.edition_id, 0, {row}.status, {sign}1) "
        f"ON CONFLICT (edition_id, shard, status) DO UPDATE SET n = n {sign} 1;"
    )


_SQLITE_TRIGGERS = [
    f"CREATE TRIGGER delivery_tally_insert AFTER INSERT ON delivery BEGIN "
    f"{_sqlite_add('new', '+')} END",
    "CREATE TRIGGER delivery_tally_update AFTER UPDATE OF status, edition_id ON delivery "
    "WHEN old.status IS NOT new.status OR old.edition_id IS NOT new.edition_id BEGIN "
    f"{_sqlite_add('new', '+')} {_sqlite_add('old', '-')} END",
    f"CREATE TRIGGER delivery_tally_delete AFTER DELETE ON delivery BEGIN "
    f"{_sqlite_add('old', '-')} END",
    "CREATE TRIGGER delivery_pulse AFTER UPDATE OF status ON delivery "
    f"WHEN {_ACCEPTED.format(row='new')} AND NOT {_ACCEPTED.format(row='old')} "
    "AND new.updated_at IS NOT NULL BEGIN "
    "INSERT INTO deliverypulse (edition_id, second, shard, n) "
    "VALUES (new.edition_id, CAST(strftime('%s', new.updated_at) AS INTEGER), 0, 1) "
    "ON CONFLICT (edition_id, second, shard) DO UPDATE SET n = n + 1; END",
]

_TROUBLE = "status IN ('failed', 'deferred', 'unknown')"


def upgrade() -> None:
    op.create_table(
        "deliverytally",
        sa.Column("edition_id", sa.Integer(), nullable=False),
        sa.Column("shard", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["edition_id"], ["edition.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("edition_id", "shard", "status"),
    )
    op.create_table(
        "deliverypulse",
        sa.Column("edition_id", sa.Integer(), nullable=False),
        sa.Column("second", sa.BigInteger(), nullable=False),
        sa.Column("shard", sa.Integer(), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["edition_id"], ["edition.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("edition_id", "second", "shard"),
    )
    op.create_index(
        "ix_delivery_trouble",
        "delivery",
        ["edition_id", "updated_at", "id"],
        postgresql_where=sa.text(_TROUBLE),
        sqlite_where=sa.text(_TROUBLE),
    )
    op.execute(
        "INSERT INTO deliverytally (edition_id, shard, status, n) "
        "SELECT edition_id, 0, status, count(*) FROM delivery GROUP BY edition_id, status"
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PG_FUNCTION)
        for statement in _PG_TRIGGERS:
            op.execute(statement)
    else:
        for statement in _SQLITE_TRIGGERS:
            op.execute(statement)


def downgrade() -> None:
    for name in ("tally_insert", "tally_update", "tally_delete", "pulse"):
        op.execute(
            f"DROP TRIGGER IF EXISTS delivery_{name}"
            + (" ON delivery" if op.get_bind().dialect.name == "postgresql" else "")
        )
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS delivery_tally()")
    op.drop_index("ix_delivery_trouble", table_name="delivery")
    op.drop_table("deliverypulse")
    op.drop_table("deliverytally")
