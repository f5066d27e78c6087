"""The weekly schedule: one idempotent step (:func:`tick`) and the process that runs it.

``tick(now)`` looks at every schedule and does whatever is due at ``now``: assemble the
period's draft once its draft time has come, and start (and send) it once its send time has
come, unless it waits for an editor's approval. Everything it does is keyed by the database's
unique (newsletter, period) key and by conditional updates, so running it twice, from two
scheduler processes started by mistake, or again after a restart, never creates or sends an
edition twice. The clock is a parameter, so tests drive a whole month, a daylight-saving change
included, in milliseconds.

A send missed while no scheduler ran is caught up when one starts again, up to
:data:`GRACE` after its time (APScheduler's misfire grace time for the exact-time jobs is the
same); an older one is reported by ``schedule list`` and can be sent with ``run-now``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from newsletter import publish, store
from newsletter.alerts import build_approval_alert
from newsletter.backends import MailBackend, backend_from_url
from newsletter.config import Settings
from newsletter.models import Edition, EditionStatus, Newsletter, Schedule, ScheduleSkip, utcnow
from newsletter.schedules import active_schedules, rule_of
from newsletter.selection import Period
from newsletter.timing import WeeklyRule, local_wave

log = logging.getLogger(__name__)

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


def tick(
    session: Session,
    settings: Settings,
    *,
    now: datetime | None = None,
    make_backend: Callable[[], MailBackend] | None = None,
) -> list[str]:
    """Do what is due at ``now`` for every schedule; one line per thing done.

    With ``make_backend`` it also sends what it started (one pass; ``newsletter worker``
    processes may share the work); without, it only starts editions for the workers.
    """
    now = now or utcnow()
    done: list[str] = []
    for schedule, newsletter in active_schedules(session):
        if schedule.paused:
            continue
        try:
            done += _step(session, settings, current(schedule, newsletter, now), now, make_backend)
            done += _late_approvals(session, settings, newsletter, now)
        except Exception:  # one newsletter's trouble must not stop the others
            session.rollback()
            log.exception("schedule %s: tick failed", newsletter.slug)
            done.append(f"{newsletter.slug}: failed (see the log)")
    if make_backend is not None:
        done += _continue_sends(session, settings, make_backend)
    return done


def _late_approvals(
    session: Session, settings: Settings, newsletter: Newsletter, now: datetime
) -> list[str]:
    """Approved drafts whose send time has passed (approved late, even days late): an
    approval means "send it", so they start now rather than wait for nothing."""
    done = []
    for edition in session.exec(
        select(Edition).where(
            Edition.newsletter_id == newsletter.id,
            Edition.status == EditionStatus.draft,
            col(Edition.approved_at).is_not(None),
            col(Edition.scheduled_for).is_not(None),
            col(Edition.scheduled_for) <= now,
        )
    ).all():
        added = publish.start_edition(
            session, edition_id=edition.id or 0, settings=settings, actor="scheduler"
        )
        if added:
            done.append(
                f"{newsletter.slug} {edition.period_key}: started approved edition {edition.id} "
                f"for {added} subscribers"
            )
    return done


def _continue_sends(
    session: Session, settings: Settings, make_backend: Callable[[], MailBackend]
) -> list[str]:
    """One send pass over every edition still sending (later local-time waves, retries that
    came due, a send a restart interrupted), so a scheduler without workers finishes them."""
    done = []
    for edition_id in publish.sending_editions(session):
        try:
            report = publish.send_edition(
                session, edition_id=edition_id, settings=settings, make_backend=make_backend
            )
        except publish.EditionStateError:
            continue  # paused or cancelled meanwhile
        except Exception:
            session.rollback()
            log.exception("edition %s: send pass failed", edition_id)
            continue
        if report.run.attempted:
            done.append(f"edition {edition_id}: sent {report.run.sent} ({report.edition.status})")
    return done


def _step(
    session: Session,
    settings: Settings,
    occ: Occurrence,
    now: datetime,
    make_backend: Callable[[], MailBackend] | None,
) -> list[str]:
    slug = occ.newsletter.slug
    if now < occ.draft_at or is_skipped(session, occ):
        return []
    edition = _edition(session, occ)
    done: list[str] = []
    if edition is None:
        edition = _draft(session, settings, occ, now)
        if edition is None:
            # Said once, at the send time, not on every tick until the grace time ends.
            due = occ.start_at <= now < occ.start_at + timedelta(minutes=1)
            return [f"{slug} {occ.key}: nothing new to send"] if due else []
        done.append(f"{slug} {occ.key}: drafted edition {edition.id}")
    if now < occ.start_at:
        return done
    if edition.status == EditionStatus.draft:
        if occ.schedule.approval_required and edition.approved_at is None:
            if edition.alerted_at is None and _alert_editors(session, settings, occ, edition):
                done.append(f"{slug} {occ.key}: edition {edition.id} held; editors alerted")
            return done
        local = None
        if occ.schedule.local_time:
            local = (occ.send_at.astimezone(occ.rule.zone).date(), occ.rule.at)
        added = publish.start_edition(
            session,
            edition_id=edition.id or 0,
            settings=settings,
            local_time=local,
            actor="scheduler",
        )
        if added:
            done.append(f"{slug} {occ.key}: started edition {edition.id} for {added} subscribers")
        session.refresh(edition)
    return done


def _edition(session: Session, occ: Occurrence) -> Edition | None:
    return store.find_edition(session, newsletter_id=occ.newsletter.id or 0, period_key=occ.key)


def is_skipped(session: Session, occ: Occurrence) -> bool:
    return (
        session.exec(
            select(ScheduleSkip.id).where(
                ScheduleSkip.newsletter_id == occ.newsletter.id,
                ScheduleSkip.period_key == occ.key,
            )
        ).first()
        is not None
    )


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


def _draft(session: Session, settings: Settings, occ: Occurrence, now: datetime) -> Edition | None:
    """Assemble the period's draft once; None when nothing new was published. A second
    scheduler racing to draft the same period loses on the unique key and reads the winner's."""
    try:
        outcome = publish.draft_edition(
            session,
            settings=settings,
            newsletter_slug=occ.newsletter.slug,
            at=now,
            period=period_of(session, occ),
            scheduled_for=occ.send_at,
        )
    except publish.EmptyWeek:
        return None
    except IntegrityError:
        session.rollback()
        return _edition(session, occ)
    return outcome.edition


