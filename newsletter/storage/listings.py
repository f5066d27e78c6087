"""The read-only lists and lookups that the entry points show: pages, console tables, CLI lists.

Apart from :mod:`newsletter.storage.store` (the pipeline's queries, which change things) so
that the CLI, the web app and the long-running service run no query of their own (a test
reads their source to keep it so): what a page shows is asked for here by name, and one
place decides its order and its limit. Functions take the session and keyword-only
arguments, only read, and return model rows (the caller renders them).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Literal

from sqlalchemy import or_
from sqlmodel import Session, col, select

from newsletter.storage.models import (
    Comparison,
    Delivery,
    Edition,
    EditionStatus,
    Newsletter,
    Subscriber,
    Subscription,
    SubscriptionEvent,
    SubscriptionStatus,
)

# --- newsletters ---------------------------------------------------------------------------


def newsletters(session: Session, *, by: Literal["name", "slug"] = "name") -> list[Newsletter]:
    """Every newsletter, by name (what a reader picks from) or slug (what an operator types)."""
    order = col(Newsletter.name) if by == "name" else col(Newsletter.slug)
    return list(session.exec(select(Newsletter).order_by(order)).all())


def newsletter_exists(session: Session, *, slug: str) -> bool:
    return session.exec(select(Newsletter.id).where(Newsletter.slug == slug)).first() is not None


# --- editions ------------------------------------------------------------------------------


def all_editions(session: Session) -> list[Edition]:
    """Every edition, oldest first (``edition list``)."""
    return list(session.exec(select(Edition).order_by(col(Edition.id))).all())


def recent_editions(
    session: Session,
    *,
    limit: int,
    newsletter_id: int | None = None,
    with_cancelled: bool = True,
) -> list[Edition]:
    """The latest editions by period (of one newsletter, or all), newest first."""
    query = select(Edition)
    if newsletter_id is not None:
        query = query.where(Edition.newsletter_id == newsletter_id)
    if not with_cancelled:
        query = query.where(Edition.status != EditionStatus.cancelled)
    query = query.order_by(col(Edition.period_start).desc(), col(Edition.id).desc())
    return list(session.exec(query.limit(limit)).all())


def archived_editions(
    session: Session, *, statuses: Collection[EditionStatus], limit: int
) -> list[Edition]:
    """Editions in ``statuses`` (the public archive's), the latest send first."""
    return list(
        session.exec(
            select(Edition)
            .where(col(Edition.status).in_([s.value for s in statuses]))
            .order_by(col(Edition.send_started_at).desc())
            .limit(limit)
        ).all()
    )


def latest_sent_edition_id(session: Session, *, newsletter_id: int) -> int | None:
    """The newsletter's most recent sent edition (by period), for a welcome email's link."""
    return session.exec(
        select(Edition.id)
        .where(Edition.newsletter_id == newsletter_id, Edition.status == EditionStatus.sent)
        .order_by(col(Edition.period_start).desc())
        .limit(1)
    ).first()


def newest_comparison_date(session: Session) -> datetime | None:
    """When the newest comparison was published (the demo drafts that week)."""
    return session.exec(
        select(Comparison.published_at).order_by(col(Comparison.published_at).desc()).limit(1)
    ).first()


# --- subscribers ---------------------------------------------------------------------------


def search_subscribers(session: Session, *, text: str, limit: int = 50) -> list[Subscriber]:
    """Subscribers whose address or name contains ``text`` (case-insensitive), by address.
    ``%`` and ``_`` in ``text`` match literally."""
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    like = f"%{escaped}%"
    return list(
        session.exec(
            select(Subscriber)
            .where(
                or_(
                    col(Subscriber.email_key).like(like, escape="\\"),
                    col(Subscriber.name).ilike(like, escape="\\"),
                )
            )
            .order_by(col(Subscriber.email_key))
            .limit(limit)
        ).all()
    )


def subscriber_events(
    session: Session, *, subscriber_id: int, newest_first: bool, limit: int | None = None
) -> Sequence[SubscriptionEvent]:
    """A person's subscription history: every join, confirmation and departure."""
    order = col(SubscriptionEvent.id).desc() if newest_first else col(SubscriptionEvent.id)
    query = (
        select(SubscriptionEvent)
        .where(SubscriptionEvent.subscriber_id == subscriber_id)
        .order_by(order)
    )
    return session.exec(query if limit is None else query.limit(limit)).all()


def subscriber_deliveries(
    session: Session, *, subscriber_id: int, limit: int
) -> Sequence[Delivery]:
    """A person's latest deliveries, newest first."""
    return session.exec(
        select(Delivery)
        .where(Delivery.subscriber_id == subscriber_id)
        .order_by(col(Delivery.id).desc())
        .limit(limit)
    ).all()


def active_subscribers(session: Session, *, newsletter_id: int) -> Sequence[Subscriber]:
    """Who an edition of the newsletter would go to now: active and not suppressed, by id."""
    return session.exec(
        select(Subscriber)
        .join(Subscription, col(Subscription.subscriber_id) == Subscriber.id)
        .where(
            Subscription.newsletter_id == newsletter_id,
            Subscription.status == SubscriptionStatus.active,
            col(Subscriber.suppressed).is_(None),
        )
        .order_by(col(Subscriber.id))
    ).all()
