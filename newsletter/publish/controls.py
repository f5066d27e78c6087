"""What editors and operators do to an edition between drafting and the last delivery:
approve, pause, resume, cancel, retry failures. Every status change is a compare-and-set
through :func:`newsletter.storage.store.transition` (the moves are in
:mod:`newsletter.edition.lifecycle`); a refused one says what the edition is now and from which
states the action works.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlmodel import Session, col, select

from newsletter.edition.content import fingerprint
from newsletter.edition.lifecycle import EditionStateError, refusal
from newsletter.edition.periods import rule_of, schedule_of
from newsletter.errors import NewsletterError
from newsletter.publish.approval import awaiting_approval
from newsletter.sending import ledger, reputation
from newsletter.storage import store
from newsletter.storage.models import (
    UNFINISHED_STATUSES,
    DeliveryStatus,
    Edition,
    EditionEvent,
    EditionStatus,
    EditionTotals,
    Newsletter,
)

__all__ = ["EditionStateError"]

#: Who did it, when the caller does not say.
OPERATOR = "operator"


def approve_edition(session: Session, *, edition_id: int, by: str, now: datetime) -> Edition:
    """An editor's go-ahead for a schedule that requires one; only a draft can be approved.

    Approving freezes the content: the scheduler sends this draft as it is, without refreshing
    its selection. A conditional UPDATE: a draft that started or was cancelled meanwhile is
    refused, not approved after the fact."""
    if not store.set_approval(session, edition_id=edition_id, approved_at=now, by=by):
        session.rollback()
        edition = store.get_edition(session, edition_id=edition_id)
        raise EditionStateError(
            f"edition {edition_id} is {edition.status}; only a draft is approved"
        )
    # What was approved: a comparison edited in the store after this withdraws the approval
    # when the send would start (``sending.start_edition``).
    items = store.edition_comparisons(session, edition_id=edition_id)
    store.set_item_fingerprints(
        session, edition_id=edition_id, fingerprints={c.id: fingerprint(c) for c in items if c.id}
    )
    store.add_edition_event(session, edition_id=edition_id, action="approved", actor=by)
    session.commit()
    edition = store.get_edition(session, edition_id=edition_id)
    session.refresh(edition)
    return edition


def pause_edition(
    session: Session,
    *,
    edition_id: int,
    reason: str = "paused by an operator",
    actor: str = OPERATOR,
) -> None:
    """Stop sending within one batch; resume never re-sends what was sent."""
    _change(session, edition_id, "pause", reason, actor)


def resume_edition(session: Session, *, edition_id: int, actor: str = OPERATOR) -> None:
    """Let a paused edition send again. When the reputation breaker paused it, the operator
    has looked at the rates: the breaker judges only what comes after this (its counts now
    become the baseline), so the next report does not pause it again at once."""
    edition = store.get_edition(session, edition_id=edition_id)
    tripped = (edition.status_reason or "").startswith(f"paused by the {reputation.BREAKER}")
    if tripped:
        store.set_breaker_baseline(
            session,
            edition_id=edition_id,
            baseline=reputation.read(session, edition_id=edition_id, since_resume=False).counts,
        )
    _change(session, edition_id, "resume", None, actor)


def cancel_edition(
    session: Session,
    *,
    edition_id: int,
    reason: str = "cancelled by an operator",
    actor: str = OPERATOR,
) -> None:
    """Nothing more is sent; what was sent stays recorded. A cancelled edition stays cancelled
    and its comparisons are free for the next edition."""
    _change(session, edition_id, "cancel", reason, actor)


def _change(session: Session, edition_id: int, action: str, reason: str | None, actor: str) -> None:
    store.get_edition(session, edition_id=edition_id)  # NotFound for a wrong id
    if not store.transition(
        session, edition_id=edition_id, action=action, reason=reason, actor=actor
    ):
        session.rollback()
        current = store.edition_status(session, edition_id=edition_id)
        raise EditionStateError(refusal(edition_id, action, current))
    session.commit()


def retry_failed(
    session: Session,
    *,
    edition_id: int,
    include_unknown: bool = False,
    code: int | None = None,
    actor: str = OPERATOR,
) -> int:
    """Re-queue failed deliveries an operator chose to retry; a sent edition sends again.
    Not for a draft (nothing was sent) or a cancelled edition (nothing would send them)."""
    status = store.edition_status(session, edition_id=edition_id)
    if status in (EditionStatus.draft, EditionStatus.cancelled):
        raise EditionStateError(f"edition {edition_id} is {status}; there is nothing to retry")
    count = ledger.retry_failed(
        session, edition_id=edition_id, include_unknown=include_unknown, code=code
    )
    if not count and session.get(EditionTotals, edition_id) is not None:
        raise EditionStateError(
            f"edition {edition_id}'s delivery rows were pruned (newsletter ledger prune): its "
            "failed deliveries can no longer be retried; its counts are kept"
        )
    if count:
        # Whatever the status read above: the last sender may have finished the edition in
        # between, and a sent edition with open deliveries would never be sent again. The
        # compare-and-set reopens only a sent one.
        store.transition(session, edition_id=edition_id, action="reopen", actor=actor)
    what = "failed and unknown" if include_unknown else "failed"
    only = f" with code {code}" if code is not None else ""
    store.add_edition_event(
        session,
        edition_id=edition_id,
        action="retried",
        actor=actor,
        detail=f"{count} {what} deliveries{only} re-queued",
    )
    session.commit()
    return count


def sending_editions(session: Session) -> list[int]:
    """Ids of editions that workers should work on, oldest first."""
    ids = session.exec(
        select(Edition.id).where(Edition.status == EditionStatus.sending).order_by(col(Edition.id))
    ).all()
    return [i for i in ids if i is not None]


#: What a person can do to an edition, by its status (failures can be retried from any
#: status but draft and cancelled, when there are some).
ACTIONS: dict[EditionStatus, tuple[str, ...]] = {
    EditionStatus.draft: ("approve", "cancel"),
    EditionStatus.sending: ("pause", "cancel"),
    EditionStatus.paused: ("resume", "cancel"),
    EditionStatus.sent: (),
    EditionStatus.cancelled: (),
}


@dataclass(frozen=True, slots=True)
class LiveEdition:
    """One edition as an operator watches it: where it stands and what can be done to it."""

    edition: Edition
    progress: ledger.Progress
    next_retry_at: datetime | None
    #: Its latest steps (approved, started, paused, ...), newest first.
    history: list[EditionEvent]
    #: A draft held for approval: the editors it waits for ([] = any editor); else None.
    awaiting: list[str] | None = None

    @property
    def left(self) -> int:
        return sum(self.progress.counts[s] for s in UNFINISHED_STATUSES)

    @property
    def rate(self) -> float:
        """Messages per second over the last minute."""
        return self.progress.sent_last_minute / 60

    @property
    def eta_seconds(self) -> float | None:
        return self.left / self.rate if self.rate and self.left else None

    @property
    def retryable(self) -> int:
        c = self.progress.counts
        return c[DeliveryStatus.failed] + c[DeliveryStatus.unknown]

    @property
    def state(self) -> str:
        """The status as a person needs it: who a held draft waits for, and a send that ended
        with unknown deliveries is not simply "sent"."""
        return state_line(self.edition.status, self.progress.counts, self.awaiting)

    @property
    def actions(self) -> tuple[str, ...]:
        status = EditionStatus(self.edition.status)
        actions = ACTIONS[status]
        if status == EditionStatus.draft and self.edition.approved_at is not None:
            actions = tuple(a for a in actions if a != "approve") + ("unapprove",)
        if self.retryable and status not in (EditionStatus.draft, EditionStatus.cancelled):
            actions += ("retry-failed",)
        return actions


def delivery_counts(session: Session, *, edition_id: int) -> dict[str, int]:
    """An edition's deliveries by state, as every status line shows them (counts kept for
    pruned rows included): the ledger's own reading, for entry points that must not touch
    the ledger themselves."""
    return ledger.counts(session, edition_id=edition_id)


def audience_size(session: Session, edition: Edition) -> int:
    """How many people ``edition`` goes to: its deliveries once started, else the subscribers
    its audience would be fixed to now."""
    assert edition.id is not None
    return ledger.would_send_count(
        session,
        edition_id=edition.id,
        newsletter_id=edition.newsletter_id,
        started=edition.status != EditionStatus.draft,
    )


def state_line(status: str, counts: dict[str, int], awaiting: list[str] | None) -> str:
    """``draft, awaits approval from a@x``; ``sent, 3 unknown``; else the status."""
    if awaiting is not None:
        return f"{status}, awaits approval from {', '.join(awaiting) or 'an editor'}"
    unknown = counts.get(DeliveryStatus.unknown, 0)
    if unknown and status in (EditionStatus.sent, EditionStatus.sending, EditionStatus.paused):
        return f"{status}, {unknown} unknown"
    return status


def unknown_advice(edition_id: int, unknown: int) -> str:
    """What an operator reads about ``unknown`` deliveries, with the commands to act."""
    return (
        f"{unknown} {'delivery is' if unknown == 1 else 'deliveries are'} unknown: the server "
        "may have the message (the connection or the sender was lost after the hand-over), so "
        "it is not re-sent automatically; review the addresses with `newsletter edition status "
        f"{edition_id}` and re-send them with `newsletter edition retry-failed {edition_id} "
        "--include-unknown`"
    )


#: Sent editions with failures stay on the operator's list this long after the send.
RECENTLY_SENT = timedelta(days=7)


def live_editions(
    session: Session, *, now: datetime, limit: int = 20, recent: int = 5
) -> list[LiveEdition]:
    """Editions someone may act on: drafts, sending and paused ones (newest first, up to
    ``limit``), then editions sent in the last week that have failed or unknown deliveries left
    (up to ``recent``). Each listed edition costs a few queries over its own deliveries only."""
    open_ones = session.exec(
        select(Edition)
        .where(
            col(Edition.status).in_(
                [EditionStatus.draft, EditionStatus.sending, EditionStatus.paused]
            )
        )
        .order_by(col(Edition.id).desc())
        .limit(limit)
    ).all()
    lately_sent = session.exec(
        select(Edition)
        .where(
            Edition.status == EditionStatus.sent,
            col(Edition.sent_at) >= now - RECENTLY_SENT,
        )
        .order_by(col(Edition.id).desc())
        .limit(recent * 4)
    ).all()
    listed = [_live(session, e, now) for e in open_ones]
    with_failures = (_live(session, e, now) for e in lately_sent)
    listed += [item for item in with_failures if item.retryable][:recent]
    return listed


def live_edition(session: Session, *, edition_id: int, now: datetime) -> LiveEdition:
    """One edition as the operator's list shows it (raises ``store.NotFound``)."""
    return _live(session, store.get_edition(session, edition_id=edition_id), now)


