"""The public pages: subscribe with double opt-in, confirm, unsubscribe (RFC 8058), archive.

No page needs JavaScript; every state change is a POST (a GET never changes anything, because
mail scanners and link previews fetch every link in a message). Bad tokens get one plain 400
page that says nothing about why.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Depends, Form, Request
from fastapi.responses import HTMLResponse
from sqlmodel import Session

from newsletter import publish
from newsletter.audience import subscriptions
from newsletter.audience.confirmation import build_confirmation, confirmed_subscriber
from newsletter.audience.welcome import build_welcome
from newsletter.edition.tokens import BadToken, TokenClaims
from newsletter.sending.redaction import redactor_for
from newsletter.storage import listings, store
from newsletter.storage.models import (
    Edition,
    EditionStatus,
    Newsletter,
    Subscriber,
    SubscriptionStatus,
)
from newsletter.web.context import SECURITY_HEADERS, RowId, WebContext, web_context
from newsletter.web.throttle import client_key

log = logging.getLogger(__name__)
router = APIRouter()
Ctx = Annotated[WebContext, Depends(web_context)]

#: Editions a reader may have received, so their "view in browser" link works.
ARCHIVED = (EditionStatus.sending, EditionStatus.paused, EditionStatus.sent)


def _bad_link(ctx: WebContext) -> HTMLResponse:
    return ctx.message(
        "This link is not valid",
        "It may be incomplete or expired: try copying the whole link from the email.",
        status=400,
    )


def _claims(ctx: WebContext, token: str, purpose: str) -> TokenClaims | None:
    try:
        return ctx.signer.verify(token, purpose=purpose)
    except BadToken:
        return None


# --- subscribe ------------------------------------------------------------------------------


def _newsletters(session: Session) -> list[Newsletter]:
    return listings.newsletters(session, by="name")


@router.get("/", response_class=HTMLResponse)
@router.get("/subscribe", response_class=HTMLResponse)
def subscribe_form(ctx: Ctx) -> HTMLResponse:
    with ctx.session() as session:
        newsletters = _newsletters(session)
    form = {"email": "", "name": "", "newsletters": []}
    return ctx.page("subscribe.html", newsletters=newsletters, form=form, error=None)


@router.post("/subscribe", response_class=HTMLResponse)
def subscribe(
    request: Request,
    background: BackgroundTasks,
    ctx: Ctx,
    email: Annotated[str, Form(max_length=2000)] = "",
    name: Annotated[str, Form(max_length=2000)] = "",
    newsletters: Annotated[list[str] | None, Form()] = None,
    website: Annotated[str, Form(max_length=2000)] = "",
) -> HTMLResponse:
    """Same answer for a new, pending or active address: the form reveals nothing, and the
    email goes out after the response so the timing reveals nothing either."""
    client = client_key(
        request.client.host if request.client else "unknown", ctx.settings.ipv6_prefix
    )
    if not ctx.throttle.allow(client):
        return ctx.message(
            "Too many attempts",
            "Please wait an hour before trying again.",
            status=429,
        )
    slugs = newsletters or []
    with ctx.session() as session:
        known = {n.slug: n for n in _newsletters(session)}
        try:
            signup = subscriptions.parse_signup(
                email=email, name=name, slugs=slugs, newsletters=known
            )
        except subscriptions.FormError as exc:
            form = {"email": email[:254], "name": name[:200], "newsletters": slugs}
            return ctx.page(
                "subscribe.html",
                status=400,
                newsletters=list(known.values()),
                form=form,
                error=f"{exc.field.capitalize()}: {exc.message}",
            )
        if website:  # the hidden field only bots fill in
            return _check_inbox(ctx)
        if subscriptions.signups_full(session, now=ctx.clock(), limits=_limits(ctx)):
            return _signups_full(ctx)
    # Everything that depends on whether the address is known happens after the response:
    # new, pending and active addresses get the same page in the same time.
    background.add_task(_signup, ctx, signup)
    return _check_inbox(ctx)


def _limits(ctx: WebContext) -> subscriptions.SignupLimits:
    return subscriptions.SignupLimits(
        per_address_week=ctx.settings.confirm_limit, per_hour=ctx.settings.signup_limit
    )


def _signups_full(ctx: WebContext) -> HTMLResponse:
    """The site-wide hourly ceiling: says nothing about any address, stores nothing."""
    log.warning(
        "signup ceiling reached: %d confirmation emails in the last hour "
        "(NEWSLETTER_SIGNUP_LIMIT); new signups are turned away until it falls",
        ctx.settings.signup_limit,
    )
    return ctx.message(
        "Please try again later",
        "We are receiving an unusual number of signups. Nothing was stored; please try again "
        "in an hour.",
        status=503,
    )


def _check_inbox(ctx: WebContext) -> HTMLResponse:
    return ctx.message(
        "Check your inbox",
        "If this address can receive our email, a message with a confirmation link is on its "
        "way. Nothing else arrives until you confirm.",
    )


def _signup(ctx: WebContext, signup: subscriptions.Signup) -> None:
    """Record the signup and mail the confirmation if one is due. A failed send clears the
    hour's throttle, so the person can simply try again; the error goes to the log without
    the backend's credentials or the address."""
    with ctx.session() as session:
        try:
            subscriber_id = subscriptions.request_signup(
                session, signup, now=ctx.clock(), limits=_limits(ctx)
            )
        except subscriptions.SignupsFull:  # filled up between the page and this task
            log.warning("signup ceiling reached (NEWSLETTER_SIGNUP_LIMIT): a signup was dropped")
            session.rollback()
            return
        session.commit()
        if subscriber_id is None:
            return
        subscriber = session.get(Subscriber, subscriber_id)
        assert subscriber is not None
        pending = [
            n
            for n, status in subscriptions.newsletters_of(session, subscriber_id=subscriber_id)
            if status == SubscriptionStatus.pending
        ]
        message = build_confirmation(ctx.settings, ctx.signer, subscriber, pending)
        try:
            with ctx.make_backend() as backend:
                result = backend.send_messages([message])[0]
            failed = not result.status.delivered
            detail = result.detail
        except Exception as exc:  # the backend is down or misconfigured
            failed, detail = True, type(exc).__name__
        if failed:
            log.warning(
                "confirmation email to subscriber %s failed: %s",
                subscriber_id,
                redactor_for(ctx.settings).scrub(detail or ""),
            )
            subscriptions.release_confirmation(session, subscriber_id=subscriber_id)
            session.commit()


