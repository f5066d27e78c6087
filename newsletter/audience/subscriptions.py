"""Joining, confirming, leaving and coming back: the rules, with an event row for each change.

The web pages and the webhooks call these; they never change a subscription themselves. Every
change of status writes a :class:`~newsletter.storage.models.SubscriptionEvent` (kind and source,
and the edition whose link was used), so a report can say which edition made people leave.

Suppression is per address, not per list: an address that left everything, hard-bounced or
complained is never mailed again, whatever list it is imported into later (imports skip
suppressed addresses; the send's audience and every batch exclude them; the subscribe form
sends them nothing). Only the person can lift a suppression they caused by leaving
everything, with the resubscribe button of one of their own signed links; a bounce or a
complaint is never lifted by the engine. Each change of suppression is an event too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import case, delete, exists, func, or_, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from newsletter.audience.addresses import AddressError, check_name, normalize_email
from newsletter.errors import NewsletterError
from newsletter.storage import store
from newsletter.storage.models import (
    Delivery,
    MailEvent,
    Newsletter,
    Subscriber,
    Subscription,
    SubscriptionEvent,
    SubscriptionStatus,
    erased_key,
    utcnow,
)

#: At most one confirmation email per address in this time, however often the form is sent.
CONFIRM_INTERVAL = timedelta(hours=1)
#: The window of the per-address weekly cap (``Settings.confirm_limit`` emails in it).
CONFIRM_WINDOW = timedelta(days=7)
#: The window of the site-wide ceiling (``Settings.signup_limit`` confirmations in it).
SIGNUP_WINDOW = timedelta(hours=1)

UNSUBSCRIBED_ALL = "unsubscribed_all"
BOUNCED = "bounced"
COMPLAINED = "complained"
#: Suppressions only the engine's own evidence sets and nothing lifts.
PERMANENT = frozenset({BOUNCED, COMPLAINED})


class FormError(NewsletterError, ValueError):
    """One field of a form is unusable: ``field`` names it, the message says why."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class SignupsFull(RuntimeError):
    """The site sent its hour's ceiling of confirmation emails: new signups wait.

    The ceiling is about the sender's reputation, not about one address, so saying so reveals
    nothing about who is on the list.
    """


@dataclass(frozen=True, slots=True)
class SignupLimits:
    """How many confirmation emails the form may cause (from the settings)."""

    per_address_week: int = 3
    per_hour: int = 1000


def signups_full(session: Session, *, now: datetime, limits: SignupLimits) -> bool:
    """True when ``limits.per_hour`` confirmations went out in the last hour (site-wide)."""
    sent = session.exec(
        select(func.count())
        .select_from(Subscriber)
        .where(col(Subscriber.confirm_sent_at) > now - SIGNUP_WINDOW)
    ).one()
    return int(sent) >= limits.per_hour


class CannotResubscribe(RuntimeError):
    """The address is suppressed for a reason the person can't lift (bounce, complaint)."""


@dataclass(frozen=True, slots=True)
class Signup:
    email: str
    email_key: str
    name: str | None
    newsletter_ids: tuple[int, ...]


def parse_signup(
    *, email: str, name: str | None, slugs: Sequence[str], newsletters: Mapping[str, Newsletter]
) -> Signup:
    """Validate a subscribe form; :class:`FormError` names the first bad field."""
    try:
        address, key = normalize_email(email)
    except AddressError as exc:
        raise FormError("email", str(exc)) from None
    try:
        clean_name = check_name(name)
    except AddressError as exc:
        raise FormError("name", str(exc)) from None
    if clean_name is not None and any(c in clean_name for c in "<>"):
        raise FormError("name", "must not contain < or >")
    chosen = list(dict.fromkeys(slugs)) or (list(newsletters)[:1] if len(newsletters) == 1 else [])
    if not chosen:
        raise FormError("newsletters", "choose at least one newsletter")
    unknown = [s for s in chosen if s not in newsletters]
    if unknown:
        raise FormError("newsletters", "unknown newsletter")
    ids = tuple(newsletters[s].id or 0 for s in chosen)
    return Signup(address, key, clean_name, ids)


