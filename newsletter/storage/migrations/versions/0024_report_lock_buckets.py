"""editionreport: the report triggers lock one of 256 buckets per person, not each person

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-05 20:00:00

Migration 0021's PostgreSQL triggers take a transaction-scoped advisory lock on each
(edition, person) of the statement before they look for earlier events. Every advisory lock
takes a slot of the server's shared lock table (``max_locks_per_transaction`` times the
connections: 6,400 with the defaults), so one statement inserting about 20,000 report events
about different people failed with "out of shared memory". The lock now names one of 256
buckets that (edition, person) falls into: two reports about one person still meet on the
same lock, in the same order (so no deadlock), and a statement takes at most 256 locks,
whatever its size. Two statements about different people in one bucket now wait for each
other; they hold the lock only until they commit, and a webhook batch commits in
milliseconds.

The functions are changed in place: the old lock clause is replaced in their stored
definitions (``pg_get_functiondef``), so the counting itself stays as 0021 wrote it. SQLite
has no such locks (its writers take turns) and nothing changes there.
"""

from collections.abc import Sequence

from alembic import op
from sqlalchemy import text

from newsletter.errors import NewsletterError

revision: str = "0024"
down_revision: str | None = "0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: The first key of the two-key advisory lock: a class no (edition, person) pair of 0021's
#: locks can take (ids are positive), so a bucket never shares a lock with an old one.
_CLASS = -21

_EACH = """
  PERFORM pg_advisory_xact_lock(p.edition_id, p.subscriber_id) FROM (
    SELECT DISTINCT edition_id, subscriber_id FROM new_rows
    WHERE edition_id IS NOT NULL AND subscriber_id IS NOT NULL ORDER BY 1, 2) AS p;"""

#: 256 buckets. Which bucket mixes the edition in, so one person's reports about two editions
#: may take two, and consecutive ids spread over all of them.
_BUCKETS = f"""
  PERFORM pg_advisory_xact_lock({_CLASS}, p.bucket) FROM (
    SELECT DISTINCT ((edition_id::bigint * 40503 + subscriber_id) % 256)::int AS bucket
    FROM new_rows
    WHERE edition_id IS NOT NULL AND subscriber_id IS NOT NULL ORDER BY 1) AS p;"""

_FUNCTIONS = ("mailevent_report", "subscriptionevent_report")


class HandEditedFunction(NewsletterError):
    """A report function's lock clause is not the one this migration expects."""


def _swap(old: str, new: str) -> None:
    """Replace ``old`` by ``new`` in each report function's definition. Every definition is
    checked before any is changed: one without exactly one ``old`` (edited by hand) stops the
    migration with both functions as they were, rather than half-changed."""
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    definitions = [
        bind.execute(
            text("SELECT pg_get_functiondef(CAST(:f AS regproc))"), {"f": name}
        ).scalar_one()
        for name in _FUNCTIONS
    ]
    for name, definition in zip(_FUNCTIONS, definitions, strict=True):
        if definition.count(old) != 1:
            raise HandEditedFunction(
                f"database function {name}(): its lock clause is not the one migration 0021 "
                "wrote (changed by hand?); nothing was changed. Restore 0021's definition, "
                "then run `newsletter db upgrade` again"
            )
    for definition in definitions:
        bind.exec_driver_sql(definition.replace(old, new).replace("%", "%%"))


def upgrade() -> None:
    _swap(_EACH, _BUCKETS)


def downgrade() -> None:
    _swap(_BUCKETS, _EACH)