@router.api_route("/confirm/{token}", methods=["GET", "HEAD"], response_class=HTMLResponse)
def confirm_page(token: str, ctx: Ctx) -> HTMLResponse:
    subscriber_id = confirmed_subscriber(ctx.signer, token)
    if subscriber_id is None:
        return _bad_link(ctx)
    with ctx.session() as session:
        subscriber = session.get(Subscriber, subscriber_id)
        if subscriber is None:
            return _bad_link(ctx)
        pending = [
            n.name
            for n, status in subscriptions.newsletters_of(session, subscriber_id=subscriber_id)
            if status == SubscriptionStatus.pending
        ]
    if not pending:
        return ctx.message("You are subscribed", "There is nothing left to confirm.")
    return ctx.page("confirm.html", token=token, email=subscriber.email, names=pending)


@router.post("/confirm/{token}", response_class=HTMLResponse)
def confirm(token: str, ctx: Ctx, background: BackgroundTasks) -> HTMLResponse:
    subscriber_id = confirmed_subscriber(ctx.signer, token)
    if subscriber_id is None:
        return _bad_link(ctx)
    with ctx.session() as session:
        try:
            activated = subscriptions.confirm(session, subscriber_id=subscriber_id)
        except store.NotFound:
            return _bad_link(ctx)
        session.commit()
        names = [n.name for n in _newsletters(session) if n.id in activated]
    for newsletter_id in activated:  # only what this confirmation turned on: once each
        background.add_task(_welcome, ctx, subscriber_id, newsletter_id)
    if names:
        return ctx.message(
            "You are subscribed", f"Welcome! {', '.join(names)} arrives with the next edition."
        )
    return ctx.message("You are subscribed", "There is nothing left to confirm.")


