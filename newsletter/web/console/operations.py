"""Operators: running sends (pause, resume, cancel, retry) and schedules (pause, resume,
skip a week)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from newsletter import publish
from newsletter.edition import periods
from newsletter.edition.timing import RuleError
from newsletter.operations import accounts, audit, schedules
from newsletter.storage import listings, store
from newsletter.web.console.base import (
    Ctx,
    Who,
    check_form,
    console_page,
    console_path,
)
from newsletter.web.console.drafts import back, refused
from newsletter.web.context import RowId, WebContext

router = APIRouter()

# --- running sends (operators) ------------------------------------------------------------------

SEND_ACTIONS = ("pause", "resume", "cancel", "retry-failed")


@router.post("/editions/{edition_id}/send/{action}", response_class=HTMLResponse)
def send_action(
    request: Request,
    edition_id: RowId,
    action: str,
    ctx: Ctx,
    who: Who,
    csrf: Annotated[str, Form()] = "",
    confirm: Annotated[str, Form(max_length=10)] = "",
    include_unknown: Annotated[str, Form(max_length=10)] = "",
) -> Response:
    """Pause, resume, cancel (ticked to confirm) or retry the failures of a send; only what
    the edition's state offers now (a form kept from an earlier state does nothing)."""
    if action not in SEND_ACTIONS:
        return ctx.message("Not found", status=404)
    check_form(request, who, csrf, "sends")
    if action == "cancel" and confirm != "yes":
        return refused(ctx, who, edition_id, "Tick the box to confirm the cancel.", status=400)
    now = ctx.clock()
    by = f"{who.user.email} (console)"
    with ctx.session() as session:
        try:
            live = publish.live_edition(session, edition_id=edition_id, now=now)
            if action not in live.actions:
                raise publish.EditionStateError(
                    f"edition {edition_id} is {live.edition.status}; {action} is not possible now"
                )
            count = 0
            if action == "pause":
                publish.pause_edition(
                    session, edition_id=edition_id, reason=f"paused by {who.user.email}", actor=by
                )
            elif action == "resume":
                publish.resume_edition(session, edition_id=edition_id, actor=by)
            elif action == "cancel":
                publish.cancel_edition(
                    session,
                    edition_id=edition_id,
                    reason=f"cancelled by {who.user.email}",
                    actor=by,
                )
            else:
                count = publish.retry_failed(
                    session,
                    edition_id=edition_id,
                    include_unknown=include_unknown == "yes",
                    actor=by,
                )
        except (publish.EditionStateError, store.NotFound) as exc:
            session.rollback()
            return refused(ctx, who, edition_id, str(exc))
        audit.record(
            session,
            actor=who.user.email,
            action=f"edition.{action}",
            target=f"edition {edition_id}",
            now=now,
            detail={"requeued": count} if action == "retry-failed" else None,
        )
        session.commit()
    return back(ctx, edition_id, action)


# --- schedules (operators) ----------------------------------------------------------------------


@router.get("/schedules", response_class=HTMLResponse)
def schedules_page(ctx: Ctx, who: Who, done: str = "") -> HTMLResponse:
    return _schedules(ctx, who, notice=SCHEDULE_DONE.get(done))


SCHEDULE_DONE = {
    "pause": "Schedule paused: nothing is drafted or sent on schedule until it resumes.",
    "resume": "Schedule resumed.",
    "skip": "That week will be skipped.",
}


def _schedules(
    ctx: WebContext,
    who: accounts.SignedIn,
    notice: str | None = None,
    problem: str | None = None,
    status: int = 200,
) -> HTMLResponse:
    now = ctx.clock()
    rows = []
    with ctx.session() as session:
        for schedule, newsletter in schedules.active_schedules(session):
            occ = periods.next_times(schedule, newsletter, now)
            recent = listings.recent_editions(session, limit=4, newsletter_id=newsletter.id)
            rows.append(
                {"schedule": schedule, "newsletter": newsletter, "next": occ, "recent": recent}
            )
    return console_page(
        ctx, who, "console_schedules.html", status, rows=rows, notice=notice, problem=problem
    )


@router.post("/schedules/{slug}/{action}", response_class=HTMLResponse)
def schedule_action(
    request: Request,
    slug: str,
    action: str,
    ctx: Ctx,
    who: Who,
    csrf: Annotated[str, Form()] = "",
    period: Annotated[str, Form(max_length=20)] = "",
) -> Response:
    if action not in SCHEDULE_DONE:
        return ctx.message("Not found", status=404)
    check_form(request, who, csrf, "schedules")
    now = ctx.clock()
    with ctx.session() as session:
        try:
            newsletter = store.get_newsletter(session, slug=slug)
            schedule = periods.schedule_of(session, newsletter)
            if schedule is None:
                raise store.NotFound(f"newsletter {slug!r} has no schedule")
            detail: dict[str, Any] = {}
            if action == "skip":
                when = schedules.skip_period(session, schedule=schedule, period=period.strip())
                detail = {"period": period.strip(), "send": when.isoformat()}
            else:
                schedule.paused = action == "pause"
        except (store.NotFound, RuleError) as exc:
            session.rollback()
            return _schedules(ctx, who, problem=str(exc), status=400)
        audit.record(
            session,
            actor=who.user.email,
            action=f"schedule.{action}",
            target=f"schedule {slug}",
            now=now,
            detail=detail or None,
        )
        session.commit()
    return RedirectResponse(console_path(ctx, f"/schedules?done={action}"), status_code=303)


@router.post("/editions/{edition_id}/start", response_class=HTMLResponse)
def start_now(
    request: Request, edition_id: RowId, ctx: Ctx, who: Who, csrf: Annotated[str, Form()] = ""
) -> Response:
    """Send a draft now instead of at its send time: it starts (fixing the audience) and the
    workers or the scheduler send it. An unapproved draft that needs approval is refused."""
    check_form(request, who, csrf, "sends")
    now = ctx.clock()
    with ctx.session() as session:
        try:
            added = publish.start_edition(
                session,
                edition_id=edition_id,
                settings=ctx.settings,
                actor=f"{who.user.email} (console)",
                now=now,
            )
        except (publish.EditionStateError, store.NotFound) as exc:
            session.rollback()
            return refused(ctx, who, edition_id, str(exc))
        audit.record(
            session,
            actor=who.user.email,
            action="edition.start",
            target=f"edition {edition_id}",
            now=now,
            detail={"recipients": added},
        )
        session.commit()
    return back(ctx, edition_id, "start")
