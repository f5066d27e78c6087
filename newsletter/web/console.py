"""The editors' console: sign in, see the editions, open a draft as subscribers will get it,
run the preflight, send a test, change the subject, approve.

Every page is behind a signed-in session (``newsletter.accounts``): a random cookie token
(HttpOnly, SameSite=Lax, Secure when the base URL is https, path ``/console``) whose SHA-256
is the session's key. Every change is a POST carrying the session's CSRF token, and a request
the browser marks cross-site is refused before anything is read. Roles decide what each
person may do (``accounts.PERMISSIONS``); every change lands in the audit log. The actions
go through ``publish``, so the console, the CLI and the scheduler behave alike.

The subscriber pages' tokens (``/u/...``, ``/confirm/...``) and this cookie never open each
other: different purposes, different secrets, different paths.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from newsletter import accounts, audit, ledger, periods, publish, schedules, store
from newsletter.models import Edition, EditionStatus, User
from newsletter.timing import RuleError
from newsletter.web.context import RowId, WebContext, web_context
from newsletter.web.throttle import client_key

router = APIRouter(prefix="/console")
Ctx = Annotated[WebContext, Depends(web_context)]
COOKIE = "nl_console"
#: Dark mode of the preview: the email's own dark rules, applied whatever the viewer prefers.
_DARK_QUERY = re.compile(r"@media\s*\(prefers-color-scheme:\s*dark\)")


class LoginRequired(Exception):
    """No live session: the app answers with a redirect to the login page."""


class Forbidden(Exception):
    """Signed in, but this role may not do this, or the form is not this session's."""


def _path(ctx: WebContext, path: str) -> str:
    return f"{ctx.path_prefix()}/console{path}"


def signed_in(request: Request, ctx: Ctx) -> accounts.SignedIn:
    token = request.cookies.get(COOKIE, "")
    with ctx.session() as session:
        who = accounts.load_session(session, token=token, now=ctx.clock())
        session.commit()
    if who is None:
        raise LoginRequired
    return who


Who = Annotated[accounts.SignedIn, Depends(signed_in)]


def _check_form(request: Request, who: accounts.SignedIn, csrf: str, action: str) -> None:
    if request.headers.get("sec-fetch-site") == "cross-site":
        raise Forbidden("a request from another site")
    if not hmac.compare_digest(csrf.encode(), who.csrf.encode()):
        raise Forbidden("this form has expired; reload the page")
    if not who.can(action):
        raise Forbidden(f"a {who.user.role} may not do this")


def _page(
    ctx: WebContext, who: accounts.SignedIn | None, name: str, status: int = 200, **values: Any
) -> HTMLResponse:
    return ctx.page(name, status=status, who=who, console=lambda p: _path(ctx, p), **values)


# --- signing in -------------------------------------------------------------------------------


@router.get("/login", response_class=HTMLResponse)
def login_form(ctx: Ctx) -> HTMLResponse:
    return _page(ctx, None, "console_login.html", error=None, email="")


