"""editionreport: people per edition and report kind, kept by triggers on the event tables

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-04 12:40:00

``stats`` counts each edition's provider reports (delivered, bounced, complained, ...) and
unsubscribes through its links with each person once. Counted from the events, that read
every event of every edition (providers report a delivery per message: as many events as
deliveries). These counters are kept as events arrive: an event adds one to its edition's
count for its kind when it is that person's first of the kind for the edition (and to
``bounced`` for a first bounce, hard or soft; and to ``unsubscribed`` and
``unsubscribed:<source>`` for a first unsubscribe, and a first from that source).

Events are only ever inserted (erasure rewrites an address, never the edition, the person
or the kind), so only inserts are counted. On PostgreSQL the trigger runs once per
statement: rows alike within it count once, and before it looks for earlier events it takes
a transaction-scoped advisory lock on each (edition, person), in order, so two reports about
one person arriving at once are counted once (its next statement sees the other's commit).
SQLite's triggers run per row, each seeing the rows before it, and its writers take turns.
Existing events are counted once here.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BOUNCES = "('bounced_hard', 'bounced_soft')"

_PG_LOCKS = """
  PERFORM pg_advisory_xact_lock(p.edition_id, p.subscriber_id) FROM (
    SELECT DISTINCT edition_id, subscriber_id FROM new_rows
    WHERE edition_id IS NOT NULL AND subscriber_id IS NOT NULL ORDER BY 1, 2) AS p;"""


def _pg_first(table: str, what: str, extra: str, where: str) -> str:
    """People (edition, person) of this statement's rows with no earlier event like them: one
    per person however many rows of the statement are alike."""
    return (
        f"SELECT DISTINCT n.edition_id, n.subscriber_id, {what} AS what FROM new_rows AS n "
        f"WHERE n.edition_id IS NOT NULL AND n.subscriber_id IS NOT NULL AND {where} "
        f"AND NOT EXISTS (SELECT 1 FROM {table} AS e WHERE e.subscriber_id = n.subscriber_id "
        f"AND e.edition_id = n.edition_id AND {extra} "
        "AND e.id NOT IN (SELECT id FROM new_rows))"
    )


def _pg_function(name: str, firsts: list[str]) -> str:
    return f"""
CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN{_PG_LOCKS}
  INSERT INTO editionreport AS t (edition_id, what, shard, n)
  SELECT f.edition_id, f.what, pg_backend_pid(), count(*) FROM (
    {" UNION ALL ".join(firsts)}
  ) AS f GROUP BY f.edition_id, f.what
  ON CONFLICT (edition_id, what, shard) DO UPDATE SET n = t.n + excluded.n;
  RETURN NULL;
