"""Delivery rows don't have to last forever: prune the ledger of finished editions and keep
their figures.

Every edition adds one ``Delivery`` row per recipient, 52 million a year for a weekly list of
a million. Once an edition is done (sent or cancelled) and older than the retention, its rows
answer no question an operator still asks except "how many were sent, failed, skipped", so
:func:`prune` writes those counts to :class:`~newsletter.storage.models.EditionTotals` first, then
deletes the rows in batches (short transactions: a send running beside it is not blocked for
long). Provider reports keep their edition (their ``delivery_id`` is cleared), subscription
events keep theirs, so bounces, complaints and unsubscribes per edition are unchanged;
``ledger.counts`` and the stats read the kept counts for a pruned edition.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, or_, update
from sqlmodel import Session, col, select

from newsletter.storage.bulk import chunks
from newsletter.storage.models import (
    FINAL_STATUSES,
    Delivery,
    Edition,
    EditionStatus,
    EditionTotals,
    MailEvent,
)

#: Rows deleted per transaction.
BATCH = 20_000
#: Editions whose rows may go: nothing will ever send them again.
FINISHED = (EditionStatus.sent.value, EditionStatus.cancelled.value)


@dataclass(frozen=True, slots=True)
class PruneReport:
    editions: int
    rows: int


def prunable(session: Session, *, older_than: datetime) -> list[int]:
    """Finished editions that started before ``older_than`` and still have rows in a final
    state."""
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
        and session.exec(
            select(Delivery.id).where(
                Delivery.edition_id == edition_id, col(Delivery.status).in_(FINAL)
            )
        ).first()
    ]


#: Final states: rows in them will never be sent again. A row a retry re-queued meanwhile
#: (pending) is not deleted, whatever the edition's status said a moment before.
FINAL = FINAL_STATUSES


def prune(session: Session, *, older_than: datetime, now: datetime) -> PruneReport:
    """Delete the delivery rows of each prunable edition, adding what each batch deleted to
    its kept counts in the same transaction; commits per batch.

    So a prune stopped at any point (Ctrl-C, a crash) leaves counts and rows consistent, and
    running it again only adds the rows it deletes then. Reports pointing at a batch's rows
    lose the link in that same transaction (one that arrived a moment ago included)."""
    editions = prunable(session, older_than=older_than)
    rows = 0
    for edition_id in editions:
        while True:
            batch = (
                session.execute(
                    select(Delivery.id)
                    .where(Delivery.edition_id == edition_id, col(Delivery.status).in_(FINAL))
                    .limit(BATCH)
                )
                .scalars()
                .all()
            )
            if not batch:
                break
            deleted: Counter[str] = Counter()
            for ids in chunks(batch, ID_CHUNK):
                session.execute(
                    update(MailEvent)
                    .where(col(MailEvent.delivery_id).in_(ids))
                    .values(delivery_id=None)
                )
                deleted.update(
                    session.execute(
                        delete(Delivery)
                        .where(col(Delivery.id).in_(ids), col(Delivery.status).in_(FINAL))
                        .returning(col(Delivery.status))
                    ).scalars()
                )
            _keep(session, edition_id, deleted, now)
            session.commit()
            rows += sum(deleted.values())
            if not deleted:
                break  # everything left was re-queued meanwhile: not ours to delete
    return PruneReport(len(editions), rows)


#: Ids per IN list (SQLite's parameter limit).
ID_CHUNK = 5_000


def _keep(session: Session, edition_id: int, deleted: Counter[str], now: datetime) -> None:
    """Add ``deleted`` to the edition's kept counts (created on the first batch)."""
    kept = session.get(EditionTotals, edition_id)
    counts = dict(deleted)
    if kept is None:
        kept = EditionTotals(edition_id=edition_id, counts="{}", pruned_rows=0, pruned_at=now)
        session.add(kept)
    else:
        for state, n in kept.by_state.items():
            counts[state] = counts.get(state, 0) + n
    kept.counts = json.dumps(counts, sort_keys=True)
    kept.pruned_rows += sum(deleted.values())
    kept.pruned_at = now


def delivery_rows(session: Session) -> int:
    """How many delivery rows the ledger holds (for the command's report)."""
    return int(session.exec(select(func.count()).select_from(Delivery)).one())
