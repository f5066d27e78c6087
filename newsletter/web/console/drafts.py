"""The editions list and a draft's page: previews, preflight, test send, subject, intro,
items, approval."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from newsletter import publish, writers
from newsletter.operations import accounts, audit
from newsletter.storage import listings, store
from newsletter.storage.models import Newsletter
from newsletter.web.console.base import (
    Ctx,
    Who,
    check_form,
    console_page,
    console_path,
)
from newsletter.web.context import RowId, WebContext
from newsletter.writers import suggestions

router = APIRouter()
#: Dark mode of the preview: the email's own dark rules, applied whatever the viewer prefers.
_DARK_QUERY = re.compile(r"@media\s*\(prefers-color-scheme:\s*dark\)")

# --- editions ---------------------------------------------------------------------------------


@router.get("", response_class=HTMLResponse)
def editions(ctx: Ctx, who: Who) -> HTMLResponse:
    """Drafts, sends and paused ones first, then the latest sent; each with its period, send
    time, audience and items, so two drafts never look alike."""
    rows = []
    with ctx.session() as session:
        found = listings.recent_editions(session, limit=40, with_cancelled=False)
        for edition in found:
            assert edition.id is not None
            rows.append(
                {
                    "edition": edition,
                    "items": len(store.edition_comparisons(session, edition_id=edition.id)),
                    "audience": publish.audience_size(session, edition),
                }
            )
    return console_page(ctx, who, "console_editions.html", rows=rows)


def _draft_view(session: Session, ctx: WebContext, edition_id: int) -> dict[str, Any]:
    edition = store.get_edition(session, edition_id=edition_id)
    # Rendered once for the previews and the preflight both.
    rendered, template, _ = publish.prepare(session, edition=edition, settings=ctx.settings)
    page, text = template.preview(publish.SAMPLE_RECIPIENT, publish.signer_for(ctx.settings))
    checks = publish.checks_of(edition, rendered, template, ctx.settings)
    items = store.edition_comparisons(session, edition_id=edition_id)
    return {
        "edition": edition,
        "html": page,
        "dark_html": _DARK_QUERY.sub("@media all", page),
        "text": text,
        "rendered": rendered,
        "checks": checks,
        "failing": [c for c in checks if not c.ok],
        "sender": ctx.settings.from_address,
        "events": audit.recent(session, target=f"edition {edition_id}", limit=20),
        "items": items,
        "dropped": publish.dropped_comparisons(session, edition=edition),
        "candidates": publish.candidates(session, edition=edition),
        "verdicts": publish.verdict_overrides(edition),
        "preheader_override": publish.preheader_override(edition),
        "live": publish.live_edition(session, edition_id=edition_id, now=ctx.clock()),
        "pinned": publish.pinned_ids(session, edition=edition),
        "edited": publish.edited_since_seen(session, edition=edition, items=items),
        "send_time": publish.send_time_of(session, edition),
        "awaiting": publish.awaiting_approval(session, edition),
        "suggestions": suggestions.for_edition(session, edition_id=edition_id, items=items),
        "decisions": publish.suggestion_decisions(edition),
        "intro_suggestion": suggestions.latest_intro(session, edition_id=edition_id),
        "intro_decision": publish.intro_decision(edition),
        "writer_notes": _writer_notes(session, edition_id),
        "writer": writers.name_for(ctx.settings, session.get(Newsletter, edition.newsletter_id)),
        "seen": _seen(rendered),
    }


def _writer_notes(session: Session, edition_id: int) -> list[str]:
    """What the last pass of the writer left to the rules, and why (from its audit record),
    so the draft says it, not only the page that streamed it or the scheduler's log."""
    last = audit.recent(session, target=f"edition {edition_id}", action="edition.suggest", limit=1)
    if not last:
        return []
    return [str(n) for n in json.loads(last[0].detail or "{}").get("notes", [])]


def _seen(rendered: publish.RenderedEdition) -> str:
    """A digest of the draft as the page shows it (without the per-render slot marker):
    approving checks the draft is still what the editor looked at (another editor, or a
    store import, may have changed it since)."""
    digest = hashlib.sha256()
    bare = rendered.text.replace(rendered.marker, "")
    for part in (rendered.subject, rendered.preheader, rendered.web_html, bare):
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:32]


@router.get("/editions/{edition_id}", response_class=HTMLResponse)
def edition_page(edition_id: RowId, ctx: Ctx, who: Who, done: str = "") -> HTMLResponse:
    with ctx.session() as session:
        try:
            view = _draft_view(session, ctx, edition_id)
        except store.NotFound:
            return ctx.message("Not found", status=404)
    notice = DONE.get(done)
    return console_page(ctx, who, "console_edition.html", notice=notice, problem=None, **view)