@router.post("/login", response_class=HTMLResponse)
def login(
    request: Request,
    ctx: Ctx,
    email: Annotated[str, Form(max_length=320)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
) -> Response:
    if request.headers.get("sec-fetch-site") == "cross-site":
        return _page(ctx, None, "console_login.html", 403, error="Refused.", email="")
    client = client_key(
        request.client.host if request.client else "unknown", ctx.settings.ipv6_prefix
    )
    account = email.strip().lower()
    if ctx.login_failures.full(client) or ctx.account_failures.full(account):
        return _page(
            ctx,
            None,
            "console_login.html",
            429,
            error="Too many failed sign-ins. Wait 15 minutes.",
            email=email[:320],
        )
    now = ctx.clock()
    with ctx.session() as session:
        user = accounts.authenticate(session, email=email, password=password)
        if user is None:
            ctx.login_failures.allow(client)
            ctx.account_failures.allow(account)
            return _page(
                ctx,
                None,
                "console_login.html",
                401,
                error="That address and password do not match.",
                email=email[:320],
            )
        token = accounts.open_session(session, user=user, now=now)
        audit.record(
            session, actor=user.email, action="login", target=f"user {user.email}", now=now
        )
        session.commit()
    response = RedirectResponse(_path(ctx, ""), status_code=303)
    response.set_cookie(
        COOKIE,
        token,
        path=_path(ctx, ""),
        httponly=True,
        samesite="lax",
        secure=ctx.settings.base_url.startswith("https://"),
    )
    return response


@router.post("/logout")
def logout(request: Request, ctx: Ctx, who: Who, csrf: Annotated[str, Form()] = "") -> Response:
    _check_form(request, who, csrf, "view")
    with ctx.session() as session:
        accounts.close_session(session, token=request.cookies.get(COOKIE, ""))
        session.commit()
    response = RedirectResponse(_path(ctx, "/login"), status_code=303)
    response.delete_cookie(COOKIE, path=_path(ctx, ""))
    return response


@router.get("/password/{token}", response_class=HTMLResponse)
def password_form(token: str, ctx: Ctx) -> HTMLResponse:
    with ctx.session() as session:
        user = accounts.link_user(session, token=token, now=ctx.clock())
    if user is None:
        return ctx.message(
            "This link is not valid any more", "Ask an admin for a new one.", status=400
        )
    return _page(ctx, None, "console_password.html", email=user.email, token=token, error=None)


@router.post("/password/{token}", response_class=HTMLResponse)
def set_password(
    request: Request, token: str, ctx: Ctx, password: Annotated[str, Form(max_length=1024)] = ""
) -> Response:
    if request.headers.get("sec-fetch-site") == "cross-site":
        return ctx.message("Refused", status=403)
    now = ctx.clock()
    with ctx.session() as session:
        try:
            user = accounts.set_password(session, token=token, password=password, now=now)
        except accounts.AccountError as exc:
            linked = accounts.link_user(session, token=token, now=now)
            if linked is None:
                return ctx.message("This link is not valid any more", str(exc), status=400)
            return _page(
                ctx,
                None,
                "console_password.html",
                400,
                email=linked.email,
                token=token,
                error=str(exc),
            )
        audit.record(
            session, actor=user.email, action="user.password", target=f"user {user.email}", now=now
        )
        session.commit()
    return RedirectResponse(_path(ctx, "/login"), status_code=303)


# --- editions ---------------------------------------------------------------------------------


@router.get("", response_class=HTMLResponse)
def editions(ctx: Ctx, who: Who) -> HTMLResponse:
    """Drafts, sends and paused ones first, then the latest sent; each with its period, send
    time, audience and items, so two drafts never look alike."""
    rows = []
    with ctx.session() as session:
        found = session.exec(
            select(Edition)
            .where(Edition.status != EditionStatus.cancelled)
            .order_by(col(Edition.period_start).desc(), col(Edition.id).desc())
            .limit(40)
        ).all()
        for edition in found:
            assert edition.id is not None
            rows.append(
                {
                    "edition": edition,
                    "items": len(store.edition_comparisons(session, edition_id=edition.id)),
                    "audience": ledger.would_send_count(
                        session,
                        edition_id=edition.id,
                        newsletter_id=edition.newsletter_id,
                        started=edition.status != EditionStatus.draft,
                    ),
                }
            )
    return _page(ctx, who, "console_editions.html", rows=rows)


def _draft_view(session: Session, ctx: WebContext, edition_id: int) -> dict[str, Any]:
    edition = store.get_edition(session, edition_id=edition_id)
    page, text, rendered = publish.preview_edition(
        session, edition_id=edition_id, settings=ctx.settings
    )
    checks = publish.preflight(session, edition_id=edition_id, settings=ctx.settings)
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
        "items": store.edition_comparisons(session, edition_id=edition_id),
        "dropped": publish.dropped_comparisons(session, edition=edition),
        "live": publish.live_edition(session, edition_id=edition_id, now=ctx.clock()),
    }


@router.get("/editions/{edition_id}", response_class=HTMLResponse)
def edition_page(edition_id: RowId, ctx: Ctx, who: Who, done: str = "") -> HTMLResponse:
    with ctx.session() as session:
        try:
            view = _draft_view(session, ctx, edition_id)
        except store.NotFound:
            return ctx.message("Not found", status=404)
    notice = DONE.get(done)
    return _page(ctx, who, "console_edition.html", notice=notice, problem=None, **view)


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
    "pause": "Paused: senders stop within one batch.",
    "resume": "Resumed: nothing already sent goes out again.",
    "cancel": "Cancelled: nothing more is sent.",
    "retry-failed": "Failed deliveries re-queued; the workers send them.",
}


