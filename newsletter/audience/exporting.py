"""Subscribers out, as the CSV that ``import subscribers`` reads (email, name, timezone,
newsletters), so a list moves between installations or into a spreadsheet and back.

Streamed: subscribers are read 10,000 at a time by id (keyset pagination) with their active
subscriptions, and written as they come, so a million-row list never sits in memory. Only
people who may be mailed are exported: suppressed addresses (bounced, complained, left every
list, erased) and people with no active subscription are left out. Values are written as
stored; a spreadsheet that evaluates a name starting with ``=`` as a formula is the
spreadsheet's to guard (quoting it would change the name on the way back in).
"""

from __future__ import annotations

import csv
from typing import TextIO

from sqlalchemy import text
from sqlmodel import Session

from newsletter.audience.importing import SUBSCRIBER_COLUMNS

PAGE = 10_000

_PAGE = text(
    """
    SELECT r.id, r.email, r.name, r.timezone FROM subscriber AS r
    WHERE r.id > :after AND r.suppressed IS NULL
    ORDER BY r.id LIMIT :limit
    """
)
_LISTS = text(
    """
    SELECT s.subscriber_id, n.slug FROM subscription AS s
    JOIN newsletter AS n ON n.id = s.newsletter_id
    WHERE s.subscriber_id >= :first AND s.subscriber_id <= :last AND s.status = 'active'
    ORDER BY s.subscriber_id, n.slug
    """
)


def export_subscribers(session: Session, out: TextIO, *, newsletter: str | None = None) -> int:
    """Write the CSV to ``out``; returns how many people it holds. With ``newsletter`` (a
    slug), only that list's active subscribers, and only that slug in their row."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(SUBSCRIBER_COLUMNS)
    after, written = 0, 0
    while True:
        people = session.execute(_PAGE, {"after": after, "limit": PAGE}).all()
        if not people:
            return written
        lists: dict[int, list[str]] = {}
        for subscriber_id, slug in session.execute(
            _LISTS, {"first": people[0][0], "last": people[-1][0]}
        ):
            if newsletter is None or slug == newsletter:
                lists.setdefault(subscriber_id, []).append(slug)
        for subscriber_id, email, name, timezone in people:
            slugs = lists.get(subscriber_id)
            if slugs:
                writer.writerow([email, name or "", timezone or "", " ".join(slugs)])
                written += 1
        after = people[-1][0]