#: Fixed texts after an action (nothing from the URL is echoed).
DONE = {
    "test": "Test sent. Check the inbox you gave.",
    "approve": "Approved: the scheduler sends it at its send time.",
    "unapprove": "The approval was withdrawn: the draft is held again.",
    "subject": "Subject saved.",
    "intro": "Intro saved.",
    "drop": "Comparison dropped; Restore puts it back.",
    "restore": "Comparison restored, at the end.",
    "up": "Moved up.",
    "down": "Moved down.",
    "add": "Comparison added, at the end.",
    "start": "Started: the workers (or the scheduler) send it now.",
    "preheader": "Preheader saved.",
    "verdict": "The call for this edition saved.",
    "pin": "Pinned: a refresh keeps it, at its place.",
    "unpin": "Unpinned: it follows the selection again on a refresh.",
    "reschedule": "Send time changed: the scheduler sends it then.",
    "suggestion.accept": "Suggestion accepted: the email shows its call, reasons and quotes "
    "(the preview below); the call stays editable.",
    "suggestion.reject": "Suggestion rejected: the email shows the call as it was.",
    "intro-suggestion.accept": "Intro accepted: it opens the email (edit it in the intro form).",
    "intro-suggestion.reject": "Intro suggestion rejected: the intro stays as it was.",
    "pause": "Paused: senders stop within one batch.",
    "resume": "Resumed: nothing already sent goes out again.",
    "cancel": "Cancelled: nothing more is sent.",
    "retry-failed": "Failed deliveries re-queued; the workers send them.",
}


def back(ctx: WebContext, edition_id: int, done: str) -> RedirectResponse:
    return RedirectResponse(
        console_path(ctx, f"/editions/{edition_id}?done={done}"), status_code=303
    )


def refused(
    ctx: WebContext, who: accounts.SignedIn, edition_id: int, problem: str, status: int = 409
) -> HTMLResponse:
    with ctx.session() as session:
        view = _draft_view(session, ctx, edition_id)
    return console_page(
        ctx, who, "console_edition.html", status, notice=None, problem=problem, **view
    )


@router.post("/editions/{edition_id}/test", response_class=HTMLResponse)
def test_send(
    request: Request,
    edition_id: RowId,
    ctx: Ctx,
    who: Who,
    csrf: Annotated[str, Form()] = "",
    to: Annotated[str, Form(max_length=4000)] = "",
    as_subscriber: Annotated[str, Form(max_length=320)] = "",
) -> Response:
    check_form(request, who, csrf, "drafts")
    now = ctx.clock()
    with ctx.session() as session:
        try:
            results = publish.send_test(
                session,
                edition_id=edition_id,
                settings=ctx.settings,
                to=[a for a in re.split(r"[\s,;]+", to) if a],
                as_subscriber=as_subscriber or None,
                backend=ctx.make_backend(),
                now=now.timestamp(),
            )
        except publish.TestSendError as exc:
            return refused(ctx, who, edition_id, str(exc), status=400)
        failed = [f"{a}: {r.detail or r.status}" for a, r in results if not r.status.delivered]
        audit.record(
            session,
            actor=who.user.email,
            action="edition.test",
            target=f"edition {edition_id}",
            now=now,
            detail={
                "to": [a for a, _ in results],
                "as": as_subscriber or "sample reader",
                "failed": failed,
            },
        )
        session.commit()
    if failed:
        return refused(ctx, who, edition_id, "The test was not accepted: " + "; ".join(failed), 502)
    return back(ctx, edition_id, "test")


