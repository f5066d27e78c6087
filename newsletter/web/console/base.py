"""What every console page shares: who is signed in, the form check, the page helper.

A request is signed in when its cookie's token names a live session
(``accounts.load_session``); a change is a POST that carries the session's CSRF token and that
the browser does not mark cross-site, by someone whose role allows it.
"""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse

from newsletter.operations import accounts
from newsletter.web.context import WebContext, web_context

Ctx = Annotated[WebContext, Depends(web_context)]
COOKIE = "nl_console"


class LoginRequired(Exception):
    """No live session: the app answers with a redirect to the login page."""


class Forbidden(Exception):
    """Signed in, but this role may not do this, or the form is not this session's."""


def console_path(ctx: WebContext, path: str) -> str:
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


def check_form(request: Request, who: accounts.SignedIn, csrf: str, action: str) -> None:
    if request.headers.get("sec-fetch-site") == "cross-site":
        raise Forbidden("a request from another site")
    if not hmac.compare_digest(csrf.encode(), who.csrf.encode()):
        raise Forbidden("this form has expired; reload the page")
    if not who.can(action):
        raise Forbidden(f"a {who.user.role} may not do this")


def console_page(
    ctx: WebContext, who: accounts.SignedIn | None, name: str, status: int = 200, **values: Any
) -> HTMLResponse:
    return ctx.page(name, status=status, who=who, console=lambda p: console_path(ctx, p), **values)
