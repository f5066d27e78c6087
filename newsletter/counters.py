"""The per-edition report counters the database keeps (:class:`EditionReport`, migration
0021): people who got each kind of provider report and who left through an edition's links,
each person once. A few rows per edition, summed over shards, whatever the number of events.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func
from sqlalchemy import select as sa_select
from sqlmodel import Session, col

from newsletter.models import EditionReport

#: The prefix of a per-source unsubscribe counter: ``unsubscribed:one-click``.
BY_SOURCE = "unsubscribed:"


def reports(session: Session, edition_ids: Sequence[int]) -> dict[int, dict[str, int]]:
    """edition -> what (a report kind, ``bounced``, ``unsubscribed``, ``unsubscribed:<source>``)
    -> people, for ``edition_ids``; editions with none are absent."""
    if not edition_ids:
        return {}
    found: dict[int, dict[str, int]] = {}
    for edition_id, what, n in session.execute(
        sa_select(col(EditionReport.edition_id), col(EditionReport.what), func.sum(EditionReport.n))
        .where(col(EditionReport.edition_id).in_(edition_ids))
        .group_by(col(EditionReport.edition_id), col(EditionReport.what))
    ):
        if n:
            found.setdefault(edition_id, {})[what] = int(n)
    return found
