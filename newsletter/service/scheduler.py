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
from datetime import datetime, timedelta

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from newsletter import publish, writers
from newsletter.audience import subscriptions
from newsletter.backends import MailBackend
from newsletter.clock import Clock, fixed_clock
from newsletter.config import Settings
from newsletter.edition.periods import (
    GRACE,
    Occurrence,
    current,
    occurrence,
    period_of,
    rule_of,
)
from newsletter.operations import schedules
from newsletter.operations.schedules import active_schedules
from newsletter.publish import senders
from newsletter.storage import store
from newsletter.storage.database import connection_lost, reset_session
from newsletter.storage.models import Edition, EditionStatus, Newsletter, Schedule
from newsletter.writers.suggestions import suggest_recorded

log = logging.getLogger(__name__)


def tick(
    session: Session,
    settings: Settings,
    *,
    now: datetime,
    clock: Clock | None = None,
    make_backend: Callable[[], MailBackend] | None = None,
) -> list[str]:
    """Do what is due at ``now`` for every schedule; one line per thing done.

    With ``make_backend`` it also sends what it started (one pass; ``newsletter worker``
    processes may share the work); without, it only starts editions for the workers. The send
    pass reads ``clock`` (the runner passes the real one: a long pass must see time move); by
    default it stays at ``now``.
    """
    clock = clock or fixed_clock(now)
    done: list[str] = _forget_unconfirmed(session, settings, now)
    for schedule, newsletter in active_schedules(session):
        if schedule.paused:
            continue
        try:
            done += _step(session, settings, current(schedule, newsletter, now), now, make_backend)
            done += _late_approvals(session, settings, newsletter, now)
        except Exception as exc:  # one newsletter's trouble must not stop the others
            reset_session(session)
            if connection_lost(exc) is not None:
                raise  # no newsletter can go on: the caller waits the outage out
            log.exception("schedule %s: tick failed", newsletter.slug)
            done.append(f"{newsletter.slug}: failed (see the log)")
    if make_backend is not None:
        done += _continue_sends(session, settings, make_backend, clock)
    return done


def _forget_unconfirmed(session: Session, settings: Settings, now: datetime) -> list[str]:
    """Signups nobody confirmed in ``pending_days`` are deleted (they hold personal data)."""
    try:
        forgotten = subscriptions.expire_pending(session, now=now, keep_days=settings.pending_days)
        session.commit()
    except Exception as exc:  # housekeeping must never stop a send
        reset_session(session)
        if connection_lost(exc) is not None:
            raise
        log.exception("forgetting unconfirmed signups failed")
        return ["unconfirmed signups: failed (see the log)"]
    if not forgotten:
        return []
    return [f"forgot {forgotten} unconfirmed signups older than {settings.pending_days} days"]


def _late_approvals(
    session: Session, settings: Settings, newsletter: Newsletter, now: datetime
) -> list[str]:
    """Drafts whose own send time has come outside the occurrence :func:`_step` looks at:
    approved late (even days late: an approval means "send it"), or moved by an operator to
    a time before the schedule's draft time or past its grace window. A draft that waits for
    approval stays held; one whose time passed more than :data:`GRACE` ago unapproved is left
    for ``schedule list`` to report, as a missed send is."""
    done = []
    assert newsletter.id is not None
    for edition in store.drafts_due(session, newsletter_id=newsletter.id, now=now, grace=GRACE):
        if publish.awaiting_approval(session, edition) is not None or _skipped(
            session, newsletter, edition.period_key
        ):
            continue
        try:
            added = publish.start_edition(
                session, edition_id=edition.id or 0, settings=settings, actor="scheduler", now=now
            )
        except publish.EditionStateError as exc:  # e.g. edited after its approval: held
            log.warning("%s %s: %s", newsletter.slug, edition.period_key, exc)
            done.append(f"{newsletter.slug} {edition.period_key}: {exc}")
            continue
        if added:
            done.append(
                f"{newsletter.slug} {edition.period_key}: started "
                f"{'approved ' if edition.approved_at else ''}edition {edition.id} "
                f"for {added} subscribers"
            )
    return done