def _alert_editors(session: Session, settings: Settings, occ: Occurrence, edition: Edition) -> bool:
    """Tell the editors once that the edition waits for approval; True if this call did.

    The conditional UPDATE makes "once" hold with two schedulers."""
    claimed = session.execute(
        update(Edition)
        .where(col(Edition.id) == edition.id, col(Edition.alerted_at).is_(None))
        .values(alerted_at=utcnow())
    )
    session.commit()
    if getattr(claimed, "rowcount", 0) != 1:
        return False
    editors = [e for e in occ.schedule.editors.split(",") if e]
    messages = build_approval_alert(settings, occ.newsletter, edition, editors)
    try:
        with backend_from_url(settings.mail_backend) as backend:
            backend.send_messages(messages)
    except Exception as exc:  # the hold stands; the operator sees it in `schedule list`
        log.warning("approval alert for edition %s not sent: %s", edition.id, type(exc).__name__)
    return True


def next_times(schedule: Schedule, newsletter: Newsletter, now: datetime) -> Occurrence:
    """The next occurrence whose send time is still ahead (for ``schedule list``)."""
    return occurrence(schedule, newsletter, rule_of(schedule).next_at_or_after(now))


def missed(
    session: Session, schedule: Schedule, newsletter: Newsletter, now: datetime
) -> str | None:
    """The period key of the last occurrence if it went by without an edition or a skip."""
    rule = rule_of(schedule)
    last = rule.previous(rule.next_at_or_after(now))
    if last >= now - GRACE or last < schedule.updated_at:  # not due yet, or before the schedule
        return None
    occ = occurrence(schedule, newsletter, last)
    if _edition(session, occ) is not None or is_skipped(session, occ):
        return None
    return occ.key
