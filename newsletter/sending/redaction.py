"""Keeping configured secrets out of everything the engine stores or shows.

A provider's error body is stored as a delivery's error and a pause reason, and shown by
``edition status``, ``edition list``, the console and ``doctor``; some providers echo the
credential they refused ("invalid API key 'SG.abc…'"), and a driver may quote a URL. Every
text from outside passes :meth:`Redactor.scrub` before it is stored or printed, which replaces
each configured secret (raw, percent-encoded, or inside an HTTP Basic token) with ``***``.

The secrets are the ones the settings hold: the signing keys, a leftover admin password, the
writers' API keys, webhook secrets (a plugin's too, for the backends in use: read from the
variable its declaration names), the database password, and the credentials in
``NEWSLETTER_MAIL_BACKEND`` (an API backend's token sits in the URL's user part; an SMTP login
name is not a secret and stays readable). A URL that can't be parsed counts as a secret whole.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

from sqlalchemy.engine import make_url

from newsletter.config import INSECURE_SECRET_KEYS, Settings
from newsletter.webhooks import registry

#: What replaces a secret (the same mask ``describe()`` uses in backend URLs).
MASK = "***"
#: Shorter values are not treated as secrets: masking "ab" everywhere would garble every text
#: without protecting anything (the settings refuse weak secrets anyway).
MIN_SECRET = 4
#: Schemes whose URL user part is a login name, not a credential.
LOGIN_SCHEMES = frozenset({"smtp", "smtps"})
_BASIC = re.compile(r"Basic\s+([A-Za-z0-9+/=]{8,})")


@dataclass(frozen=True, slots=True)
class Redactor:
    """Masks known secret values in text; an empty one changes nothing."""

    pattern: re.Pattern[str] | None = None
    secrets: tuple[str, ...] = ()

    @classmethod
    def of(cls, values: Iterable[str]) -> Redactor:
        """A redactor for ``values`` and their percent-encoded forms.

        A secret is matched only where it is not inside a longer word, so a short one such as
        "short" doesn't blank out "shorter"; longest first, so a secret that contains another
        is masked whole. The published placeholders are not secrets and stay readable.
        """
        forms: set[str] = set()
        for value in values:
            value = value.strip()
            if len(value) < MIN_SECRET or value.lower() in INSECURE_SECRET_KEYS:
                continue
            forms.update({value, quote(value, safe=""), unquote(value)})
        if not forms:
            return cls()
        ordered = tuple(sorted(forms, key=len, reverse=True))
        alternatives = "|".join(re.escape(v) for v in ordered)
        pattern = re.compile(f"(?<![A-Za-z0-9])(?:{alternatives})(?![A-Za-z0-9])")
        return cls(pattern, ordered)

    def scrub(self, text: str) -> str:
        """``text`` with every secret masked, Basic credentials included."""
        if self.pattern is None or not text:
            return text
        text = self.pattern.sub(MASK, text)
        return _BASIC.sub(self._basic, text)

    def _basic(self, match: re.Match[str]) -> str:
        """A ``Basic <base64>`` token whose decoded form holds a secret is masked whole."""
        try:
            decoded = base64.b64decode(match.group(1), validate=True).decode("utf-8", "replace")
        except ValueError:
            return match.group(0)
        return f"Basic {MASK}" if any(s in decoded for s in self.secrets) else match.group(0)


def url_secrets(value: str) -> list[str]:
    """The credentials in each URL of a space-separated list (failover lists hold several).

    The password always; the user part too for API backends (it is their key). A URL that
    can't be parsed may carry a secret anywhere, so it is one whole.
    """
    found: list[str] = []
    for url in value.split():
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018  (raises on a malformed netloc)
        except ValueError:
            found.append(url)
            continue
        if parts.password:
            found.append(parts.password)
        if parts.username and parts.scheme.lower() not in LOGIN_SCHEMES:
            found.append(parts.username)
    return found


def redactor_for(settings: Settings, environ: Mapping[str, str] | None = None) -> Redactor:
    """Every secret the settings hold (see the module docstring); a plugin's webhook secret
    from ``environ`` (default: this process's environment), then the settings' ``.env``."""
    values = [
        *settings.signing_keys(),
        settings.admin_password,
        settings.anthropic_api_key,
        settings.hf_token,
    ]
    webhook = [str(getattr(settings, n)) for n in Settings.model_fields if n.startswith("webhook_")]
    # The scheme by hand: urlsplit raises on some malformed URLs, and this must not.
    schemes = [u.partition("://")[0].lower() for u in settings.mail_backend.split() if "://" in u]
    webhook += registry.plugin_secrets(
        schemes, settings, os.environ if environ is None else environ
    )
    for secret in webhook:  # as a whole, a Basic pair's password, a Svix key's body
        values += [secret, secret.partition(":")[2], secret.removeprefix("whsec_")]
    try:
        values.append(make_url(settings.database_url).password or "")
    except Exception:  # an unparsable URL: the whole of it may be a secret
        values.append(settings.database_url)
    values += url_secrets(settings.mail_backend)
    mailbox = url_secrets(settings.bounce_mailbox)
    values += mailbox + [unquote(v) for v in mailbox]  # as written and as the server sees it
    return Redactor.of(v for v in values if v)
