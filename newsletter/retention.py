"""Delivery rows don't have to last forever: prune the ledger of finished editions and keep
their figures.

Every edition adds one ``Delivery`` row per recipient, 52 million a year for a weekly list of
a million. Once an edition is done (sent or cancelled) and older than the retention, its rows
answer no question an operator still asks except "how many were sent, failed, skipped", so
:func:`prune` writes those counts to :class:`~newsletter.models.EditionTotals` first, then
deletes the rows in batches (short transactions: a send running beside it is not blocked for
long). Provider reports keep their edition (their ``delivery_id`` is cleared), subscription
events keep theirs, so bounces, complaints and unsubscribes per edition are unchanged;
``ledger.counts`` and the stats read the kept counts for a pruned edition.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, or_, text, update
from sqlmodel import Session, col, select

from newsletter import ledger
from newsletter.models import Delivery, Edition, EditionStatus, EditionTotals, MailEvent

#: Rows deleted per transaction.
BATCH = 20_000
#: Editions whose rows may go: nothing will ever send them again.
FINISHED = (EditionStatus.sent.value, EditionStatus.cancelled.value)


@dataclass(frozen=True, slots=True)
class PruneReport:
    editions: int
    rows: int


def prunable(session: Session, *, older_than: datetime) -> list[int]:
    """Finished editions that started before ``older_than`` and still have delivery rows."""
    finished = session.exec(
        select(Edition.id).where(
            col(Edition.status).in_(FINISHED),
            or_(
                col(Edition.sent_at) < older_than,
                col(Edition.sent_at).is_(None) & (col(Edition.send_started_at) < older_than),
            ),
        )
    ).all()
    return [
        edition_id
        for edition_id in finished
        if edition_id is not None
        and session.exec(select(Delivery.id).where(Delivery.edition_id == edition_id)).first()
    ]


def prune(session: Session, *, older_than: datetime, now: datetime) -> PruneReport:
    """Keep the counts of each prunable edition, then delete its delivery rows; commits."""
    editions = prunable(session, older_than=older_than)
    rows = 0
    for edition_id in editions:
        counts = ledger.counts(session, edition_id=edition_id, pruned=False)
        total = sum(counts.values())
        kept = session.get(EditionTotals, edition_id)
        if kept is None:
            session.add(
                EditionTotals(
                    edition_id=edition_id,
                    counts=json.dumps(counts, sort_keys=True),
                    pruned_rows=total,
                    pruned_at=now,
                )
            )
        else:  # rows added after an earlier prune (a retried failure): add them up
            merged = json.loads(kept.counts)
            for state, n in counts.items():
                merged[state] = merged.get(state, 0) + n
            kept.counts = json.dumps(merged, sort_keys=True)
            kept.pruned_rows += total
            kept.pruned_at = now
        session.execute(
            update(MailEvent)
            .where(col(MailEvent.edition_id) == edition_id)
            .values(delivery_id=None)
        )
        session.commit()  # the counts are safe before a single row goes
        while True:
            deleted = session.execute(
                text(
                    "DELETE FROM delivery WHERE id IN "
                    "(SELECT id FROM delivery WHERE edition_id = :e LIMIT :n)"
                ),
                {"e": edition_id, "n": BATCH},
            )
            session.commit()
            done = int(getattr(deleted, "rowcount", 0) or 0)
            rows += done
            if done < BATCH:
                break
    return PruneReport(len(editions), rows)


def kept_counts(session: Session, *, edition_id: int) -> dict[str, int] | None:
    """The counts kept for a pruned edition, or None."""
    kept = session.get(EditionTotals, edition_id)
    return None if kept is None else {k: int(v) for k, v in json.loads(kept.counts).items()}


def delivery_rows(session: Session) -> int:
    """How many delivery rows the ledger holds (for the command's report)."""
    return int(session.exec(select(func.count()).select_from(Delivery)).one())
