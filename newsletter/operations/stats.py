"""Reports: what happened to each edition after it went out, and how the list grew each week.

Read-only, and a fixed number of queries whatever the data: the edition report is the list of
editions, the delivery counts (kept when an edition finished, else the counters the database
keeps: see :func:`newsletter.storage.counters.tallies`) and the people per report kind and
unsubscribe source (counters too: :mod:`newsletter.storage.counters`): neither deliveries nor
events are counted row by row, and none passes through Python. The growth report has the database
count events per UTC day (the one line that differs between SQLite and PostgreSQL, which share no
week function either) and folds the days into ISO weeks in Python: memory is a few counters per
day, not per event.
The formatters turn either kind of row into CSV, JSON or a plain terminal table.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Date, case, cast, func, or_
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from newsletter.sending.reputation import Reading
from newsletter.storage import counters
from newsletter.storage.models import (
    DeliveryStatus,
    Edition,
    EditionCounts,
    EditionStatus,
    EditionTotals,
    MailEventKind,
    Newsletter,
    Subscriber,
    Subscription,
    SubscriptionEvent,
)

#: Editions that reached the send: their numbers mean something (a draft has none).
STARTED = tuple(s.value for s in EditionStatus if s != EditionStatus.draft)
#: Accepted by the server or the API; what happens next is for the provider's reports to say.
ACCEPTED = (DeliveryStatus.sent.value, DeliveryStatus.queued.value)
#: Always a CSV column, so a spreadsheet's columns do not move from one export to the next.
UNSUBSCRIBE_SOURCES = ("one-click", "page", "complaint", "bounce", "operator", "all")
#: A ``subscribed`` event from these sources is active at once; a form waits for ``confirmed``.
IMMEDIATE_SOURCES = ("import", "operator")


@dataclass(frozen=True, slots=True)
class EditionStats:
    """One edition's numbers. Reports count distinct subscribers (providers report twice)."""

    edition_id: int
    newsletter_slug: str
    subject: str
    status: str
    send_started_at: datetime | None
    sent_at: datetime | None
    recipients: int  # deliveries, except the skipped (they left before their turn)
    sent: int  # sent + queued
    delivered: int
    failed: int
    bounced: int  # hard or soft, each subscriber once
    bounced_hard: int
    complaints: int
    unsubscribes: int  # via this edition's links, each subscriber once
    unsubscribe_rate: float  # unsubscribes / sent; 0 when nothing was sent
    unsubscribes_by_source: dict[str, int] = field(default_factory=dict)
    bounced_soft: int = 0
    #: What the reputation breaker reads (:mod:`newsletter.sending.reputation`): complaints per
    #: message accepted, hard bounces per message attempted (accepted or failed).
    complaint_rate: float = 0.0
    bounce_rate: float = 0.0


@dataclass(frozen=True, slots=True)
class WeekGrowth:
    """One ISO week (Monday 00:00 UTC onwards) of the list."""

    week: str  # "2026-W48"
    week_start: date
    joined: int
    left: int
    net: int
    active_at_end: int


def _started_ids(newsletter_id: int | None) -> Any:
    stmt = select(Edition.id).where(
        col(Edition.status).in_(STARTED), col(Edition.send_started_at).is_not(None)
    )
    return stmt if newsletter_id is None else stmt.where(Edition.newsletter_id == newsletter_id)


def _count_if(condition: Any) -> Any:
    return func.sum(case((condition, 1), else_=0))


# The selects below have five columns, more than sqlmodel's select() is typed for: they use
# SQLAlchemy's own. Each is one GROUP BY over an index on edition_id.


def _summary(by_state: Mapping[str, int]) -> tuple[int, int, int, int]:
    """(deliveries, skipped, accepted, failed) from counts by delivery state."""
    return (
        sum(by_state.values()),
        by_state.get(DeliveryStatus.skipped.value, 0),
        sum(by_state.get(s, 0) for s in ACCEPTED),
        by_state.get(DeliveryStatus.failed.value, 0),
    )


