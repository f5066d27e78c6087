"""The admin page, behind HTTP Basic authentication: sends in progress with their buttons
(approve, pause, resume, cancel, retry failures), per-edition numbers and the chart.

Off unless ``NEWSLETTER_ADMIN_PASSWORD`` is set (then user ``admin``); compared in constant
time; serve it over HTTPS. A browser sends Basic credentials with any request to this site,
so every button is a POST form carrying a signed token (:mod:`newsletter.web.forms`), and a
request the browser marks cross-site is refused before the token is looked at. An action
answers with a redirect back to the page (reloading it repeats nothing).
"""

from __future__ import annotations

import hmac
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from sqlmodel import Session

from newsletter import chart, publish, stats, store
from newsletter.web.context import RowId, WebContext, web_context
from newsletter.web.forms import form_token, form_token_ok
from newsletter.web.throttle import client_key

router = APIRouter(prefix="/admin")
_basic = HTTPBasic(auto_error=False, realm="newsletter admin")
Ctx = Annotated[WebContext, Depends(web_context)]


def require_admin(
    ctx: Ctx,
    request: Request,
    credentials: Annotated[HTTPBasicCredentials | None, Depends(_basic)],
) -> WebContext:
    password = ctx.settings.admin_password
    if not password:
        raise HTTPException(404)
    client = client_key(
        request.client.host if request.client else "unknown", ctx.settings.ipv6_prefix
    )
    if credentials is not None and (
        ctx.login_failures.full(client) or ctx.account_failures.full("admin")
    ):
        # Too many wrong passwords lately: not even checked, so guessing gains nothing.
        raise HTTPException(429, headers={"Retry-After": "900"})
    ok = credentials is not None and (
        hmac.compare_digest(credentials.username.encode(), b"admin")
        & hmac.compare_digest(credentials.password.encode(), password.encode())
    )
    if not ok:
        if credentials is not None:
            ctx.login_failures.allow(client)
            ctx.account_failures.allow("admin")
        raise HTTPException(
            401, headers={"WWW-Authenticate": 'Basic realm="newsletter admin", charset="UTF-8"'}
        )
    return ctx


Admin = Annotated[WebContext, Depends(require_admin)]


#: The message shown after an action (fixed texts: nothing from the URL is echoed).
DONE = {
    "approve": "approved; the scheduler sends it at its send time",
    "unapprove": "is held again: its approval was withdrawn",
    "pause": "paused; senders stop within one batch",
    "resume": "resumed; nothing already sent goes out again",
    "cancel": "cancelled; nothing more is sent",
    "retry-failed": "re-queued {count} {deliveries}; the workers send them",
}
#: Edition ids as the database stores them (PostgreSQL ``integer``).
EditionId = RowId


@router.get("", response_class=HTMLResponse)
def dashboard(ctx: Admin, done: str = "", edition: int = 0, count: int = 0) -> HTMLResponse:
    notice = None
    if done in DONE:
        what = DONE[done].format(count=count, deliveries="delivery" if count == 1 else "deliveries")
        notice = f"Edition {edition} {what}."
    return _page(ctx, notice=notice)


def _page(
    ctx: WebContext, *, notice: str | None = None, problem: str | None = None, status: int = 200
) -> HTMLResponse:
    with ctx.session() as session:
        moment = ctx.clock()
        rows = stats.edition_stats(session)
        live = publish.live_editions(session, now=moment)
    secret = ctx.settings.secret_key or ""
    now = moment.timestamp()
    response = ctx.page(
        "admin.html",
        status=status,
        stats=rows,
        live=live,
        notice=notice,
        problem=problem,
        token=lambda action, edition_id: form_token(
            secret, action=action, target=edition_id, now=now
        ),
    )
    response.headers["Cache-Control"] = "no-store"
    return response


@router.post("/editions/{edition_id}/{action}", response_class=HTMLResponse)
def act(
    ctx: Admin,
    request: Request,
    edition_id: EditionId,
    action: str,
    token: Annotated[str, Form(max_length=100)] = "",
    confirm: Annotated[str, Form(max_length=10)] = "",
    include_unknown: Annotated[str, Form(max_length=10)] = "",
) -> Response:
    if action not in DONE:
        raise HTTPException(404)
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return _page(
            ctx, problem="That request came from another site; nothing was done.", status=403
        )
    secret = ctx.settings.secret_key or ""
    if not secret or not form_token_ok(
        secret, token, action=action, target=edition_id, now=ctx.clock().timestamp()
    ):
        return _page(
            ctx,
            problem="That form has expired or did not come from this page; nothing was done. "
            "Try again from the page below.",
            status=403,
        )
    if action == "cancel" and confirm != "yes":
        return _page(
            ctx, problem=f"Tick the box to confirm cancelling edition {edition_id}.", status=400
        )
    try:
        with ctx.session() as session:
            # Only what the page offers for the edition as it is now: a form kept from an
            # earlier state (a retry taken before a cancel) does nothing.
            live = publish.live_edition(session, edition_id=edition_id, now=ctx.clock())
            if action not in live.actions:
                edition = store.get_edition(session, edition_id=edition_id)
                raise publish.EditionStateError(
                    f"edition {edition_id} is {edition.status}; {action} is not possible now"
                )
            count = _run(session, action, edition_id, include_unknown == "yes", ctx.clock())
    except (publish.EditionStateError, store.NotFound) as exc:
        return _page(ctx, problem=str(exc), status=409)
    return RedirectResponse(
        f"{ctx.path_prefix()}/admin?done={action}&edition={edition_id}"
        + (f"&count={count}" if action == "retry-failed" else ""),
        status_code=303,
    )


def _run(
    session: Session, action: str, edition_id: int, include_unknown: bool, now: datetime
) -> int:
    """Do it; returns how many deliveries were re-queued (retry-failed), else 0."""
    by = "admin page"
    reason = "by an operator (admin page)"
    if action == "approve":
        publish.approve_edition(session, edition_id=edition_id, by=by, now=now)
    elif action == "unapprove":
        publish.withdraw_approval(session, edition_id=edition_id, by=by)
    elif action == "pause":
        publish.pause_edition(session, edition_id=edition_id, reason=f"paused {reason}", actor=by)
    elif action == "resume":
        publish.resume_edition(session, edition_id=edition_id, actor=by)
    elif action == "cancel":
        publish.cancel_edition(
            session, edition_id=edition_id, reason=f"cancelled {reason}", actor=by
        )
    else:
        return publish.retry_failed(
            session, edition_id=edition_id, include_unknown=include_unknown, actor=by
        )
    return 0


@router.get("/chart.svg")
def chart_svg(ctx: Admin, narrow: bool = False) -> Response:
    """The chart; ``narrow`` stacks the panels for a phone (the page picks it by width)."""
    with ctx.session() as session:
        rows = stats.edition_stats(session)
        growth = stats.list_growth(session, until=ctx.clock(), today=True)
    return Response(
        chart.draw_chart(rows, growth, fmt="svg", narrow=narrow),
        media_type="image/svg+xml",
        headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
    )