def _welcome(ctx: WebContext, subscriber_id: int, newsletter_id: int) -> None:
    """The welcome email, with the latest sent edition's web version; a failure is logged
    (without the address or the backend's credentials) and changes nothing."""
    with ctx.session() as session:
        subscriber = session.get(Subscriber, subscriber_id)
        newsletter = session.get(Newsletter, newsletter_id)
        if subscriber is None or newsletter is None or subscriber.suppressed:
            return
        latest = listings.latest_sent_edition_id(session, newsletter_id=newsletter_id)
        base = ctx.settings.base_url.rstrip("/")
        message = build_welcome(
            ctx.settings,
            ctx.signer,
            subscriber,
            newsletter,
            f"{base}/archive/{latest}" if latest else None,
        )
    try:
        with ctx.make_backend() as backend:
            result = backend.send_messages([message])[0]
        detail = None if result.status.delivered else result.detail
    except Exception as exc:  # the backend is down or misconfigured
        detail = type(exc).__name__
    if detail:
        log.warning(
            "welcome email to subscriber %s failed: %s",
            subscriber_id,
            redactor_for(ctx.settings).scrub(detail),
        )


# --- unsubscribe (RFC 8058) -----------------------------------------------------------------


def _unsubscribe_view(
    ctx: WebContext, session: Session, claims: TokenClaims, token: str, state: str, **extra: str
) -> HTMLResponse:
    subscriber = session.get(Subscriber, claims.subscriber_id)
    newsletter = session.get(Newsletter, claims.newsletter_id)
    assert subscriber is not None and newsletter is not None
    others = [
        n.name
        for n, status in subscriptions.newsletters_of(session, subscriber_id=claims.subscriber_id)
        if n.id != claims.newsletter_id and status == SubscriptionStatus.active
    ]
    return ctx.page(
        "unsubscribe.html",
        token=token,
        state=state,
        email=subscriber.email,
        newsletter=newsletter,
        others=others,
        error=extra.get("error"),
    )


def _valid_unsubscribe(ctx: WebContext, session: Session, token: str) -> TokenClaims | None:
    claims = _claims(ctx, token, "u")
    if claims is None:
        return None
    if (
        session.get(Subscriber, claims.subscriber_id) is None
        or session.get(Newsletter, claims.newsletter_id) is None
    ):
        return None
    if claims.edition_id is not None and session.get(Edition, claims.edition_id) is None:
        return replace(claims, edition_id=None)  # the edition was deleted: still let them go
    return claims


@router.api_route("/u/{token}", methods=["GET", "HEAD"], response_class=HTMLResponse)
def unsubscribe_page(token: str, ctx: Ctx) -> HTMLResponse:
    """Shows one button; never changes anything (scanners fetch links)."""
    with ctx.session() as session:
        claims = _valid_unsubscribe(ctx, session, token)
        if claims is None:
            return _bad_link(ctx)
        statuses = {
            n.id: status
            for n, status in subscriptions.newsletters_of(
                session, subscriber_id=claims.subscriber_id
            )
        }
        left = statuses.get(claims.newsletter_id) == SubscriptionStatus.unsubscribed
        return _unsubscribe_view(ctx, session, claims, token, "left" if left else "ask")