def _delivery_counts(session: Session, started: list[int]) -> dict[int, tuple[int, int, int, int]]:
    """edition -> (deliveries, skipped, accepted, failed), never by counting delivery rows.

    A finished edition's counts are read from :class:`EditionCounts` (taken when it
    finished); the others' from the counters the database keeps per edition and state
    (:func:`newsletter.storage.counters.tallies`: counting a 1M-row edition in flight took 165-239
    ms on PostgreSQL), plus the counts kept for rows pruned by
    :mod:`newsletter.operations.retention`.
    """
    found: dict[int, tuple[int, int, int, int]] = {}
    for settled in session.exec(
        select(EditionCounts).where(col(EditionCounts.edition_id).in_(started))
    ):
        found[settled.edition_id] = _summary(settled.by_state)
    unsettled = [i for i in started if i not in found]
    if not unsettled:
        return found
    live: dict[int, Counter[str]] = defaultdict(Counter)
    for edition_id, by_state in counters.tallies(session, unsettled).items():
        live[edition_id].update(by_state)
    for kept in session.exec(
        select(EditionTotals).where(col(EditionTotals.edition_id).in_(unsettled))
    ):
        live[kept.edition_id].update(kept.by_state)
    found.update({edition_id: _summary(c) for edition_id, c in live.items()})
    return found


def _provider_reports(
    reported: dict[int, dict[str, int]],
) -> dict[int, tuple[int, int, int, int, int]]:
    """edition -> (delivered, bounced hard or soft, bounced hard, complained, bounced soft),
    people once, from the counters the database keeps (:mod:`newsletter.storage.counters`)."""
    return {
        edition_id: (
            c.get(MailEventKind.delivered.value, 0),
            c.get("bounced", 0),
            c.get(MailEventKind.bounced_hard.value, 0),
            c.get(MailEventKind.complained.value, 0),
            c.get(MailEventKind.bounced_soft.value, 0),
        )
        for edition_id, c in reported.items()
    }


def _unsubscribes(
    reported: dict[int, dict[str, int]],
) -> tuple[dict[int, int], dict[int, dict[str, int]]]:
    """edition -> people who left through its links; and the same per source (one person may
    leave twice, a page and then a complaint: once in the total, once under each source)."""
    totals: dict[int, int] = {}
    by_source: dict[int, dict[str, int]] = defaultdict(dict)
    for edition_id, c in reported.items():
        for what, n in c.items():
            if what == "unsubscribed":
                totals[edition_id] = n
            elif what.startswith(counters.BY_SOURCE):
                by_source[edition_id][what.removeprefix(counters.BY_SOURCE)] = n
    return totals, by_source


def edition_stats(session: Session, *, newsletter_id: int | None = None) -> list[EditionStats]:
    """Every edition that started sending (of one newsletter, or all), oldest first."""
    started = _started_ids(newsletter_id)
    editions = session.exec(
        select(Edition, Newsletter.slug)
        .join(Newsletter, col(Newsletter.id) == Edition.newsletter_id)
        .where(col(Edition.id).in_(started))
        .order_by(col(Edition.send_started_at), col(Edition.id))
    ).all()
    if not editions:
        return []
    ids = [edition.id or 0 for edition, _ in editions]
    deliveries = _delivery_counts(session, ids)
    reported = counters.reports(session, ids)
    reports = _provider_reports(reported)
    unsubscribes, by_source = _unsubscribes(reported)
    rows = []
    for edition, slug in editions:
        eid = edition.id or 0
        total, skipped, sent, failed = deliveries.get(eid, (0, 0, 0, 0))
        delivered, bounced, bounced_hard, complaints, soft = reports.get(eid, (0, 0, 0, 0, 0))
        unsubscribed = unsubscribes.get(eid, 0)
        # The rates the breaker reads, by its own definition (newsletter.sending.reputation).
        reading = Reading(eid, sent + failed, sent, bounced_hard, complaints)
        rows.append(
            EditionStats(
                edition_id=eid,
                newsletter_slug=slug,
                subject=edition.subject,
                status=edition.status,
                send_started_at=edition.send_started_at,
                sent_at=edition.sent_at,
                recipients=total - skipped,
                sent=sent,
                delivered=delivered,
                failed=failed,
                bounced=bounced,
                bounced_hard=bounced_hard,
                complaints=complaints,
                unsubscribes=unsubscribed,
                unsubscribe_rate=unsubscribed / sent if sent else 0.0,
                unsubscribes_by_source=dict(sorted(by_source.get(eid, {}).items())),
                bounced_soft=soft,
                complaint_rate=reading.complaint_rate,
                bounce_rate=reading.bounce_rate,
            )
        )
    return rows


def week_start(moment: datetime | date) -> date:
    """The Monday of the ISO week containing ``moment`` (a datetime is taken in UTC)."""
    day = moment.astimezone(UTC).date() if isinstance(moment, datetime) else moment
    return day - timedelta(days=day.weekday())