def _live(session: Session, edition: Edition, now: datetime) -> LiveEdition:
    return LiveEdition(
        edition,
        ledger.progress(session, edition_id=edition.id or 0, now=now),
        ledger.next_retry_at(session, edition_id=edition.id or 0),
        store.edition_events(session, edition_id=edition.id or 0, limit=3),
        awaiting_approval(session, edition),
    )


class RescheduleError(NewsletterError, ValueError):
    """A send time a draft can't take; the message names the time and what is allowed."""


def reschedule_edition(
    session: Session, *, edition_id: int, send_at: datetime, now: datetime, actor: str = OPERATOR
) -> tuple[datetime | None, datetime]:
    """Move a draft's send time (earlier or later), keeping its content and its approval;
    returns (before, after). The scheduler starts it at the new time.

    Only a scheduled newsletter's draft (a newsletter without a schedule sends when told).
    A time without an offset is in the newsletter's zone; it must be ahead of ``now`` and
    before the schedule's next regular send after this edition's own, so two editions never
    fall on one send. The caller commits (with its audit record).
    """
    edition = store.get_edition(session, edition_id=edition_id)
    if edition.status != EditionStatus.draft:
        raise EditionStateError(
            f"edition {edition_id} is {edition.status}: its send has started (pause or "
            "cancel it instead)"
        )
    newsletter = session.get(Newsletter, edition.newsletter_id)
    schedule = schedule_of(session, newsletter) if newsletter is not None else None
    if newsletter is None or schedule is None:
        raise RescheduleError(
            f"edition {edition_id}: its newsletter has no schedule, so nothing sends it at a "
            f"time; send it with `newsletter edition send {edition_id}` (or Send now)"
        )
    zone = ZoneInfo(newsletter.timezone)
    if send_at.tzinfo is None:  # a bare time is the newsletter's own clock
        send_at = send_at.replace(tzinfo=zone)

    def shown(at: datetime) -> str:
        return f"{at.astimezone(zone):%a %d %b %Y %H:%M} ({newsletter.timezone})"

    if send_at <= now:
        raise RescheduleError(
            f"send time: {shown(send_at)} has passed; give a later one, or Send now"
        )
    rule = rule_of(schedule)
    own = edition.scheduled_for or rule.next_at_or_after(now)
    limit = rule.next_at_or_after(own + timedelta(minutes=1))
    if send_at >= limit:
        raise RescheduleError(
            f"send time: {shown(send_at)} is at or after the next edition's send "
            f"({shown(limit)}); choose an earlier time, or skip this week"
        )
    before = edition.scheduled_for
    edition.scheduled_for = send_at.astimezone(UTC)
    store.add_edition_event(
        session,
        edition_id=edition_id,
        action="rescheduled",
        actor=actor,
        detail=f"{shown(before) if before else 'no send time'} -> {shown(send_at)}",
    )
    session.flush()
    return before, edition.scheduled_for


def send_time_of(session: Session, edition: Edition) -> tuple[str, datetime | None]:
    """(the newsletter's zone, the edition's send time in it), for forms that take a local
    time."""
    newsletter = session.get(Newsletter, edition.newsletter_id)
    zone = newsletter.timezone if newsletter is not None else "UTC"
    at = edition.scheduled_for.astimezone(ZoneInfo(zone)) if edition.scheduled_for else None
    return zone, at
