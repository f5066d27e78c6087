"""Webhook endpoints for the email APIs: ``POST /webhooks/{provider}``.

The provider is whatever the ``newsletter.webhooks`` entry-point group names (the built-ins
and any plugin's, see :mod:`newsletter.webhooks.registry`), with the secret its declaration
names. Each request is verified by the provider's parser (signature or shared secret) before
anything is read from it, then handed to :func:`newsletter.publish.breaker.take`. An endpoint
whose secret is not configured does not exist (404): an unverifiable webhook is never
accepted. A rejected request gets 401 and changes nothing; a provider retrying an event it
already delivered gets 200 and changes nothing either (events are deduplicated by id).
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Annotated

import requests
from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from newsletter.publish import breaker
from newsletter.storage import store
from newsletter.web.context import WebContext, web_context
from newsletter.webhooks import ProviderEvent, WebhookRejected, registry
from newsletter.webhooks import ses as ses_hooks
from newsletter.webhooks.mailgun import MAX_SKEW as mailgun_window
from newsletter.webhooks.ses import CertificateUnavailable

log = logging.getLogger(__name__)
router = APIRouter(prefix="/webhooks")
Ctx = Annotated[WebContext, Depends(web_context)]

#: Providers batch events, but no genuine webhook body comes near this.
MAX_BODY = 5 * 1024 * 1024


#: A one-time signature token is remembered this long: signed timestamps are accepted this far
#: either way of now (Mailgun's window; a plugin's is expected to be no wider).
NONCE_VALID_FOR = 2 * mailgun_window


@router.post("/{provider}")
async def webhook(provider: str, request: Request, ctx: Ctx) -> JSONResponse:
    hook = registry.provider(provider)
    secret = registry.secret_for(hook, ctx.settings, ctx.environ) if hook is not None else ""
    if hook is None or not secret:
        return JSONResponse({"error": "no such webhook"}, status_code=404)
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
        return JSONResponse({"error": "body too large"}, status_code=413)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():  # a chunked body has no length to check up front
        size += len(chunk)
        if size > MAX_BODY:
            return JSONResponse({"error": "body too large"}, status_code=413)
        chunks.append(chunk)
    body = b"".join(chunks)
    headers = dict(request.headers)
    try:
        if provider == "ses":  # confirms its own subscription, with the context's fetcher
            events = await run_in_threadpool(_ses, ctx, headers, body, secret)
        else:  # a plugin's parser may block: never on the event loop
            events = await run_in_threadpool(partial(hook.parse, headers, body, secret=secret))
    except WebhookRejected as exc:
        log.warning("%s webhook rejected: %s", provider, exc)
        return JSONResponse({"error": f"rejected: {exc}"}, status_code=401)
    except CertificateUnavailable:
        return JSONResponse({"error": "signing certificate unavailable"}, status_code=503)
    nonce = hook.replay_token(body) if hook.replay_token is not None else None
    if not await run_in_threadpool(_apply, ctx, provider, events, nonce):
        log.warning("%s webhook rejected: a signature token used before", provider)
        return JSONResponse({"error": "rejected: replayed request"}, status_code=401)
    # The same answer whatever the events did: what happened to an address (unknown, already
    # suppressed, complained) is nobody's business but the database's.
    return JSONResponse({"received": len(events)})


def _ses(ctx: WebContext, headers: dict[str, str], body: bytes, secret: str) -> list[ProviderEvent]:
    """Verify once; a genuine subscription request for our topic is confirmed (GET its
    SubscribeURL), a notification gives its events."""
    confirm_url, events = ses_hooks.read(
        headers, body, secret=secret, cert_fetcher=ctx.sns_get or ses_hooks.fetch_certificate
    )
    if confirm_url is not None:
        (ctx.sns_get or _get)(confirm_url)
        log.info("confirmed the SNS subscription to the configured topic")
    return events


def _get(url: str) -> bytes:

    response = requests.get(url, timeout=10)
    response.raise_for_status()
    return response.content


def _apply(ctx: WebContext, provider: str, events: list[ProviderEvent], nonce: str | None) -> bool:
    """Store and act on the events; False (nothing done) when ``nonce``, the request's
    signature token, was accepted before: a replay within the signature's validity."""
    with ctx.session() as session:
        if nonce is not None and not store.accept_nonce(
            session,
            provider=provider,
            token=nonce,
            now=ctx.clock(),
            valid_for=NONCE_VALID_FOR,
        ):
            session.rollback()
            return False
        # Applied, guarded by the reputation breaker, committed; a trip alerts the operators.
        breaker.take(session, ctx.settings, events, now=ctx.clock())
    return True
