"""The per-edition counters the database keeps, read: deliveries by state
(:class:`DeliveryTally`, migration 0020) and people per provider report kind and unsubscribe
source (:class:`EditionReport`, migration 0021). Triggers keep them as rows change; each is a
few rows per edition (one per shard), summed here, whatever the number of deliveries or
events.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func
from sqlalchemy import select as sa_select
from sqlmodel import Session, col

from newsletter.storage.models import DeliveryTally, EditionReport

#: The prefix of a per-source unsubscribe counter: ``unsubscribed:one-click``.
BY_SOURCE = "unsubscribed:"


def tallies(session: Session, edition_ids: Sequence[int]) -> dict[int, dict[str, int]]:
    """edition -> delivery state -> rows in it now, for ``edition_ids``. Equal to counting
    the rows, which a test checks after every kind of change on both databases."""
    return _summed(session, DeliveryTally, col(DeliveryTally.status), edition_ids)


def reports(session: Session, edition_ids: Sequence[int]) -> dict[int, dict[str, int]]:
    """edition -> what (a report kind, ``bounced``, ``unsubscribed``, ``unsubscribed:<source>``)
    -> people, for ``edition_ids``."""
    return _summed(session, EditionReport, col(EditionReport.what), edition_ids)


def _summed(
    session: Session, table: Any, key: Any, edition_ids: Sequence[int]
) -> dict[int, dict[str, int]]:
    """edition -> key -> the sum of ``n`` over shards; editions and keys at zero are absent."""
    if not edition_ids:
        return {}
    found: dict[int, dict[str, int]] = {}
    edition = col(table.edition_id)
    for edition_id, name, n in session.execute(
        sa_select(edition, key, func.sum(table.n))
        .where(edition.in_(edition_ids))
        .group_by(edition, key)
    ):
        if n:
            found.setdefault(edition_id, {})[name] = int(n)
    return found