@router.post("/u/{token}", response_class=HTMLResponse)
def unsubscribe(
    token: str,
    ctx: Ctx,
    via: Annotated[str, Form()] = "",
) -> HTMLResponse:
    """RFC 8058 one-click: unsubscribe at once, answer 200 (no redirect, no cookie).

    The signed token is the authority, so the ``List-Unsubscribe=One-Click`` body a mail
    client sends is not read (an odd or missing one still unsubscribes); our own page adds
    ``via=page``, so the event says where it came from.
    """
    with ctx.session() as session:
        claims = _valid_unsubscribe(ctx, session, token)
        if claims is None:
            return _bad_link(ctx)
        subscriptions.unsubscribe(
            session,
            subscriber_id=claims.subscriber_id,
            newsletter_id=claims.newsletter_id,
            edition_id=claims.edition_id,
            source="page" if via == "page" else "one-click",
        )
        session.commit()
        return _unsubscribe_view(ctx, session, claims, token, "left")


@router.post("/u/{token}/all", response_class=HTMLResponse)
def unsubscribe_all(token: str, ctx: Ctx) -> HTMLResponse:
    with ctx.session() as session:
        claims = _valid_unsubscribe(ctx, session, token)
        if claims is None:
            return _bad_link(ctx)
        subscriptions.unsubscribe(
            session,
            subscriber_id=claims.subscriber_id,
            newsletter_id=claims.newsletter_id,
            edition_id=claims.edition_id,
            source="page",
            everything=True,
        )
        session.commit()
        return _unsubscribe_view(ctx, session, claims, token, "left_all")


@router.post("/u/{token}/resubscribe", response_class=HTMLResponse)
def resubscribe(token: str, ctx: Ctx) -> HTMLResponse:
    with ctx.session() as session:
        claims = _valid_unsubscribe(ctx, session, token)
        if claims is None:
            return _bad_link(ctx)
        try:
            subscriptions.resubscribe(
                session,
                subscriber_id=claims.subscriber_id,
                newsletter_id=claims.newsletter_id,
                edition_id=claims.edition_id,
            )
        except subscriptions.CannotResubscribe as exc:
            return _unsubscribe_view(ctx, session, claims, token, "left", error=str(exc))
        session.commit()
        return _unsubscribe_view(ctx, session, claims, token, "back")


# --- archive --------------------------------------------------------------------------------


@router.get("/archive", response_class=HTMLResponse)
def archive(ctx: Ctx) -> HTMLResponse:
    with ctx.session() as session:
        rows = listings.archived_editions(session, statuses=ARCHIVED, limit=500)
    editions = [
        {
            "id": e.id,
            "subject": e.subject,
            "date": (e.sent_at or e.send_started_at or e.created_at).strftime("%d %b %Y"),
        }
        for e in rows
    ]
    return ctx.page("archive.html", editions=editions)


@router.api_route("/archive/{edition_id}", methods=["GET", "HEAD"], response_class=HTMLResponse)
def archived_edition(edition_id: RowId, ctx: Ctx) -> HTMLResponse:
    """The web version: the edition with no greeting and no personal link, no "view in
    browser" or "you are receiving this", and a way to subscribe and to the other editions."""
    cached = ctx.archive_cache.get(edition_id)
    if cached is None:
        with ctx.session() as session:
            edition = session.get(Edition, edition_id)
            if edition is None or edition.status not in ARCHIVED:
                return ctx.message("Not found", status=404)
            rendered, _, _ = publish.prepare(session, edition=edition, settings=ctx.settings)
            cached = rendered.web_html
            if edition.status == EditionStatus.sent and len(ctx.archive_cache) < 256:
                ctx.archive_cache[edition_id] = cached
    # The same policy as every page (the email's own styles are inline; no script anywhere),
    # with images allowed from https for comparisons that carry them.
    headers = dict(SECURITY_HEADERS)
    headers["Content-Security-Policy"] = headers["Content-Security-Policy"].replace(
        "img-src 'self'", "img-src 'self' https: data:"
    )
    return HTMLResponse(cached, headers=headers)
