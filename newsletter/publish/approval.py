"""Approval: an edition whose schedule requires an editor's go-ahead is never sent without one.

What needs approval is read from the newsletter's schedule when a send would start, so every
path that starts one (``edition send``, ``edition start``, ``schedule run-now``, the scheduler,
the console) is refused by the same check in :func:`newsletter.publish.sending.start_edition`,
and the conditional UPDATE that starts the send re-checks the approval in the database (an
approval withdrawn a moment earlier wins). Editors are told when the draft is made, once.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlmodel import Session

from newsletter.backends import backend_from_url
from newsletter.config import Settings
from newsletter.edition.lifecycle import EditionStateError
from newsletter.edition.periods import schedule_of
from newsletter.operations.alerts import build_approval_alert
from newsletter.storage import store
from newsletter.storage.models import Edition, EditionStatus, Newsletter

log = logging.getLogger(__name__)


def editors_required(session: Session, edition: Edition) -> list[str] | None:
    """The editors who must approve ``edition`` (an empty list: anyone may), or None when its
    newsletter's schedule does not require approval."""
    newsletter = session.get(Newsletter, edition.newsletter_id)
    schedule = schedule_of(session, newsletter) if newsletter is not None else None
    if schedule is None or not schedule.approval_required:
        return None
    return [e for e in schedule.editors.split(",") if e]


def awaiting_approval(session: Session, edition: Edition) -> list[str] | None:
    """Who it waits for when ``edition`` is a draft that needs approval and has none."""
    if edition.status != EditionStatus.draft or edition.approved_at is not None:
        return None
    return editors_required(session, edition)


def approval_refusal(edition_id: int, editors: list[str]) -> str:
    """The one line every refused start prints."""
    who = ", ".join(editors) if editors else "an editor"
    return (
        f"edition {edition_id} needs an editor's approval before it is sent (editors: {who}); "
        f"approve it with `newsletter edition approve {edition_id} --by NAME` or in the console, "
        "then send it again"
    )


def alert_editors(session: Session, settings: Settings, edition: Edition, now: datetime) -> bool:
    """Tell the editors once that ``edition`` waits for approval; True if this call did.

    Called when the draft is made, by whichever path made it. The conditional UPDATE makes
    "once" hold with two schedulers; a mail that can't be sent leaves the hold standing
    (``edition status`` and ``edition list`` show it)."""
    editors = awaiting_approval(session, edition)
    if not editors:
        return False
    claimed = store.claim_alert(session, edition_id=edition.id or 0, now=now)
    session.commit()
    if not claimed:
        return False
    edition.alerted_at = now
    newsletter = session.get(Newsletter, edition.newsletter_id)
    assert newsletter is not None
    messages = build_approval_alert(
        settings, newsletter, edition, editors, _size_note(session, settings, edition)
    )
    try:
        with backend_from_url(settings.mail_backend) as backend:
            backend.send_messages(messages)
    except Exception as exc:  # the hold stands; the operator sees it in `edition status`
        log.warning("approval alert for edition %s not sent: %s", edition.id, type(exc).__name__)
    return True


def _size_note(session: Session, settings: Settings, edition: Edition) -> str | None:
    """The clip guard's word on this draft, for the editors (logged when there is one: the
    scheduler drafts with nobody watching a terminal)."""
    from newsletter.publish.drafting import size_note  # drafting imports this module

    note = size_note(session, edition_id=edition.id or 0, settings=settings)
    if note:
        log.warning("edition %s: %s", edition.id, note)
    return note


def withdraw_approval(session: Session, *, edition_id: int, by: str) -> Edition:
    """Take an approval back before the send starts (a conditional UPDATE: a send that
    started first wins, and this says so)."""
    if not store.set_approval(session, edition_id=edition_id, approved_at=None, by=None):
        session.rollback()
        edition = store.get_edition(session, edition_id=edition_id)
        state = "not approved" if edition.approved_at is None else str(edition.status)
        raise EditionStateError(
            f"edition {edition_id} is {state}; only an approved draft's approval can be "
            "withdrawn (a send that started is paused or cancelled instead)"
        )
    store.add_edition_event(session, edition_id=edition_id, action="unapproved", actor=by)
    session.commit()
    edition = store.get_edition(session, edition_id=edition_id)
    session.refresh(edition)
    return edition