@router.post("/editions/{edition_id}/subject", response_class=HTMLResponse)
def change_subject(
    request: Request,
    edition_id: RowId,
    ctx: Ctx,
    who: Who,
    csrf: Annotated[str, Form()] = "",
    subject: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    def change(session: Session) -> dict[str, Any]:
        before = store.get_edition(session, edition_id=edition_id).subject
        edition = publish.set_subject(
            session, edition_id=edition_id, subject=subject.strip() or None
        )
        return {"before": before, "after": edition.subject}

    return _shape(request, ctx, who, edition_id, csrf, "subject", change)


@router.post("/editions/{edition_id}/approve", response_class=HTMLResponse)
def approve(
    request: Request,
    edition_id: RowId,
    ctx: Ctx,
    who: Who,
    csrf: Annotated[str, Form()] = "",
    override: Annotated[str, Form(max_length=500)] = "",
    seen: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    """Approval is refused while a preflight check fails; an admin may override it with a
    written reason, which the audit log keeps. It is also refused when the draft changed
    since the page the editor approved from was shown (``seen``): the approval covers what
    they saw."""
    check_form(request, who, csrf, "drafts")
    now = ctx.clock()
    with ctx.session() as session:
        # One render for both: the digest of what the page showed, and the preflight.
        edition = store.get_edition(session, edition_id=edition_id)
        rendered, template, _ = publish.prepare(session, edition=edition, settings=ctx.settings)
        if seen != _seen(rendered):
            return refused(
                ctx,
                who,
                edition_id,
                "Not approved: the draft changed since you opened it (another editor, or an "
                "import). This page shows it as it is now; look again, then approve.",
            )
        failing = [
            c for c in publish.checks_of(edition, rendered, template, ctx.settings) if not c.ok
        ]
        reason = override.strip()
        if failing and not (reason and who.can("users")):
            names = ", ".join(c.name for c in failing)
            return refused(
                ctx,
                who,
                edition_id,
                f"Not approved: the preflight check{'s' if len(failing) > 1 else ''} {names} "
                "failed. Fix them"
                + (
                    ", or override with a written reason (admins)."
                    if not who.can("users")
                    else ", or write why you override them."
                ),
            )
        try:
            publish.approve_edition(session, edition_id=edition_id, by=who.user.email, now=now)
        except publish.EditionStateError as exc:
            return refused(ctx, who, edition_id, str(exc))
        audit.record(
            session,
            actor=who.user.email,
            action="edition.approve",
            target=f"edition {edition_id}",
            now=now,
            detail={"override": reason, "failing": [c.name for c in failing]} if failing else None,
        )
        session.commit()
    return back(ctx, edition_id, "approve")


@router.post("/editions/{edition_id}/reschedule", response_class=HTMLResponse)
def reschedule(
    request: Request,
    edition_id: RowId,
    ctx: Ctx,
    who: Who,
    csrf: Annotated[str, Form()] = "",
    send_at: Annotated[str, Form(max_length=40)] = "",
) -> Response:
    """Operators move a draft's send time (a local time in the newsletter's zone)."""
    check_form(request, who, csrf, "sends")
    try:
        when = datetime.fromisoformat(send_at)
    except ValueError:
        return refused(
            ctx, who, edition_id, "Send time: give a date and a time, e.g. 2026-12-08 15:00.", 400
        )
    now = ctx.clock()
    with ctx.session() as session:
        try:
            before, after = publish.reschedule_edition(
                session, edition_id=edition_id, send_at=when, now=now, actor=who.user.email
            )
        except (publish.RescheduleError, publish.EditionStateError) as exc:
            session.rollback()
            return refused(ctx, who, edition_id, str(exc), status=400)
        audit.record(
            session,
            actor=who.user.email,
            action="edition.reschedule",
            target=f"edition {edition_id}",
            now=now,
            detail={"before": before.isoformat() if before else None, "after": after.isoformat()},
        )
        session.commit()
    return back(ctx, edition_id, "reschedule")


@router.post("/editions/{edition_id}/unapprove", response_class=HTMLResponse)
def unapprove(
    request: Request, edition_id: RowId, ctx: Ctx, who: Who, csrf: Annotated[str, Form()] = ""
) -> Response:
    check_form(request, who, csrf, "drafts")
    now = ctx.clock()
    with ctx.session() as session:
        try:
            publish.withdraw_approval(session, edition_id=edition_id, by=who.user.email)
        except publish.EditionStateError as exc:
            return refused(ctx, who, edition_id, str(exc))
        audit.record(
            session,
            actor=who.user.email,
            action="edition.unapprove",
            target=f"edition {edition_id}",
            now=now,
        )
        session.commit()
    return back(ctx, edition_id, "unapprove")


# --- shaping a draft ----------------------------------------------------------------------------


def _shape(
    request: Request,
    ctx: WebContext,
    who: accounts.SignedIn,
    edition_id: int,
    csrf: str,
    action: str,
    change: Callable[[Session], dict[str, Any]],
) -> Response:
    """Run one change on a draft, record it in the audit log, and go back to its page (or
    show why not, changing nothing)."""
    check_form(request, who, csrf, "drafts")
    now = ctx.clock()
    with ctx.session() as session:
        try:
            detail = change(session)
        except (publish.ShapingError, publish.SubjectError, publish.EditionStateError) as exc:
            session.rollback()
            return refused(ctx, who, edition_id, str(exc), status=400)
        except IntegrityError:
            session.rollback()
            return refused(
                ctx, who, edition_id, "That comparison is in another edition now.", status=409
            )
        audit.record(
            session,
            actor=who.user.email,
            action=f"edition.{action}",
            target=f"edition {edition_id}",
            now=now,
            detail=detail,
        )
        session.commit()
    return back(ctx, edition_id, action)


@router.post("/editions/{edition_id}/intro", response_class=HTMLResponse)
def change_intro(
    request: Request,
    edition_id: RowId,
    ctx: Ctx,
    who: Who,
    csrf: Annotated[str, Form()] = "",
    intro: Annotated[str, Form(max_length=5000)] = "",
) -> Response:
    def change(session: Session) -> dict[str, Any]:
        before = store.get_edition(session, edition_id=edition_id).intro
        after = publish.set_intro(session, edition_id=edition_id, intro=intro).intro
        return {"before": before, "after": after}

    return _shape(request, ctx, who, edition_id, csrf, "intro", change)


@router.post("/editions/{edition_id}/preheader", response_class=HTMLResponse)
def change_preheader(
    request: Request,
    edition_id: RowId,
    ctx: Ctx,
    who: Who,
    csrf: Annotated[str, Form()] = "",
    preheader: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    def change(session: Session) -> dict[str, Any]:
        publish.set_preheader(session, edition_id=edition_id, preheader=preheader)
        return {"after": preheader.strip() or None}

    return _shape(request, ctx, who, edition_id, csrf, "preheader", change)


@router.post("/editions/{edition_id}/items/{comparison_id}/{move}", response_class=HTMLResponse)
def change_item(
    request: Request,
    edition_id: RowId,
    comparison_id: RowId,
    move: str,
    ctx: Ctx,
    who: Who,
    csrf: Annotated[str, Form()] = "",
    verdict: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """drop, restore, add, up, down, pin, unpin, or verdict (this edition's call on it): one
    comparison of the draft."""
    moves: dict[str, Callable[[Session], object]] = {
        "drop": lambda s: publish.drop_item(s, edition_id=edition_id, comparison_id=comparison_id),
        "restore": lambda s: publish.restore_item(
            s, edition_id=edition_id, comparison_id=comparison_id
        ),
        "up": lambda s: publish.move_item(
            s, edition_id=edition_id, comparison_id=comparison_id, up=True
        ),
        "add": lambda s: publish.add_item(s, edition_id=edition_id, comparison_id=comparison_id),
        "verdict": lambda s: publish.set_verdict(
            s, edition_id=edition_id, comparison_id=comparison_id, verdict=verdict
        ),
        "down": lambda s: publish.move_item(
            s, edition_id=edition_id, comparison_id=comparison_id, up=False
        ),
        "pin": lambda s: publish.pin_item(
            s, edition_id=edition_id, comparison_id=comparison_id, pinned=True
        ),
        "unpin": lambda s: publish.pin_item(
            s, edition_id=edition_id, comparison_id=comparison_id, pinned=False
        ),
    }
    if move not in moves:
        return ctx.message("Not found", status=404)

    def change(session: Session) -> dict[str, Any]:
        moves[move](session)
        detail: dict[str, Any] = {"comparison": comparison_id}
        if move == "verdict":
            detail["verdict"] = verdict.strip() or None
        return detail

    return _shape(request, ctx, who, edition_id, csrf, move, change)


@router.post("/editions/{edition_id}/refresh", response_class=HTMLResponse)
def refresh(
    request: Request, edition_id: RowId, ctx: Ctx, who: Who, csrf: Annotated[str, Form()] = ""
) -> Response:
    """Re-select the draft from the store and say what changed, instead of silently
    replacing it."""
    check_form(request, who, csrf, "drafts")
    now = ctx.clock()
    with ctx.session() as session:
        try:
            outcome = publish.refresh_draft(
                session, edition_id=edition_id, settings=ctx.settings, now=now
            )
        except (publish.EmptyWeek, publish.ComparisonTaken, publish.EditionStateError) as exc:
            session.rollback()
            return refused(ctx, who, edition_id, str(exc))
        changes = outcome.changes()
        audit.record(
            session,
            actor=who.user.email,
            action="edition.refresh",
            target=f"edition {edition_id}",
            now=now,
            detail={"added": list(outcome.added), "removed": list(outcome.removed)},
        )
        session.commit()
        view = _draft_view(session, ctx, edition_id)
    return console_page(
        ctx,
        who,
        "console_edition.html",
        notice=f"Refreshed from the store: {changes}.",
        problem=None,
        **view,
    )
