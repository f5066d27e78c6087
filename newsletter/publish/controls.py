"""What editors and operators do to an edition between drafting and the last delivery:
approve, pause, resume, cancel, retry failures. Each checks the state it starts from.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, col, select

from newsletter import ledger, store
from newsletter.models import Delivery, DeliveryStatus, Edition, EditionStatus, utcnow


class EditionStateError(RuntimeError):
    """The edition is not in a state that allows this action."""


def approve_edition(session: Session, *, edition_id: int, by: str) -> Edition:
    """An editor's go-ahead for a schedule that requires one; only a draft can be approved.

    Approving freezes the content: the scheduler sends this draft as it is, without refreshing
    its selection."""
    edition = store.get_edition(session, edition_id=edition_id)
    if edition.status != EditionStatus.draft:
        raise EditionStateError(
            f"edition {edition_id} is {edition.status}; only a draft is approved"
        )
    edition.approved_at = utcnow()
    edition.approved_by = by[:200]
    session.commit()
    return edition


def pause_edition(
    session: Session, *, edition_id: int, reason: str = "paused by an operator"
) -> None:
    """Stop sending within one batch; resume never re-sends what was sent."""
    _change(session, edition_id, {EditionStatus.sending}, EditionStatus.paused, reason)


def resume_edition(session: Session, *, edition_id: int) -> None:
    _change(session, edition_id, {EditionStatus.paused}, EditionStatus.sending, None)


def cancel_edition(
    session: Session, *, edition_id: int, reason: str = "cancelled by an operator"
) -> None:
    """Nothing more is sent; what was sent stays recorded. A cancelled edition stays cancelled."""
    _change(
        session,
        edition_id,
        {EditionStatus.draft, EditionStatus.sending, EditionStatus.paused},
        EditionStatus.cancelled,
        reason,
    )


def _change(
    session: Session,
    edition_id: int,
    allowed: set[EditionStatus],
    to: EditionStatus,
    reason: str | None,
) -> None:
    current = store.edition_status(session, edition_id=edition_id)
    if current not in allowed:
        raise EditionStateError(
            f"edition {edition_id} is {current}; can't make it {to} "
            f"(only from {', '.join(sorted(allowed))})"
        )
    store.set_edition_status(session, edition_id=edition_id, status=to, reason=reason)
    session.commit()


def retry_failed(
    session: Session, *, edition_id: int, include_unknown: bool = False, code: int | None = None
) -> int:
    """Re-queue failed deliveries an operator chose to retry; a sent edition sends again."""
    count = ledger.retry_failed(
        session, edition_id=edition_id, include_unknown=include_unknown, code=code
    )
    if count and store.edition_status(session, edition_id=edition_id) == EditionStatus.sent:
        store.set_edition_status(session, edition_id=edition_id, status=EditionStatus.sending)
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

    @property
    def left(self) -> int:
        c = self.progress.counts
        return c["pending"] + c["deferred"] + c["claimed"]

    @property
    def rate(self) -> float:
        """Messages per second over the last minute."""
        return self.progress.sent_last_minute / 60

    @property
    def eta_seconds(self) -> float | None:
        return self.left / self.rate if self.rate and self.left else None

    @property
    def retryable(self) -> int:
        return self.progress.counts["failed"] + self.progress.counts["unknown"]

    @property
    def actions(self) -> tuple[str, ...]:
        status = EditionStatus(self.edition.status)
        actions = ACTIONS[status]
        if status == EditionStatus.draft and self.edition.approved_at is not None:
            actions = tuple(a for a in actions if a != "approve")
        if self.retryable and status not in (EditionStatus.draft, EditionStatus.cancelled):
            actions += ("retry-failed",)
        return actions


def live_editions(session: Session, *, limit: int = 20) -> list[LiveEdition]:
    """Editions someone may act on, newest first: drafts, sending, paused, and sent ones with
    failed or unknown deliveries left."""
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
    with_failures = session.exec(
        select(Edition)
        .where(
            Edition.status == EditionStatus.sent,
            col(Edition.id).in_(
                select(Delivery.edition_id).where(
                    col(Delivery.status).in_(
                        [DeliveryStatus.failed.value, DeliveryStatus.unknown.value]
                    )
                )
            ),
        )
        .order_by(col(Edition.id).desc())
        .limit(limit)
    ).all()
    editions = sorted({e.id: e for e in [*open_ones, *with_failures]}.values(), key=_newest)
    return [
        LiveEdition(
            e,
            ledger.progress(session, edition_id=e.id or 0),
            ledger.next_retry_at(session, edition_id=e.id or 0),
        )
        for e in editions[:limit]
    ]


def _newest(edition: Edition) -> int:
    return -(edition.id or 0)
