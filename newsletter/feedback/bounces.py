"""Act on what providers report after a message was accepted: bounces, complaints, deliveries.

Input is already verified and normalized by :mod:`newsletter.webhooks`. Each report is stored
once (a provider retrying a webhook is recognized by its event id), tied to the delivery it is
about (by the provider's message id, which the send stored), and acted on:

- a hard bounce or a complaint suppresses the address at once, on every list;
- a soft bounce counts; ``soft_limit`` of them in a row suppress the address as bounced;
- a delivery resets that count, so the bounces must be consecutive.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from newsletter.audience import subscriptions
from newsletter.storage.models import Delivery, Edition, MailEvent, MailEventKind, Subscriber
from newsletter.webhooks.base import ProviderEvent


def apply_events(
    session: Session,
    events: Sequence[ProviderEvent],
    *,
    soft_limit: int,
    touched: set[int] | None = None,
) -> Counter[str]:
    """Store and act on ``events``; counts by outcome ("duplicate", "unknown address", kinds).

    ``touched`` collects the editions whose bounce or complaint counts changed, for the
    reputation breaker (:mod:`newsletter.sending.reputation`). The caller commits. Each event runs
    in a savepoint, so a duplicate that races another request (unique key on provider and
    event id) is skipped without losing the others.
    """
    outcome: Counter[str] = Counter()
    for event in events:
        if _seen(session, event):
            outcome["duplicate"] += 1
            continue
        delivery = _delivery_for(session, event)
        subscriber = _subscriber_for(session, event, delivery)
        edition_id = delivery.edition_id if delivery else _edition_named(session, event)
        try:
            with session.begin_nested():
                session.add(
                    MailEvent(
                        provider=event.provider,
                        provider_event_id=event.event_id[:250],
                        kind=event.kind.value,
                        # A report may redact the address; the delivery it names does not.
                        email_key=(subscriber.email_key if subscriber else event.email.lower())[
                            :320
                        ],
                        subscriber_id=subscriber.id if subscriber else None,
                        delivery_id=delivery.id if delivery else None,
                        edition_id=edition_id,
                        detail=event.detail[:500] or None,
                        occurred_at=event.occurred_at,
                    )
                )
        except IntegrityError:
            outcome["duplicate"] += 1
            continue
        if touched is not None and edition_id is not None:
            touched.add(edition_id)
        if subscriber is None:
            outcome["unknown address"] += 1
            continue
        _act(session, event, subscriber, edition_id, soft_limit)
        outcome[event.kind.value] += 1
    session.flush()
    return outcome


def _seen(session: Session, event: ProviderEvent) -> bool:
    return (
        session.exec(
            select(MailEvent.id).where(
                MailEvent.provider == event.provider,
                MailEvent.provider_event_id == event.event_id[:250],
            )
        ).first()
        is not None
    )


def _delivery_for(session: Session, event: ProviderEvent) -> Delivery | None:
    if event.delivery is not None:
        return session.exec(
            select(Delivery).where(
                Delivery.edition_id == event.delivery.edition_id,
                Delivery.subscriber_id == event.delivery.subscriber_id,
            )
        ).first()
    if not event.provider_message_id:
        return None
    return session.exec(
        select(Delivery).where(Delivery.provider_message_id == event.provider_message_id)
    ).first()


def _subscriber_for(
    session: Session, event: ProviderEvent, delivery: Delivery | None
) -> Subscriber | None:
    if delivery is not None:
        return session.get(Subscriber, delivery.subscriber_id)
    if event.delivery is not None:
        # The signed return path names the person even when the edition's delivery rows
        # were pruned (newsletter.operations.retention): a complaint a week later still suppresses.
        return session.get(Subscriber, event.delivery.subscriber_id)
    if not event.match_email:
        return None
    return session.exec(
        select(Subscriber).where(Subscriber.email_key == event.email.lower())
    ).first()


def _edition_named(session: Session, event: ProviderEvent) -> int | None:
    """The edition a signed return path names, when its delivery row is gone (pruned)."""
    if event.delivery is None:
        return None
    edition = session.get(Edition, event.delivery.edition_id)
    return edition.id if edition is not None else None


def _act(
    session: Session,
    event: ProviderEvent,
    subscriber: Subscriber,
    edition_id: int | None,
    soft_limit: int,
) -> None:
    assert subscriber.id is not None
    kind = MailEventKind(event.kind.value)
    if kind == MailEventKind.delivered:
        session.execute(
            update(Subscriber).where(col(Subscriber.id) == subscriber.id).values(soft_bounces=0)
        )
    elif kind in (MailEventKind.bounced_hard, MailEventKind.complained):
        complaint = kind == MailEventKind.complained
        subscriptions.suppress(
            session,
            subscriber_id=subscriber.id,
            reason=subscriptions.COMPLAINED if complaint else subscriptions.BOUNCED,
            source="complaint" if complaint else "bounce",
            edition_id=edition_id,
        )
    elif kind == MailEventKind.bounced_soft:
        # One UPDATE: two soft bounces reported at once both count.
        session.execute(
            update(Subscriber)
            .where(col(Subscriber.id) == subscriber.id)
            .values(soft_bounces=Subscriber.soft_bounces + 1)
        )
        session.refresh(subscriber, ["soft_bounces"])
        if soft_limit and subscriber.soft_bounces >= soft_limit:
            subscriptions.suppress(
                session,
                subscriber_id=subscriber.id,
                reason=subscriptions.BOUNCED,
                source="bounce",
                edition_id=edition_id,
            )
