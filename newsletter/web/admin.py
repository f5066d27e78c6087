"""The admin page: per-edition numbers and the chart, behind HTTP Basic authentication.

Off unless ``NEWSLETTER_ADMIN_PASSWORD`` is set (then user ``admin``); compared in constant
time. Read-only, so it needs no CSRF protection; serve it over HTTPS.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import HTMLResponse, Response
from fastapi.security import HTTPBasic, HTTPBasicCredentials

from newsletter import chart, stats
from newsletter.web.context import WebContext, web_context

router = APIRouter(prefix="/admin")
_basic = HTTPBasic(auto_error=False, realm="newsletter admin")
Ctx = Annotated[WebContext, Depends(web_context)]


def require_admin(
    ctx: Ctx, credentials: Annotated[HTTPBasicCredentials | None, Depends(_basic)]
) -> WebContext:
    password = ctx.settings.admin_password
    if not password:
        raise HTTPException(404)
    ok = credentials is not None and (
        hmac.compare_digest(credentials.username.encode(), b"admin")
        & hmac.compare_digest(credentials.password.encode(), password.encode())
    )
    if not ok:
        raise HTTPException(
            401, headers={"WWW-Authenticate": 'Basic realm="newsletter admin", charset="UTF-8"'}
        )
    return ctx


Admin = Annotated[WebContext, Depends(require_admin)]


@router.get("", response_class=HTMLResponse)
def dashboard(ctx: Admin) -> HTMLResponse:
    with ctx.session() as session:
        rows = stats.edition_stats(session)
    response = ctx.page("admin.html", stats=rows)
    response.headers["Cache-Control"] = "no-store"
    return response


@router.get("/chart.svg")
def chart_svg(ctx: Admin) -> Response:
    with ctx.session() as session:
        rows = stats.edition_stats(session)
        growth = stats.list_growth(session)
    return Response(
        chart.draw_chart(rows, growth, fmt="svg"),
        media_type="image/svg+xml",
        headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
    )