def _utc_day(session: Session) -> Any:
    """An event's calendar day in UTC, as a date: SQL has no portable spelling of it."""
    created = col(SubscriptionEvent.created_at)
    if session.get_bind().dialect.name == "postgresql":
        return cast(func.timezone("UTC", created), Date)  # timestamptz: the session zone varies
    return func.date(created, type_=Date)  # SQLite stores UTC text, "2026-11-25 10:00:00"


def list_growth(
    session: Session,
    *,
    newsletter_id: int | None = None,
    until: datetime,
    weeks: int | None = None,
    today: bool = False,
) -> list[WeekGrowth]:
    """Joins and leaves per ISO week, from the first event's week to the week of ``until``.

    Joined: ``subscribed`` from an import or an operator, ``confirmed`` (a form's double
    opt-in), ``resubscribed``. Left: ``unsubscribed`` from any source, including suppressions
    (bounce, complaint). ``weeks`` keeps the last N rows; ``active_at_end`` always counts from
    the first event. Events after ``until`` are left out (the caller passes its clock's now).

    ``active_at_end``: with ``today`` (``until`` is the present: the CLI and the console),
    the real number of active subscriptions now, and for earlier weeks that number minus the
    later weeks' net (so the latest week matches ``newsletters list``); otherwise the running
    sum of joined minus left from the first event. Approximation, to keep memory at one
    counter per week instead of one per subscription: an event with no newsletter
    (it applies to all of them) counts once, against the newsletter asked for or against the
    total, whether or not the person was on it; a subscription made without an event (none is,
    outside tests and hand-written SQL) is not counted.
    """
    end = week_start(until) + timedelta(days=7)
    event = SubscriptionEvent
    days = sa_select(
        _utc_day(session).label("day"),
        col(event.kind).label("kind"),
        col(event.source).label("source"),
    ).where(
        col(event.kind).in_(("subscribed", "confirmed", "resubscribed", "unsubscribed")),
        col(event.created_at) < datetime.combine(end, datetime.min.time(), UTC),
    )
    if newsletter_id is not None:
        days = days.where(
            or_(col(event.newsletter_id) == newsletter_id, col(event.newsletter_id).is_(None))
        )
    # The database counts per day (a few rows per day however many events: 1,000,000 imports
    # took 5 s to stream into Python); Python folds days into weeks. Grouping the subquery's
    # columns, not the expression again, because PostgreSQL will not match an expression
    # whose bind parameters differ.
    per_day = days.subquery()
    joined: dict[date, int] = defaultdict(int)
    left: dict[date, int] = defaultdict(int)
    for day, kind, source, count in session.execute(
        sa_select(per_day.c.day, per_day.c.kind, per_day.c.source, func.count()).group_by(
            per_day.c.day, per_day.c.kind, per_day.c.source
        )
    ):
        monday = week_start(day)
        if kind == "unsubscribed":
            left[monday] += count
        elif kind != "subscribed" or source in IMMEDIATE_SOURCES:
            joined[monday] += count
    if not joined and not left:
        return []
    monday, rows, active = min(joined.keys() | left.keys()), [], 0
    while monday < end:
        net = joined.get(monday, 0) - left.get(monday, 0)
        active += net
        iso = monday.isocalendar()
        rows.append(
            WeekGrowth(
                f"{iso.year}-W{iso.week:02d}",
                monday,
                joined.get(monday, 0),
                left.get(monday, 0),
                net,
                active,
            )
        )
        monday += timedelta(days=7)
    if today and rows:
        # Anchor on today's real count, so the latest week always agrees with
        # `newsletters list` even when some subscriptions predate their events.
        active = _active_now(session, newsletter_id)
        for i in range(len(rows) - 1, -1, -1):
            rows[i] = replace(rows[i], active_at_end=active)
            active -= rows[i].net
    return rows[-weeks:] if weeks else rows


def _active_now(session: Session, newsletter_id: int | None) -> int:
    query = (
        sa_select(func.count())
        .select_from(Subscription)
        .join(Subscriber, col(Subscriber.id) == col(Subscription.subscriber_id))
        .where(col(Subscription.status) == "active", col(Subscriber.suppressed).is_(None))
    )
    if newsletter_id is not None:
        query = query.where(col(Subscription.newsletter_id) == newsletter_id)
    return int(session.execute(query).scalar_one())
