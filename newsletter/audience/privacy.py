"""A person's data on request, and erasure, as privacy law requires.

``person_data`` gathers everything stored about one subscriber (profile, subscriptions,
every event, deliveries, provider reports) as plain JSON values. ``erase`` removes the
personal data and keeps only what stops the address coming back: the subscriber row stays
(deliveries and events point at it) with the address replaced by the SHA-256 of its lower-
cased form under ``email_key`` (``erased:<hex>``), no name, no time zone, suppressed as
``erased``; provider reports lose their address the same way. Imports and the subscribe form
look the hash up too (``store.subscribers_by_key``, ``subscriptions``), so nobody re-adds an
erased person by accident.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlmodel import Session, col, select

from newsletter.storage import store
from newsletter.storage.models import (
    ERASED,
    Delivery,
    MailEvent,
    Newsletter,
    Subscriber,
    Subscription,
    SubscriptionEvent,
    erased_key,
)


def person_data(session: Session, *, subscriber_id: int) -> dict[str, Any]:
    """Everything stored about one subscriber, as JSON-ready values."""
    person = session.get(Subscriber, subscriber_id)
    if person is None:
        raise store.NotFound(f"subscriber {subscriber_id}")
    slugs = {n.id: n.slug for n in session.exec(select(Newsletter)).all()}
    return {
        "subscriber": {
            "email": person.email,
            "name": person.name,
            "timezone": person.timezone,
            "suppressed": person.suppressed,
            "created_at": person.created_at.isoformat(),
        },
        "subscriptions": [
            {
                "newsletter": slugs.get(s.newsletter_id),
                "status": s.status,
                "since": s.created_at.isoformat(),
                "updated_at": s.updated_at.isoformat(),
            }
            for s in session.exec(
                select(Subscription).where(Subscription.subscriber_id == subscriber_id)
            )
        ],
        "events": [
            {
                "at": e.created_at.isoformat(),
                "kind": e.kind,
                "source": e.source,
                "newsletter": slugs.get(e.newsletter_id),
                "edition": e.edition_id,
                "detail": e.detail,
            }
            for e in session.exec(
                select(SubscriptionEvent)
                .where(SubscriptionEvent.subscriber_id == subscriber_id)
                .order_by(col(SubscriptionEvent.id))
            )
        ],
        "deliveries": [
            {
                "edition": d.edition_id,
                "status": d.status,
                "at": d.updated_at.isoformat() if d.updated_at else None,
            }
            for d in session.exec(select(Delivery).where(Delivery.subscriber_id == subscriber_id))
        ],
        "provider_reports": [
            {"at": m.occurred_at.isoformat(), "kind": m.kind, "provider": m.provider}
            for m in session.exec(select(MailEvent).where(MailEvent.subscriber_id == subscriber_id))
        ],
    }


def erase(session: Session, *, subscriber_id: int, now: datetime, source: str) -> None:
    """Remove the person's data, keep a hashed suppression (see the module docstring)."""
    person = session.get(Subscriber, subscriber_id)
    if person is None:
        raise store.NotFound(f"subscriber {subscriber_id}")
    if person.suppressed == ERASED:
        return
    hashed = erased_key(person.email_key)
    store.leave_lists(session, subscriber_id=subscriber_id, source=source)
    session.execute(
        update(MailEvent)
        .where(col(MailEvent.subscriber_id) == subscriber_id)
        .values(email_key=hashed)
    )
    session.execute(
        update(SubscriptionEvent)
        .where(col(SubscriptionEvent.subscriber_id) == subscriber_id)
        .values(detail=None)
    )
    person.email = hashed[:320]
    person.email_key = hashed
    person.name = None
    person.timezone = None
    person.suppressed = ERASED
    store.record_event(
        session, subscriber_id=subscriber_id, newsletter_id=None, kind="erased", source=source
    )
    session.flush()
