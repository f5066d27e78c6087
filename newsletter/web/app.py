"""Build the FastAPI app from settings: no globals, nothing at import time.

Everything a request needs hangs off ``app.state.web`` (one
:class:`~newsletter.web.context.WebContext`), so tests build as many apps as they like, each
on its own database and mail backend.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

from newsletter import publish
from newsletter.backends import MailBackend, backend_factory
from newsletter.clock import Clock, system_clock
from newsletter.config import Settings
from newsletter.paths import web_templates_dir
from newsletter.storage.database import connection_lost, make_engine, require_head
from newsletter.web import console, hooks, public
from newsletter.web.context import WebContext
from newsletter.web.throttle import SlidingWindow

log = logging.getLogger(__name__)


def create_app(
    settings: Settings,
    *,
    engine: Engine | None = None,
    make_backend: Callable[[], MailBackend] | None = None,
    sns_get: Callable[[str], bytes] | None = None,
    clock: Clock = system_clock,
) -> FastAPI:
    """The web app for ``settings``. Refuses to start without a usable secret key (tokens)
    or with a database that is not migrated."""
    settings.require_sending_ready()
    if settings.admin_password:
        log.warning(
            "NEWSLETTER_ADMIN_PASSWORD is no longer used: the console at /console replaced "
            "/admin; create an admin with `newsletter user add EMAIL --role admin`"
        )
    engine = engine or make_engine(settings.database_url, create=False)
    require_head(engine)
    templates = Environment(
        loader=FileSystemLoader(str(web_templates_dir())),
        autoescape=select_autoescape(enabled_extensions=("html",), default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    templates.filters["fromjson"] = json.loads
    ctx = WebContext(
        settings=settings,
        engine=engine,
        signer=publish.signer_for(settings),
        make_backend=make_backend or backend_factory(settings.mail_backend),
        templates=templates,
        throttle=SlidingWindow(settings.subscribe_limit, 3600),
        clock=clock,
        sns_get=sns_get,
    )
    # No trailing-slash redirects: Starlette builds them from the request's Host header, so
    # `GET /console/` with `Host: evil.example` would send a browser to evil.example.
    app = FastAPI(
        title=settings.newsletter_name,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        redirect_slashes=False,
    )
    app.state.web = ctx

    app.include_router(public.router)
    app.include_router(hooks.router)
    app.include_router(console.router)

    @app.middleware("http")
    async def _console_never_cached(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        """Console pages hold personal data and the session's form token: no cache (a shared
        proxy, the browser's back button after sign-out) keeps a copy."""
        response = await call_next(request)
        if request.url.path.startswith("/console"):
            response.headers["Cache-Control"] = "no-store"
        return response

    @app.get("/admin", include_in_schema=False)
    def _admin_moved() -> Response:
        """The HTTP-Basic admin page became the console: old bookmarks land there."""
        return RedirectResponse(f"{ctx.path_prefix()}/console", status_code=301)

    @app.exception_handler(console.LoginRequired)
    async def _login_first(request: Request, exc: console.LoginRequired) -> Response:
        return RedirectResponse(f"{ctx.path_prefix()}/console/login", status_code=303)

    @app.exception_handler(console.Forbidden)
    async def _forbidden(request: Request, exc: console.Forbidden) -> Response:
        return ctx.message("Not allowed", f"{exc}.", status=403)

    @app.exception_handler(StarletteHTTPException)
    async def _plain_errors(request: Request, exc: StarletteHTTPException) -> Response:
        text = {404: "Not found", 405: "Method not allowed"}.get(exc.status_code, "Error")
        return ctx.message(text, status=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _unreadable(request: Request, exc: RequestValidationError) -> Response:
        # FastAPI's default answer is JSON echoing the input back; a person gets a page.
        return ctx.message(
            "That request could not be read",
            "A value is too long or malformed. Go back and check the form.",
            status=400,
        )

    @app.exception_handler(DBAPIError)
    async def _database_away(request: Request, exc: DBAPIError) -> Response:
        # A database restart is a moment to wait, not a 500 with a traceback per request. A
        # webhook provider retries a 503; a person sees a page saying to try again.
        reason = connection_lost(exc)
        if reason is None:
            raise exc
        log.warning(
            "%s %s: database unavailable (%s); answered 503",
            request.method,
            request.url.path,
            reason,
        )
        return ctx.message(
            "Please try again in a minute",
            "The service is briefly unavailable and nothing was changed. Please send it again "
            "in a minute.",
            status=503,
        )

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def app_from_environment() -> FastAPI:
    """The app for uvicorn's factory mode (``newsletter serve``): settings from the
    environment, in each worker process."""
    return create_app(Settings())
