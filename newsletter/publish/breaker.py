"""The reputation breaker as the application runs it: limits from the settings, bounce and
complaint reports applied and guarded in one place, and the alert to the people in charge.

Every path that learns of a bounce or complaint (provider webhooks, bounce reports over SMTP
or from a mailbox, 5xx answers at send time) goes through :func:`take`, so the same reports
are counted the same way and trip the same breaker.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from datetime import datetime

from sqlmodel import Session, col, select

from newsletter.backends import backend_from_url
from newsletter.config import Settings
from newsletter.feedback import bounces
from newsletter.operations.alerts import build_breaker_alert
from newsletter.publish.approval import editors_required
from newsletter.sending import reputation
from newsletter.storage.models import Edition, Newsletter, User
from newsletter.webhooks.base import ProviderEvent

log = logging.getLogger(__name__)


def limits_for(settings: Settings) -> reputation.Thresholds:
    return reputation.Thresholds(
        complaint_rate=settings.complaint_rate_limit,
        bounce_rate=settings.bounce_rate_limit,
        min_sample=settings.breaker_min_sample,
    )


def take(
    session: Session, settings: Settings, events: Sequence[ProviderEvent], *, now: datetime
) -> tuple[Counter[str], list[reputation.Trip]]:
    """Apply ``events`` (see :func:`newsletter.feedback.bounces.apply_events`) and pause any sending
    edition they push over the limits. Commits; then alerts for each trip (a mail that can't
    be sent is logged: the pause stands and ``edition status`` shows its reason)."""
    touched: set[int] = set()
    outcome = bounces.apply_events(
        session, events, soft_limit=settings.soft_bounce_limit, touched=touched
    )
    trips = reputation.guard(session, edition_ids=touched, limits=limits_for(settings), now=now)
    session.commit()
    for trip in trips:
        alert(session, settings, trip)
    return outcome, trips


def alert_recipients(session: Session, edition: Edition) -> list[str]:
    """Console operators, admins and editors, and the schedule's editors: each once."""
    users = session.exec(
        select(User.email).where(
            col(User.disabled).is_(False), col(User.role).in_(["operator", "admin", "editor"])
        )
    ).all()
    schedule_editors = editors_required(session, edition) or []
    seen: dict[str, str] = {}
    for address in [*users, *schedule_editors]:
        seen.setdefault(address.lower(), address)
    return list(seen.values())


def alert(session: Session, settings: Settings, trip: reputation.Trip) -> bool:
    """Mail the trip to :func:`alert_recipients`; True if a message was handed over."""
    edition = session.get(Edition, trip.edition_id)
    newsletter = session.get(Newsletter, edition.newsletter_id) if edition else None
    if edition is None or newsletter is None:
        return False
    log.warning("edition %s: %s", trip.edition_id, trip.reason)
    to = alert_recipients(session, edition)
    if not to:
        return False
    messages = build_breaker_alert(settings, newsletter, edition, trip.reason, to)
    try:
        with backend_from_url(settings.mail_backend) as backend:
            results = backend.send_messages(messages)
    except Exception as exc:  # the pause stands; `edition status` shows its reason
        log.warning("breaker alert for edition %s not sent: %s", trip.edition_id, type(exc))
        return False
    return any(r.status.delivered for r in results)
