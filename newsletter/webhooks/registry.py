"""The parser of each provider, by the send backend's URL scheme (``PARSERS[provider]``).

Apart from the package so that importing the event types (:mod:`newsletter.webhooks.base`),
which every send does, does not import every provider's parser and what they need (requests,
X.509 for SNS): 270 modules and 17 MiB in each sender process.
"""

from __future__ import annotations

from newsletter.webhooks import mailgun, postmark, resend, sendgrid, ses
from newsletter.webhooks.base import WebhookParser

PARSERS: dict[str, WebhookParser] = {
    "postmark": postmark.parse,
    "sendgrid": sendgrid.parse,
    "mailgun": mailgun.parse,
    "ses": ses.parse,
    "resend": resend.parse,
}