END $$
"""


_UNSUBSCRIBED = "n.kind = 'unsubscribed'"
_PG_FUNCTIONS = [
    _pg_function(
        "mailevent_report",
        [
            _pg_first("mailevent", "n.kind", "e.kind = n.kind", "TRUE"),
            _pg_first("mailevent", "'bounced'", f"e.kind IN {_BOUNCES}", f"n.kind IN {_BOUNCES}"),
        ],
    ),
    _pg_function(
        "subscriptionevent_report",
        [
            _pg_first(
                "subscriptionevent", "'unsubscribed'", "e.kind = 'unsubscribed'", _UNSUBSCRIBED
            ),
            _pg_first(
                "subscriptionevent",
                "'unsubscribed:' || n.source",
                "e.kind = 'unsubscribed' AND e.source = n.source",
                _UNSUBSCRIBED,
            ),
        ],
    ),
    "CREATE TRIGGER mailevent_report AFTER INSERT ON mailevent REFERENCING NEW TABLE AS "
    "new_rows FOR EACH STATEMENT EXECUTE FUNCTION mailevent_report()",
    "CREATE TRIGGER subscriptionevent_report AFTER INSERT ON subscriptionevent REFERENCING NEW "
    "TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION subscriptionevent_report()",
]


def _sqlite_trigger(name: str, table: str, when: str, what: str) -> str:
    return (
        f"CREATE TRIGGER {name} AFTER INSERT ON {table} WHEN {when} BEGIN "
        "INSERT INTO editionreport (edition_id, what, shard, n) "
        f"VALUES (new.edition_id, {what}, 0, 1) "
        "ON CONFLICT (edition_id, what, shard) DO UPDATE SET n = n + 1; END"
    )


def _first(table: str, extra: str) -> str:
    return (
        f"NOT EXISTS (SELECT 1 FROM {table} AS e WHERE e.subscriber_id = new.subscriber_id "
        f"AND e.edition_id = new.edition_id AND e.id <> new.id AND {extra})"
    )


_MAIL = "new.edition_id IS NOT NULL AND new.subscriber_id IS NOT NULL"
_UNSUB = "new.edition_id IS NOT NULL AND new.kind = 'unsubscribed'"
_SQLITE_TRIGGERS = [
    _sqlite_trigger(
        "mailevent_report",
        "mailevent",
        f"{_MAIL} AND {_first('mailevent', 'e.kind = new.kind')}",
        "new.kind",
    ),
    _sqlite_trigger(
        "mailevent_report_bounced",
        "mailevent",
        f"{_MAIL} AND new.kind IN {_BOUNCES} AND {_first('mailevent', f'e.kind IN {_BOUNCES}')}",
        "'bounced'",
    ),
    _sqlite_trigger(
        "subscriptionevent_report",
        "subscriptionevent",
        _UNSUB + " AND " + _first("subscriptionevent", "e.kind = 'unsubscribed'"),
        "'unsubscribed'",
    ),
    _sqlite_trigger(
        "subscriptionevent_report_source",
        "subscriptionevent",
        _UNSUB
        + " AND "
        + _first("subscriptionevent", "e.kind = 'unsubscribed' AND e.source = new.source"),
        "'unsubscribed:' || new.source",
    ),
]

#: The existing events, each person once per edition and kind (NULL people are not counted).
_BACKFILL = [
    "SELECT edition_id AS e, kind AS w, count(DISTINCT subscriber_id) AS k FROM mailevent "
    "WHERE edition_id IS NOT NULL AND subscriber_id IS NOT NULL GROUP BY edition_id, kind",
    "SELECT edition_id AS e, 'bounced' AS w, count(DISTINCT subscriber_id) AS k FROM mailevent "
    f"WHERE edition_id IS NOT NULL AND subscriber_id IS NOT NULL AND kind IN {_BOUNCES} "
    "GROUP BY edition_id",
    "SELECT edition_id AS e, 'unsubscribed' AS w, count(DISTINCT subscriber_id) AS k "
    "FROM subscriptionevent WHERE edition_id IS NOT NULL AND kind = 'unsubscribed' "
    "GROUP BY edition_id",
    "SELECT edition_id AS e, 'unsubscribed:' || source AS w, count(DISTINCT subscriber_id) AS k "
    "FROM subscriptionevent WHERE edition_id IS NOT NULL AND kind = 'unsubscribed' "
    "GROUP BY edition_id, source",
]


def upgrade() -> None:
    op.create_table(
        "editionreport",
        sa.Column("edition_id", sa.Integer(), nullable=False),
        sa.Column("what", sa.String(length=64), nullable=False),
        sa.Column("shard", sa.Integer(), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["edition_id"], ["edition.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("edition_id", "what", "shard"),
    )
    for rows in _BACKFILL:
        op.execute(
            "INSERT INTO editionreport (edition_id, what, shard, n) "
            f"SELECT c.e, c.w, 0, c.k FROM ({rows}) AS c"
        )
    statements = _PG_FUNCTIONS if op.get_bind().dialect.name == "postgresql" else _SQLITE_TRIGGERS
    for statement in statements:
        op.execute(statement)


def downgrade() -> None:
    pg = op.get_bind().dialect.name == "postgresql"
    for name, table in (
        ("mailevent_report", "mailevent"),
        ("mailevent_report_bounced", "mailevent"),
        ("subscriptionevent_report", "subscriptionevent"),
        ("subscriptionevent_report_source", "subscriptionevent"),
    ):
        op.execute(f"DROP TRIGGER IF EXISTS {name}" + (f" ON {table}" if pg else ""))
    if pg:
        op.execute("DROP FUNCTION IF EXISTS mailevent_report()")
        op.execute("DROP FUNCTION IF EXISTS subscriptionevent_report()")
    op.drop_table("editionreport")
