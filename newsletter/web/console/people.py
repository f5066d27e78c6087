"""Admins: users and their one-time links; everyone: the audit log and the numbers."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from newsletter.operations import accounts, audit, chart, stats
from newsletter.publish import breaker
from newsletter.web.console.base import (
    Ctx,
    Forbidden,
    Who,
    check_form,
    console_page,
)
from newsletter.web.context import WebContext

router = APIRouter()

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
        users = accounts.users(session)
    return console_page(
        ctx, who, "console_users.html", status, users=users, link=link, problem=problem
    )


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
    check_form(request, who, csrf, "users")
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
    return console_page(
        ctx, who, "console_audit.html", events=events, action=action[:64], target=target[:200]
    )


# --- numbers ----------------------------------------------------------------------------------


@router.get("/stats", response_class=HTMLResponse)
def stats_page(ctx: Ctx, who: Who) -> HTMLResponse:
    """Per-edition numbers and the chart (a stacked one on a phone)."""
    with ctx.session() as session:
        rows = stats.edition_stats(session)
    return console_page(
        ctx, who, "console_stats.html", stats=rows, limits=breaker.limits_for(ctx.settings)
    )


@router.get("/chart.svg")
def chart_svg(ctx: Ctx, who: Who, narrow: bool = False) -> Response:
    with ctx.session() as session:
        rows = stats.edition_stats(session)
        growth = stats.list_growth(session, until=ctx.clock(), today=True)
    return Response(
        chart.draw_chart(rows, growth, fmt="svg", narrow=narrow),
        media_type="image/svg+xml",
        headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
    )
