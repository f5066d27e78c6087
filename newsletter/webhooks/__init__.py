"""Verify and parse bounce, complaint and delivery webhooks from the email APIs we send with.

``registry.provider(name).parse(headers, body, secret=..., now=None)`` returns the request's
events as :class:`ProviderEvent` values, or raises :class:`WebhookRejected` when the request
cannot be trusted or read (answer 401/400 and store nothing). The provider names match the send
backends' URL schemes; a plugin adds one through the ``newsletter.webhooks`` entry-point group
(:mod:`newsletter.webhooks.registry`). What ``secret`` is differs per provider (see each
module): Postmark the Basic-auth ``user:password``, SendGrid the verification public key,
Mailgun the webhook signing key, SES the expected SNS TopicArn, Resend the ``whsec_...``
signing secret.

The package holds only the event types; the parsers load with
:mod:`newsletter.webhooks.registry` (the web app), not in every sender that imports an event
type. SES also needs
:func:`newsletter.webhooks.ses.subscription_confirm_url` once, when SNS asks the
endpoint to confirm the subscription, and may raise
:class:`newsletter.webhooks.ses.CertificateUnavailable` (answer 5xx so SNS retries).
"""

from __future__ import annotations

from newsletter.webhooks.base import (
    EventKind,
    ProviderEvent,
    WebhookParser,
    WebhookProvider,
    WebhookRejected,
)

__all__ = ["EventKind", "ProviderEvent", "WebhookParser", "WebhookProvider", "WebhookRejected"]