def request_signup(
    session: Session,
    signup: Signup,
    *,
    now: datetime,
    limits: SignupLimits | None = None,
) -> int | None:
    """Record a signup as pending subscriptions; the subscriber id to send a confirmation to.

    None when no email should go: every chosen list is already active, the address is
    permanently suppressed, a confirmation went out less than an hour ago, or the address had
    its ``limits.per_address_week`` confirmations this week. The caller shows the same page in
    every case, so the form reveals nothing about who is on the list.

    Raises :class:`SignupsFull`, storing nothing, when the site sent its hour's ceiling of
    confirmations: a flood of signups can't turn the sender into a spam cannon.
    """
    limits = limits or SignupLimits()
    if signups_full(session, now=now, limits=limits):
        raise SignupsFull("too many signups in the last hour")
    subscriber = _find_or_create(session, signup)
    assert subscriber.id is not None
    if subscriber.suppressed:
        # Never mailed again, not even a confirmation a stranger asked for; a person who left
        # everything comes back through the resubscribe button of one of their own links.
        return None
    current = {
        s.newsletter_id: s
        for s in session.exec(
            select(Subscription).where(Subscription.subscriber_id == subscriber.id)
        )
    }
    waiting = False
    for newsletter_id in signup.newsletter_ids:
        sub = current.get(newsletter_id)
        if sub is not None and sub.status == SubscriptionStatus.active:
            continue
        if sub is None:
            try:
                with session.begin_nested():  # another post for this address may race us
                    session.add(
                        Subscription(
                            subscriber_id=subscriber.id,
                            newsletter_id=newsletter_id,
                            status=SubscriptionStatus.pending,
                        )
                    )
            except IntegrityError:
                waiting = True
                continue
        elif sub.status != SubscriptionStatus.pending:
            sub.status = SubscriptionStatus.pending
            sub.updated_at = now
        else:
            waiting = True
            continue
        waiting = True
        store.record_event(
            session,
            subscriber_id=subscriber.id,
            newsletter_id=newsletter_id,
            kind="subscribed",
            source="form",
            detail="waiting for confirmation",
        )
    session.flush()
    if not waiting:
        return None
    # One conditional UPDATE, so two posts at once can't both win the hour's confirmation,
    # nor the week's last one. A window older than a week starts a new one.
    window_over = or_(
        col(Subscriber.confirm_window_at).is_(None),
        col(Subscriber.confirm_window_at) <= now - CONFIRM_WINDOW,
    )
    won = session.execute(
        update(Subscriber)
        .where(
            col(Subscriber.id) == subscriber.id,
            or_(
                col(Subscriber.confirm_sent_at).is_(None),
                col(Subscriber.confirm_sent_at) <= now - CONFIRM_INTERVAL,
            ),
            or_(window_over, col(Subscriber.confirm_count) < limits.per_address_week),
        )
        .values(
            confirm_sent_at=now,
            confirm_count=case((window_over, 1), else_=col(Subscriber.confirm_count) + 1),
            confirm_window_at=case((window_over, now), else_=col(Subscriber.confirm_window_at)),
        )
    )
    session.flush()
    return subscriber.id if getattr(won, "rowcount", 0) == 1 else None


def release_confirmation(session: Session, *, subscriber_id: int) -> None:
    """Give back the confirmation a failed send used: the hour's slot and one of the week's
    (the person can simply try again)."""
    session.execute(
        update(Subscriber)
        .where(col(Subscriber.id) == subscriber_id)
        .values(
            confirm_sent_at=None,
            confirm_count=case(
                (col(Subscriber.confirm_count) > 0, col(Subscriber.confirm_count) - 1),
                else_=0,
            ),
        )
    )
    session.flush()