def _back(ctx: WebContext, edition_id: int, done: str) -> RedirectResponse:
    return RedirectResponse(_path(ctx, f"/editions/{edition_id}?done={done}"), status_code=303)


def _refused(
    ctx: WebContext, who: accounts.SignedIn, edition_id: int, problem: str, status: int = 409
) -> HTMLResponse:
    with ctx.session() as session:
        view = _draft_view(session, ctx, edition_id)
    return _page(ctx, who, "console_edition.html", status, notice=None, problem=problem, **view)


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
    _check_form(request, who, csrf, "drafts")
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
            return _refused(ctx, who, edition_id, str(exc), status=400)
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
        return _refused(
            ctx, who, edition_id, "The test was not accepted: " + "; ".join(failed), 502
        )
    return _back(ctx, edition_id, "test")


@router.post("/editions/{edition_id}/subject", response_class=HTMLResponse)
def change_subject(
    request: Request,
    edition_id: RowId,
    ctx: Ctx,
    who: Who,
    csrf: Annotated[str, Form()] = "",
    subject: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    _check_form(request, who, csrf, "drafts")
    now = ctx.clock()
    with ctx.session() as session:
        before = store.get_edition(session, edition_id=edition_id).subject
        try:
            edition = publish.set_subject(
                session, edition_id=edition_id, subject=subject.strip() or None
            )
        except (publish.SubjectError, publish.EditionStateError) as exc:
            session.rollback()
            return _refused(ctx, who, edition_id, str(exc), status=400)
        audit.record(
            session,
            actor=who.user.email,
            action="edition.subject",
            target=f"edition {edition_id}",
            now=now,
            detail={"before": before, "after": edition.subject},
        )
        session.commit()
    return _back(ctx, edition_id, "subject")


@router.post("/editions/{edition_id}/approve", response_class=HTMLResponse)
def approve(
    request: Request,
    edition_id: RowId,
    ctx: Ctx,
    who: Who,
    csrf: Annotated[str, Form()] = "",
    override: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    """Approval is refused while a preflight check fails; an admin may override it with a
    written reason, which the audit log keeps."""
    _check_form(request, who, csrf, "drafts")
    now = ctx.clock()
    with ctx.session() as session:
        failing = [
            c
            for c in publish.preflight(session, edition_id=edition_id, settings=ctx.settings)
            if not c.ok
        ]
        reason = override.strip()
        if failing and not (reason and who.can("users")):
            names = ", ".join(c.name for c in failing)
            return _refused(
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
            return _refused(ctx, who, edition_id, str(exc))
        audit.record(
            session,
            actor=who.user.email,
            action="edition.approve",
            target=f"edition {edition_id}",
            now=now,
            detail={"override": reason, "failing": [c.name for c in failing]} if failing else None,
        )
        session.commit()
    return _back(ctx, edition_id, "approve")


@router.post("/editions/{edition_id}/unapprove", response_class=HTMLResponse)
def unapprove(
    request: Request, edition_id: RowId, ctx: Ctx, who: Who, csrf: Annotated[str, Form()] = ""
) -> Response:
    _check_form(request, who, csrf, "drafts")
    now = ctx.clock()
    with ctx.session() as session:
        try:
            publish.withdraw_approval(session, edition_id=edition_id, by=who.user.email)
        except publish.EditionStateError as exc:
            return _refused(ctx, who, edition_id, str(exc))
        audit.record(
            session,
            actor=who.user.email,
            action="edition.unapprove",
            target=f"edition {edition_id}",
            now=now,
        )
        session.commit()
    return _back(ctx, edition_id, "unapprove")


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
    _check_form(request, who, csrf, "drafts")
    now = ctx.clock()
    with ctx.session() as session:
        try:
            detail = change(session)
        except (publish.ShapingError, publish.EditionStateError) as exc:
            session.rollback()
            return _refused(ctx, who, edition_id, str(exc), status=400)
        except IntegrityError:
            session.rollback()
            return _refused(
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
    return _back(ctx, edition_id, action)


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


@router.post("/editions/{edition_id}/items/{comparison_id}/{move}", response_class=HTMLResponse)
def change_item(
    request: Request,
    edition_id: RowId,
    comparison_id: RowId,
    move: str,
    ctx: Ctx,
    who: Who,
    csrf: Annotated[str, Form()] = "",
) -> Response:
    """drop, restore, up or down: one comparison of the draft."""
    moves: dict[str, Callable[[Session], object]] = {
        "drop": lambda s: publish.drop_item(s, edition_id=edition_id, comparison_id=comparison_id),
        "restore": lambda s: publish.restore_item(
            s, edition_id=edition_id, comparison_id=comparison_id
        ),
        "up": lambda s: publish.move_item(
            s, edition_id=edition_id, comparison_id=comparison_id, up=True
        ),
        "down": lambda s: publish.move_item(
            s, edition_id=edition_id, comparison_id=comparison_id, up=False
        ),
    }
    if move not in moves:
        return ctx.message("Not found", status=404)

    def change(session: Session) -> dict[str, Any]:
        moves[move](session)
        return {"comparison": comparison_id}

    return _shape(request, ctx, who, edition_id, csrf, move, change)


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
    _check_form(request, who, csrf, "sends")
    if action == "cancel" and confirm != "yes":
        return _refused(ctx, who, edition_id, "Tick the box to confirm the cancel.", status=400)
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
            return _refused(ctx, who, edition_id, str(exc))
        audit.record(
            session,
            actor=who.user.email,
            action=f"edition.{action}",
            target=f"edition {edition_id}",
            now=now,
            detail={"requeued": count} if action == "retry-failed" else None,
        )
        session.commit()
    return _back(ctx, edition_id, action)


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
            recent = session.exec(
                select(Edition)
                .where(Edition.newsletter_id == newsletter.id)
                .order_by(col(Edition.period_start).desc())
                .limit(4)
            ).all()
            rows.append(
                {"schedule": schedule, "newsletter": newsletter, "next": occ, "recent": recent}
            )
    return _page(
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
    _check_form(request, who, csrf, "schedules")
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
    return RedirectResponse(_path(ctx, f"/schedules?done={action}"), status_code=303)


# --- users (admins) ------------------------------------------------------------------------


@router.get("/users", response_class=HTMLResponse)
def users_page(ctx: Ctx, who: Who) -> HTMLResponse:
    if not who.can("users"):
        raise Forbidden(f"a {who.user.role} may not manage users")
    return _users(ctx, who)


def _users(
    ctx: WebContext,
    who: accounts.SignedIn,
    link: str | None = None,
    problem: str | None = None,
    status: int = 200,
) -> HTMLResponse:
    with ctx.session() as session:
        users = session.exec(select(User).order_by(col(User.email))).all()
    return _page(ctx, who, "console_users.html", status, users=users, link=link, problem=problem)


@router.post("/users", response_class=HTMLResponse)
def add_user(
    request: Request,
    ctx: Ctx,
    who: Who,
    csrf: Annotated[str, Form()] = "",
    email: Annotated[str, Form(max_length=320)] = "",
    role: Annotated[str, Form(max_length=16)] = "editor",
) -> Response:
    """An account for someone; the page shows their one-time set-password link to pass on."""
    _check_form(request, who, csrf, "users")
    now = ctx.clock()
    with ctx.session() as session:
        try:
            user, token = accounts.add_user(session, email=email, role=role, now=now)
        except accounts.AccountError as exc:
            session.rollback()
            return _users(ctx, who, problem=str(exc), status=400)
        audit.record(
            session,
            actor=who.user.email,
            action="user.add",
            target=f"user {user.email}",
            now=now,
            detail={"role": user.role},
        )
        session.commit()
    base = ctx.settings.base_url.rstrip("/")
    return _users(ctx, who, link=f"{base}/console/password/{token}")


# --- the audit log ----------------------------------------------------------------------------


@router.get("/audit", response_class=HTMLResponse)
def audit_page(ctx: Ctx, who: Who, action: str = "", target: str = "") -> HTMLResponse:
    with ctx.session() as session:
        events = audit.recent(session, action=action[:64] or None, target=target[:200] or None)
    return _page(
        ctx, who, "console_audit.html", events=events, action=action[:64], target=target[:200]
    )
