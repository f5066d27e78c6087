"""Verify and parse bounce, complaint and delivery webhooks from the email APIs we send with.

``PARSERS[provider](headers, body, secret=..., now=None)`` returns the request's events as
:class:`ProviderEvent` values, or raises :class:`WebhookRejected` when the request cannot be
trusted or read (answer 401/400 and store nothing). The provider names match the send
backends' URL schemes. What ``secret`` is differs per provider (see each module): Postmark
the Basic-auth ``user:password``, SendGrid the verification public key, Mailgun the webhook
signing key, SES the expected SNS TopicArn, Resend the ``whsec_...`` signing secret.

SES also needs :func:`newsletter.webhooks.ses.subscription_confirm_url` once, when SNS asks the
endpoint to confirm the subscription, and may raise
:class:`newsletter.webhooks.ses.CertificateUnavailable` (answer 5xx so SNS retries).
"""

from __future__ import annotations

from newsletter.webhooks import mailgun, postmark, resend, sendgrid, ses
from newsletter.webhooks.base import EventKind, ProviderEvent, WebhookParser, WebhookRejected
from newsletter.webhooks.ses import CertificateUnavailable, subscription_confirm_url

PARSERS: dict[str, WebhookParser] = {
    "postmark": postmark.parse,
    "sendgrid": sendgrid.parse,
    "mailgun": mailgun.parse,
    "ses": ses.parse,
    "resend": resend.parse,
}

__all__ = [
    "PARSERS",
    "CertificateUnavailable",
    "EventKind",
    "ProviderEvent",
    "WebhookParser",
    "WebhookRejected",
    "subscription_confirm_url",
]
