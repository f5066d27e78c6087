"""The delivery ledger: one Delivery row per (edition, subscriber), the only place they change.

The unique key on (edition_id, subscriber_id) is what makes a send never mail anyone twice: the
audience is written once when the send starts, and a delivery leaves ``pending`` only after
the backend answered for it (unlike listmonk, which moves its checkpoint when a batch is
fetched and so skips recipients after a crash).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Table, bindparam, func, text, update
from sqlmodel import Session, col, select

from newsletter.models import Delivery, DeliveryStatus, UTCDateTime, utcnow

#: Deliveries a send still has to attempt.
OPEN_STATUSES = (DeliveryStatus.pending.value, DeliveryStatus.deferred.value)


def open_deliveries(session: Session, *, edition_id: int, newsletter_id: int) -> int:
    """Write a pending delivery for everyone active on the newsletter now; returns the count.

    One INSERT ... SELECT, so a million subscribers never pass through Python. People who join
    later wait for the next edition; rows that already exist are left alone.
    """
    result = session.execute(
        text(
            """
            INSERT INTO delivery (edition_id, subscriber_id, status, attempts)
            SELECT :edition_id, s.subscriber_id, 'pending', 0
            FROM subscription AS s
            JOIN subscriber AS r ON r.id = s.subscriber_id
            WHERE s.newsletter_id = :newsletter_id
              AND s.status = 'active'
              AND r.suppressed IS NULL
              AND NOT EXISTS (
                  SELECT 1 FROM delivery AS d
                  WHERE d.edition_id = :edition_id AND d.subscriber_id = s.subscriber_id
              )
            ORDER BY s.subscriber_id
            """
        ),
        {"edition_id": edition_id, "newsletter_id": newsletter_id},
    )
    return int(getattr(result, "rowcount", 0) or 0)


@dataclass(frozen=True, slots=True)
class OpenDelivery:
    id: int
    subscriber_id: int
    email: str
    name: str | None
    still_subscribed: bool  # re-checked right before sending: unsubscribes take effect now


def next_batch(
    session: Session, *, edition_id: int, newsletter_id: int, after_id: int, limit: int
) -> list[OpenDelivery]:
    """The next ``limit`` open deliveries with id > ``after_id`` (keyset pagination)."""
    rows = session.execute(
        text(
            """
            SELECT d.id, d.subscriber_id, r.email, r.name,
                   CASE WHEN s.status = 'active' AND r.suppressed IS NULL THEN 1 ELSE 0 END
            FROM delivery AS d
            JOIN subscriber AS r ON r.id = d.subscriber_id
            LEFT JOIN subscription AS s
                   ON s.subscriber_id = d.subscriber_id AND s.newsletter_id = :newsletter_id
            WHERE d.edition_id = :edition_id
              AND d.status IN ('pending', 'deferred')
              AND d.id > :after_id
            ORDER BY d.id
            LIMIT :limit
            """
        ),
        {
            "edition_id": edition_id,
            "newsletter_id": newsletter_id,
            "after_id": after_id,
            "limit": limit,
        },
    ).all()
    return [OpenDelivery(r[0], r[1], r[2], r[3], bool(r[4])) for r in rows]


@dataclass(frozen=True, slots=True)
class Outcome:
    delivery_id: int
    status: DeliveryStatus
    code: int | None = None
    detail: str | None = None
    message_id: str | None = None
    provider_message_id: str | None = None


_DELIVERY: Table = Delivery.__table__  # type: ignore[attr-defined]
_RECORD = (
    update(_DELIVERY)
    .where(_DELIVERY.c.id == bindparam("b_id"))
    .values(
        status=bindparam("b_status"),
        error_code=bindparam("b_code"),
        error_text=bindparam("b_text"),
        message_id=bindparam("b_message_id"),
        provider_message_id=bindparam("b_provider_id"),
        attempts=_DELIVERY.c.attempts + bindparam("b_tried"),
        updated_at=bindparam("b_now", type_=UTCDateTime()),
    )
)


def record(session: Session, *, outcomes: Sequence[Outcome]) -> None:
    """Store what the backend answered: one executemany for the whole batch."""
    if not outcomes:
        return
    now = utcnow()
    ok = (DeliveryStatus.sent, DeliveryStatus.queued)
    session.execute(
        _RECORD,
        [
            {
                "b_id": o.delivery_id,
                "b_status": o.status.value,
                "b_code": None if o.status in ok else o.code,
                "b_text": None if o.status in ok else (o.detail or "")[:1000] or None,
                "b_message_id": o.message_id,
                "b_provider_id": o.provider_message_id,
                "b_tried": 0 if o.status == DeliveryStatus.skipped else 1,
                "b_now": now,
            }
            for o in outcomes
        ],
    )


def counts(session: Session, *, edition_id: int) -> dict[str, int]:
    """Deliveries of an edition by status (every status present, zero if none)."""
    found = dict(
        session.exec(
            select(Delivery.status, func.count())
            .where(Delivery.edition_id == edition_id)
            .group_by(col(Delivery.status))
        ).all()
    )
    return {s.value: int(found.get(s.value, 0)) for s in DeliveryStatus}
