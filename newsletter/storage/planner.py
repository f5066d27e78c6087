"""The query planner's statistics, refreshed after bulk writes.

Kept apart from :mod:`newsletter.storage.database` (which imports Alembic, 300 modules) because
senders and importers call it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session

log = logging.getLogger(__name__)


#: Tables whose statistics a bulk write leaves stale (the only names ever interpolated below).
ANALYZABLE = frozenset({"subscriber", "subscription", "delivery"})


def refresh_statistics(session: Session, tables: Sequence[str]) -> None:
    """Bring the planner's statistics up to date after a bulk write the caller committed.

    PostgreSQL plans from statistics that autovacuum refreshes only after a delay: right
    after a 50,000-row import the audience fix ran on a plan made for empty tables and took
    78-96 s of CPU before the first message (1.9 s after ANALYZE). ``ANALYZE`` samples at most
    30,000 rows a table, so it costs well under a second at any size. SQLite gets ``PRAGMA
    optimize``, which analyzes only what changed enough to matter. Statistics are an
    optimization: a failure (no privilege) is logged, never raised."""
    unknown = set(tables) - ANALYZABLE
    if unknown:
        raise ValueError(f"not an analyzable table: {sorted(unknown)}")
    bind = session.get_bind()
    try:
        if bind.dialect.name == "postgresql":
            session.execute(text(f"ANALYZE {', '.join(sorted(set(tables)))}"))
        elif bind.dialect.name == "sqlite":
            session.execute(text("PRAGMA optimize"))
        session.commit()
    except DBAPIError as exc:
        session.rollback()
        log.warning("statistics not refreshed (%s): %s", ", ".join(tables), type(exc).__name__)