def expire_pending(session: Session, *, now: datetime, keep_days: int) -> int:
    """Forget signups nobody confirmed within ``keep_days``; how many addresses were forgotten.

    A pending subscription older than that is deleted. Its subscriber goes too when nothing
    else holds it: no other subscription, no suppression (the suppression list must outlive
    everything), no delivery or provider report. A stranger's address typed into the form is
    personal data the engine has no consent to keep.
    """
    cutoff = now - timedelta(days=keep_days)
    stale_rows = select(Subscription.subscriber_id, Subscription.newsletter_id).where(
        Subscription.status == SubscriptionStatus.pending,
        col(Subscription.updated_at) < cutoff,
    )
    stale: dict[int, list[int]] = {}
    for subscriber_id, newsletter_id in session.exec(stale_rows).all():
        stale.setdefault(subscriber_id, []).append(newsletter_id)
    forgotten = 0
    ids = list(stale)
    for chunk in (ids[i : i + 500] for i in range(0, len(ids), 500)):
        session.execute(
            delete(Subscription).where(
                col(Subscription.subscriber_id).in_(chunk),
                col(Subscription.status) == SubscriptionStatus.pending.value,
                col(Subscription.updated_at) < cutoff,
            )
        )
        orphans = {
            int(sid)
            for sid in session.exec(
                select(Subscriber.id).where(
                    col(Subscriber.id).in_(chunk),
                    col(Subscriber.suppressed).is_(None),
                    ~exists().where(col(Subscription.subscriber_id) == Subscriber.id),
                    # Deliveries name their subscriber without a database key (migration
                    # 0022): this is what keeps every delivery's subscriber in place.
                    ~exists().where(col(Delivery.subscriber_id) == Subscriber.id),
                    ~exists().where(col(MailEvent.subscriber_id) == Subscriber.id),
                )
            ).all()
            if sid is not None
        }
        if orphans:
            session.execute(
                delete(SubscriptionEvent).where(col(SubscriptionEvent.subscriber_id).in_(orphans))
            )
            session.execute(delete(Subscriber).where(col(Subscriber.id).in_(orphans)))
            forgotten += len(orphans)
        for subscriber_id in set(chunk) - orphans:  # kept: say what happened to the signup
            for newsletter_id in stale[subscriber_id]:
                store.record_event(
                    session,
                    subscriber_id=subscriber_id,
                    newsletter_id=newsletter_id,
                    kind="expired",
                    source="engine",
                    detail=f"not confirmed within {keep_days} days",
                )
    session.flush()
    return forgotten


def _find_or_create(session: Session, signup: Signup) -> Subscriber:
    """The subscriber with this address, created if new; two requests racing to create the
    same address both end with the one row (the unique key decides, the loser re-reads)."""
    query = select(Subscriber).where(
        col(Subscriber.email_key).in_([signup.email_key, erased_key(signup.email_key)])
    )
    found = session.exec(query).first()
    if found is not None:
        return found  # an erased person is found by the hash, and is suppressed
    try:
        with session.begin_nested():
            created = Subscriber(email=signup.email, email_key=signup.email_key, name=signup.name)
            session.add(created)
        return created
    except IntegrityError:
        return session.exec(query).one()


def confirm(session: Session, *, subscriber_id: int) -> list[int]:
    """Activate the subscriber's pending subscriptions; the newsletter ids it activated.

    A suppressed address is never activated (the form sends it no link). Confirming twice
    changes nothing.
    """
    subscriber = session.get(Subscriber, subscriber_id)
    if subscriber is None:
        raise store.NotFound(f"subscriber {subscriber_id}")
    if subscriber.suppressed:
        return []
    pending = session.exec(
        select(Subscription).where(
            Subscription.subscriber_id == subscriber_id,
            Subscription.status == SubscriptionStatus.pending,
        )
    ).all()
    for sub in pending:
        sub.status = SubscriptionStatus.active
        sub.updated_at = utcnow()
        store.record_event(
            session,
            subscriber_id=subscriber_id,
            newsletter_id=sub.newsletter_id,
            kind="confirmed",
            source="form",
        )
    session.flush()
    return [s.newsletter_id for s in pending]


