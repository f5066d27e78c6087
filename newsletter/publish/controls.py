"""What editors and operators do to an edition between drafting and the last delivery:
approve, pause, resume, cancel, retry failures. Each checks the state it starts from.
"""

from __future__ import annotations

from sqlmodel import Session, col, select

from newsletter import ledger, store
from newsletter.models import Edition, EditionStatus, utcnow


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
