"""delivery: no database foreign keys on edition_id and subscriber_id

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-04 17:40:00

The start of a send writes one delivery per subscriber in one ``INSERT … SELECT``. With the
two foreign keys, PostgreSQL ran two checks per inserted row (2,000,000 trigger calls for a
million subscribers), and the subscriber check took a key-share lock in every subscriber row:
a write to each of their pages, WAL-logged (a full page image each, after a checkpoint).
Measured at 1,000,000 subscribers after a checkpoint (``bench/audience_fix.py``): 12.7 s with
both keys, 8.7 s without the subscriber's, 5.8 s without either.

What the keys guarded is kept by the engine, which is the only writer of these rows: a
delivery is only ever inserted by that statement, which reads the subscriber and the edition
it names in the same statement; editions are never deleted; the one place that deletes
subscribers (unconfirmed sign-ups past their time) deletes only those with no delivery. A
delivery whose subscriber is gone all the same is skipped by a send, never stuck.

SQLite: removing a foreign key changes nothing on disk, so the table's definition is edited in
``sqlite_schema`` as SQLite documents for exactly this change (section 7 of "ALTER TABLE"),
which keeps the table, its rows, its indexes and its triggers; rebuilding it would copy every
delivery and drop the counters' triggers.
"""

import re
from collections.abc import Sequence

from alembic import op

from newsletter.errors import NewsletterError

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_REFERENCES = (
    ("edition_id", "edition"),
    ("subscriber_id", "subscriber"),
)


class UnexpectedDefinition(NewsletterError):
    """delivery's stored definition is not one this migration knows (edited by hand)."""


def _unexpected(what: str) -> UnexpectedDefinition:
    return UnexpectedDefinition(
        f"table delivery: {what} (changed by hand?); nothing was changed. Put back the "
        "definition the previous migration left, then run `newsletter db upgrade` again"
    )


def _sqlite_clause(column: str, table: str) -> str:
    return f", \n\tFOREIGN KEY({column}) REFERENCES {table} (id)"


def _sqlite_pattern(column: str, table: str) -> re.Pattern[str]:
    """The clause as any SQLAlchemy version may have written it (spacing, quoting)."""
    return re.compile(
        rf',\s*FOREIGN KEY\s*\(\s*"?{column}"?\s*\)\s*REFERENCES\s*"?{table}"?\s*'
        rf'\(\s*"?id"?\s*\)',
        re.IGNORECASE,
    )


def _sqlite_rewrite(remove: bool) -> None:
    """Remove (or put back) the two clauses in delivery's ``CREATE TABLE`` text, by SQLite's
    documented procedure for changes that leave the stored rows as they are."""
    conn = op.get_bind()
    (sql,) = conn.exec_driver_sql(
        "SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = 'delivery'"
    ).one()
    changed = sql
    for column, table in _REFERENCES:
        pattern = _sqlite_pattern(column, table)
        if remove:
            changed = pattern.sub("", changed)
        elif not pattern.search(changed):
            unique = re.search(r",\s*UNIQUE\s*\(", changed)
            if unique is None:
                raise _unexpected("its definition has no UNIQUE clause to put the keys before")
            at = unique.start()
            changed = changed[:at] + _sqlite_clause(column, table) + changed[at:]
    if changed == sql:
        return
    if remove and "FOREIGN KEY" in changed:
        raise _unexpected("its definition has a foreign key this migration does not know")
    (version,) = conn.exec_driver_sql("PRAGMA schema_version").one()
    conn.exec_driver_sql("PRAGMA writable_schema = ON")
    conn.exec_driver_sql(
        "UPDATE sqlite_schema SET sql = ? WHERE type = 'table' AND name = 'delivery'",
        (changed,),
    )
    conn.exec_driver_sql(f"PRAGMA schema_version = {int(version) + 1}")
    conn.exec_driver_sql("PRAGMA writable_schema = OFF")
    (check,) = conn.exec_driver_sql("PRAGMA quick_check").one()
    if check != "ok":  # the edit is rolled back with the migration's transaction
        raise _unexpected(f"SQLite's check after editing its definition says {check!r}")


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _sqlite_rewrite(remove=True)
        return
    conn = op.get_bind()
    for column, _ in _REFERENCES:
        # PostgreSQL's own name for each key (0001 named none); gone already, it stays gone.
        conn.exec_driver_sql(
            f"ALTER TABLE delivery DROP CONSTRAINT IF EXISTS delivery_{column}_fkey"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _sqlite_rewrite(remove=False)
        return
    for column, table in _REFERENCES:
        op.create_foreign_key(f"delivery_{column}_fkey", "delivery", table, [column], ["id"])
