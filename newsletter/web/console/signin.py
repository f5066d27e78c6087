"""Signing in and out, and setting a password from a one-time link."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from newsletter.operations import accounts, audit
from newsletter.web.console.base import (
    COOKIE,
    Ctx,
    Who,
    check_form,
    console_page,
    console_path,
)
from newsletter.web.throttle import client_key

router = APIRouter()

# --- signing in -------------------------------------------------------------------------------


@router.get("/login", response_class=HTMLResponse)
def login_form(ctx: Ctx) -> HTMLResponse:
    return console_page(ctx, None, "console_login.html", error=None, email="")


@router.post("/login", response_class=HTMLResponse)
def login(
    request: Request,
    ctx: Ctx,
    email: Annotated[str, Form(max_length=320)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
) -> Response:
    if request.headers.get("sec-fetch-site") == "cross-site":
        return console_page(ctx, None, "console_login.html", 403, error="Refused.", email="")
    client = client_key(
        request.client.host if request.client else "unknown", ctx.settings.ipv6_prefix
    )
    account = email.strip().lower()
    if ctx.login_failures.full(client) or ctx.account_failures.full(account):
        return console_page(
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
            return console_page(
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
    response = RedirectResponse(console_path(ctx, ""), status_code=303)
    response.set_cookie(
        COOKIE,
        token,
        path=console_path(ctx, ""),
        httponly=True,
        samesite="lax",
        secure=ctx.settings.base_url.startswith("https://"),
    )
    return response


@router.post("/logout")
def logout(request: Request, ctx: Ctx, who: Who, csrf: Annotated[str, Form()] = "") -> Response:
    check_form(request, who, csrf, "view")
    with ctx.session() as session:
        accounts.close_session(session, token=request.cookies.get(COOKIE, ""))
        session.commit()
    response = RedirectResponse(console_path(ctx, "/login"), status_code=303)
    response.delete_cookie(COOKIE, path=console_path(ctx, ""))
    return response


@router.get("/password/{token}", response_class=HTMLResponse)
def password_form(token: str, ctx: Ctx) -> HTMLResponse:
    with ctx.session() as session:
        user = accounts.link_user(session, token=token, now=ctx.clock())
    if user is None:
        return ctx.message(
            "This link is not valid any more", "Ask an admin for a new one.", status=400
        )
    return console_page(
        ctx, None, "console_password.html", email=user.email, token=token, error=None
    )


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
            return console_page(
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
    return RedirectResponse(console_path(ctx, "/login"), status_code=303)
