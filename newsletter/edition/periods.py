"""The one naming of an edition's period, for every path that drafts one.

A manual ``edition draft``, ``schedule run-now`` and the scheduler all ask :func:`period_for`
(or, knowing the occurrence already, :func:`period_of`), so they name the same edition the
same way and find each other's draft instead of making a second one with the same
comparisons. With a schedule, an edition is named by the ISO week of its *send date* (the
occurrence in play at that moment) and carries what was published since the previous edition's
period ended; without one, by the local week that contains the moment, the week it carries.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func
from sqlmodel import Session, col, select

from newsletter.edition.timing import Period, WeeklyRule, local_wave, parse_rule, week_containing
from newsletter.storage.models import Edition, EditionStatus, Newsletter, Schedule

#: How late a send may still go out (a scheduler restarting, a machine waking up).
GRACE = timedelta(hours=6)
#: The first wave of local-time delivery: 09:00 happens first at UTC+14 (Etc/GMT-14).
EARLIEST_ZONE = "Etc/GMT-14"


@dataclass(frozen=True, slots=True)
class Occurrence:
    """One scheduled send of one newsletter, with the times that matter for it."""

    schedule: Schedule
    newsletter: Newsletter
    rule: WeeklyRule
    send_at: datetime  # the rule's time in the newsletter's zone (UTC)
    start_at: datetime  # when sending starts: send_at, or the first local-time wave
    draft_at: datetime
    key: str


def rule_of(schedule: Schedule) -> WeeklyRule:
    """The weekly rule a stored schedule sends by (its weekday, time and zone)."""
    return parse_rule(
        f"{('Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat', 'Sun')[schedule.weekday]} "
        f"{schedule.send_time}",
        schedule.timezone,
    )


def occurrence(schedule: Schedule, newsletter: Newsletter, send_at: datetime) -> Occurrence:
    rule = rule_of(schedule)
    start_at = send_at
    if schedule.local_time:
        local_day = send_at.astimezone(rule.zone).date()
        start_at = min(send_at, local_wave(local_day, rule.at, EARLIEST_ZONE))
    draft_at = start_at - timedelta(minutes=schedule.draft_lead_minutes)
    return Occurrence(schedule, newsletter, rule, send_at, start_at, draft_at, rule.key(send_at))


def current(schedule: Schedule, newsletter: Newsletter, now: datetime) -> Occurrence:
    """The occurrence in play at ``now``: the first whose send time is at most GRACE ago."""
    return occurrence(schedule, newsletter, rule_of(schedule).next_at_or_after(now - GRACE))


def next_times(schedule: Schedule, newsletter: Newsletter, now: datetime) -> Occurrence:
    """The next occurrence whose send time is still ahead (for ``schedule list``)."""
    return occurrence(schedule, newsletter, rule_of(schedule).next_at_or_after(now))


def period_of(session: Session, occ: Occurrence, *, end: datetime | None = None) -> Period:
    """Since the previous edition's period ended, up to the draft time (or ``end``)."""
    previous_end = session.exec(
        select(func.max(Edition.period_end)).where(
            Edition.newsletter_id == occ.newsletter.id,
            Edition.period_key != occ.key,
            # What went out (or is going): a cancelled edition's comparisons are still unsent.
            col(Edition.status).in_(
                [EditionStatus.sending, EditionStatus.paused, EditionStatus.sent]
            ),
        )
    ).one()
    lead = occ.send_at - (end if end is not None else occ.draft_at)
    return occ.rule.period(occ.send_at, lead=lead, previous_end=previous_end)


def schedule_of(session: Session, newsletter: Newsletter) -> Schedule | None:
    return session.exec(select(Schedule).where(Schedule.newsletter_id == newsletter.id)).first()


@dataclass(frozen=True, slots=True)
class NamedPeriod:
    period: Period
    #: The scheduled send this edition is for (None: the newsletter has no schedule).
    send_at: datetime | None


def period_for(session: Session, newsletter: Newsletter, at: datetime) -> NamedPeriod:
    """The period an edition drafted at ``at`` carries, named as every path names it.

    With a schedule: the occurrence in play at ``at`` (the next send, or one less than
    :data:`GRACE` ago), carrying what was published since the previous edition, up to ``at``.
    Without: the newsletter's local week containing ``at``.
    """
    schedule = schedule_of(session, newsletter)
    if schedule is None:
        return NamedPeriod(week_containing(at, newsletter.timezone), None)
    occ = current(schedule, newsletter, at)
    return NamedPeriod(period_of(session, occ, end=at), occ.send_at)