def unsubscribe(
    session: Session,
    *,
    subscriber_id: int,
    newsletter_id: int,
    edition_id: int | None,
    source: str,
    everything: bool = False,
) -> bool:
    """Leave one newsletter (or all, which also suppresses the address). Idempotent.

    True if something changed. A running send sees it at its next batch, because every
    batch re-reads subscription status and suppression right before sending.
    """
    subscriber = session.get(Subscriber, subscriber_id)
    if subscriber is None:
        raise store.NotFound(f"subscriber {subscriber_id}")
    changed = 0 < store.leave_lists(
        session,
        subscriber_id=subscriber_id,
        source=source,
        edition_id=edition_id,
        newsletter_id=None if everything else newsletter_id,
    )
    if everything and not subscriber.suppressed:
        subscriber.suppressed = UNSUBSCRIBED_ALL
        _suppression_event(
            session, subscriber_id, "suppressed", source, edition_id, UNSUBSCRIBED_ALL
        )
        changed = True
    session.flush()
    return changed


def resubscribe(
    session: Session, *, subscriber_id: int, newsletter_id: int, edition_id: int | None
) -> bool:
    """Undo an unsubscribe from a signed link ("unsubscribed by mistake?"). Idempotent."""
    subscriber = session.get(Subscriber, subscriber_id)
    if subscriber is None:
        raise store.NotFound(f"subscriber {subscriber_id}")
    if subscriber.suppressed in PERMANENT:
        raise CannotResubscribe(
            "this address can't receive our email any more (it bounced or reported spam)"
        )
    changed = subscriber.suppressed == UNSUBSCRIBED_ALL
    if changed:
        subscriber.suppressed = None
        _suppression_event(session, subscriber_id, "unsuppressed", "page", edition_id, None)
    sub = session.exec(
        select(Subscription).where(
            Subscription.subscriber_id == subscriber_id,
            Subscription.newsletter_id == newsletter_id,
        )
    ).first()
    if sub is None:
        session.add(
            Subscription(subscriber_id=subscriber_id, newsletter_id=newsletter_id, status="active")
        )
        store.record_event(
            session,
            subscriber_id=subscriber_id,
            newsletter_id=newsletter_id,
            kind="resubscribed",
            source="page",
            edition_id=edition_id,
        )
        changed = True
    elif sub.status != SubscriptionStatus.active:
        store.set_subscription_status(
            session,
            subscriber_id=subscriber_id,
            newsletter_id=newsletter_id,
            status=SubscriptionStatus.active,
            source="page",
            edition_id=edition_id,
        )
        changed = True
    session.flush()
    return changed


def suppress(
    session: Session,
    *,
    subscriber_id: int,
    reason: str,
    source: str,
    edition_id: int | None = None,
) -> bool:
    """Never mail this address again (``reason``: bounced or complained); leave every list.

    True if the address was not suppressed for this reason before.
    """
    subscriber = session.get(Subscriber, subscriber_id)
    if subscriber is None:
        raise store.NotFound(f"subscriber {subscriber_id}")
    if subscriber.suppressed == reason:
        return False
    subscriber.suppressed = reason
    _suppression_event(session, subscriber_id, "suppressed", source, edition_id, reason)
    store.leave_lists(session, subscriber_id=subscriber_id, source=source, edition_id=edition_id)
    session.flush()
    return True


def _suppression_event(
    session: Session,
    subscriber_id: int,
    kind: str,
    source: str,
    edition_id: int | None,
    reason: str | None,
) -> None:
    """A change of the address's suppression, for every list (no newsletter)."""
    store.record_event(
        session,
        subscriber_id=subscriber_id,
        newsletter_id=None,
        kind=kind,
        source=source,
        edition_id=edition_id,
        detail=reason,
    )


def newsletters_of(session: Session, *, subscriber_id: int) -> list[tuple[Newsletter, str]]:
    """Every newsletter the subscriber has a subscription row for, with its status."""
    rows = session.exec(
        select(Newsletter, Subscription.status)
        .join(Subscription, col(Subscription.newsletter_id) == Newsletter.id)
        .where(Subscription.subscriber_id == subscriber_id)
        .order_by(col(Newsletter.name))
    ).all()
    return [(n, status) for n, status in rows]
