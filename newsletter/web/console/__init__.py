"""The console that editors, operators and admins use in a browser: ``signin`` (sign in and
out, set a password), ``drafts`` (the editions, a draft as subscribers will get it, preflight,
test send, subject, intro, items, approval), ``suggestions`` (writers' verdicts: write,
accept, reject), ``operations`` (running sends, schedules) and
``people`` (users, the audit log), ``subscribers`` (find, change, export, erase); ``base``
holds what they share.

Every page is behind a signed-in session (``newsletter.operations.accounts``): a random cookie token
(HttpOnly, SameSite=Lax, Secure when the base URL is https, path ``/console``) whose SHA-256
is the session's key. Every change is a POST carrying the session's CSRF token, and a request
the browser marks cross-site is refused before anything is read. Roles decide what each
person may do (``accounts.PERMISSIONS``); every change lands in the audit log. The actions
go through ``publish``, so the console, the CLI and the scheduler behave alike.

The subscriber pages' tokens (``/u/...``, ``/confirm/...``) and this cookie never open each
other: different purposes, different secrets, different paths.
"""

from __future__ import annotations

from fastapi import APIRouter

from newsletter.web.console import (
    drafts,
    operations,
    people,
    signin,
    subscribers,
    suggestions,
)
from newsletter.web.console.base import COOKIE, Forbidden, LoginRequired

__all__ = ["COOKIE", "Forbidden", "LoginRequired", "router"]


def _router() -> APIRouter:
    assembled = APIRouter()
    for module in (signin, drafts, suggestions, operations, people, subscribers):
        assembled.include_router(module.router, prefix="/console")
    return assembled


router = _router()