def _continue_sends(
    session: Session, settings: Settings, make_backend: Callable[[], MailBackend], clock: Clock
) -> list[str]:
    """One send pass over every edition still sending (later local-time waves, retries that
    came due, a send a restart interrupted), so a scheduler without workers finishes them."""
    done = []
    count, processes = senders.layout(None, settings.senders, make_backend())
    for edition_id in publish.sending_editions(session):
        try:
            report = publish.send_edition(
                session,
                edition_id=edition_id,
                settings=settings,
                backend=make_backend,
                options=publish.SendOptions(concurrency=count, processes=processes, clock=clock),
            )
        except publish.EditionStateError:
            continue  # paused or cancelled meanwhile
        except Exception as exc:
            reset_session(session)
            if connection_lost(exc) is not None:
                raise
            log.exception("edition %s: send pass failed", edition_id)
            continue
        if report.run.attempted:
            state = publish.state_line(report.edition.status, report.totals, None)
            extra = "".join(
                f"; {label} {n}"
                for label, n in (
                    ("taken over by another sender", report.run.taken_over),
                    ("answers not recorded", report.run.unrecorded),
                )
                if n
            )
            done.append(f"edition {edition_id}: sent {report.run.sent} ({state}){extra}")
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
        done += _suggest(session, settings, edition, now, f"{slug} {occ.key}")
        if edition.alerted_at is not None:
            done.append(f"{slug} {occ.key}: edition {edition.id} held; editors alerted")
    start_at, send_at = occ.start_at, occ.send_at
    if edition.scheduled_for is not None and edition.scheduled_for != occ.send_at:
        # An operator moved this edition's send time: the waves shift with it.
        send_at = edition.scheduled_for
        start_at = send_at - (occ.send_at - occ.start_at)
    if now < start_at:
        return done
    if edition.status == EditionStatus.draft:
        if publish.awaiting_approval(session, edition) is not None:
            # Editors were alerted when the draft was made; this covers a draft made before its
            # schedule required approval (still once: alerted_at).
            if publish.alert_editors(session, settings, edition, now):
                done.append(f"{slug} {occ.key}: edition {edition.id} held; editors alerted")
            return done
        local = None
        if occ.schedule.local_time:
            at = send_at.astimezone(occ.rule.zone)
            local = (at.date(), at.time() if send_at != occ.send_at else occ.rule.at)
        try:
            added = publish.start_edition(
                session,
                edition_id=edition.id or 0,
                settings=settings,
                local_time=local,
                actor="scheduler",
                now=now,
            )
        except publish.EditionStateError as exc:  # e.g. edited after its approval: held
            log.warning("%s %s: %s", slug, occ.key, exc)
            return [*done, f"{slug} {occ.key}: {exc}"]
        if added:
            done.append(f"{slug} {occ.key}: started edition {edition.id} for {added} subscribers")
        session.refresh(edition)
    return done


def _suggest(
    session: Session, settings: Settings, edition: Edition, now: datetime, label: str
) -> list[str]:
    """With a model writer chosen, the new draft's suggestions are written now, so editors
    find them waiting; a writer that can't run costs a line in the log, and the rules'
    verdicts stand (nothing is sent that an editor did not accept)."""
    name = writers.name_for(settings, session.get(Newsletter, edition.newsletter_id))
    if name == "rules":
        return []
    try:
        report = suggest_recorded(
            session,
            edition_id=edition.id or 0,
            writer=writers.make_writer(settings, name),
            budget=settings.writer_budget,
            now=now,
            actor="scheduler",
            intro_from=lambda: publish.edition_verdicts(
                session, edition=edition, settings=settings
            ),
        )
    except Exception as exc:
        reset_session(session)
        if connection_lost(exc) is not None:
            raise
        log.warning("%s: suggestions not written: %s", label, exc)
        return [f"{label}: suggestions not written ({exc}); the rules' verdicts stand"]
    fell_back = f", {len(report.notes)} fell back to the rules" if report.notes else ""
    return [
        f"{label}: {report.written} suggestions written by {name} "
        f"({report.tokens:,} tokens){fell_back}"
    ]


def _edition(session: Session, occ: Occurrence) -> Edition | None:
    return store.find_edition(session, newsletter_id=occ.newsletter.id or 0, period_key=occ.key)


def is_skipped(session: Session, occ: Occurrence) -> bool:
    return _skipped(session, occ.newsletter, occ.key)


def _skipped(session: Session, newsletter: Newsletter, period_key: str) -> bool:
    assert newsletter.id is not None
    return schedules.is_skipped(session, newsletter_id=newsletter.id, period_key=period_key)


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
