"""What every request handler needs: settings, database, signer, mail backend, templates.

One :class:`WebContext` per app, on ``app.state.web``; handlers get it with
:func:`web_context`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import Path, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment
from sqlalchemy import Engine
from sqlmodel import Session

from newsletter.backends import MailBackend
from newsletter.clock import Clock, system_clock
from newsletter.config import Settings
from newsletter.edition.tokens import TokenSigner
from newsletter.web.throttle import SlidingWindow

#: Headers on every page: no framing (clickjacking on the unsubscribe button), no referrer
#: (the token is in the URL), no inline script needed anywhere.
SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


#: An id a path or form carries, within the database column's range (PostgreSQL ``integer``):
#: anything outside is a 422, never a query that fails with a 500.
RowId = Annotated[int, Path(ge=1, le=2**31 - 1)]


@dataclass
class WebContext:
    settings: Settings
    engine: Engine
    signer: TokenSigner
    make_backend: Callable[[], MailBackend]
    templates: Environment
    throttle: SlidingWindow
    #: GET used for SNS signing certificates and subscription confirmations (tests inject one).
    sns_get: Callable[[str], bytes] | None = None
    #: Rendered web versions of sent editions, by id (they never change once sent).
    archive_cache: dict[int, str] = field(default_factory=dict)
    #: Each request reads the time here once (tests pin it).
    clock: Clock = system_clock
    #: Where a plugin webhook's secret variable is read (the built-ins' are settings).
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)
    #: Failed admin logins per client (10 per 15 min) and for the one account (100 per
    #: 15 min, whoever sends them): over either, logins answer 429 without checking.
    login_failures: SlidingWindow = field(default_factory=lambda: SlidingWindow(10, 900))
    account_failures: SlidingWindow = field(default_factory=lambda: SlidingWindow(100, 900))

    @contextmanager
    def session(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as session:
            yield session

    def path_prefix(self) -> str:
        """The path part of ``NEWSLETTER_BASE_URL`` ("" or "/news"): links, forms and redirects
        within a page are host-relative, so a page works wherever it is served (another port,
        a staging host) and no URL is ever built from the request's ``Host``. Emails, which
        leave the site, use the full base URL."""
        return urlsplit(self.settings.base_url).path.rstrip("/")

    def page(self, name: str, status: int = 200, **values: Any) -> HTMLResponse:
        prefix = self.path_prefix()
        template = self.templates.get_template(name)
        body = template.render(
            site_name=self.settings.newsletter_name,
            postal_address=self.settings.postal_address,
            url_for_path=lambda path: prefix + path,
            **values,
        )
        return HTMLResponse(body, status_code=status, headers=SECURITY_HEADERS)

    def message(self, heading: str, *lines: str, status: int = 200) -> HTMLResponse:
        return self.page("message.html", status=status, heading=heading, lines=lines)


def web_context(request: Request) -> WebContext:
    ctx: WebContext = request.app.state.web
    return ctx
