"""Signed form tokens for the admin's buttons (cross-site request forgery).

The admin page authenticates with HTTP Basic, which a browser sends with *any* request to this
site, including a form another site posts. So each admin form carries a token: an HMAC over the
action, the edition it acts on and its issue time, keyed from ``NEWSLETTER_SECRET_KEY``; another
site can't make one. Tokens expire after :data:`MAX_AGE` seconds (a page left open overnight
asks for a reload, not a silent refusal: the handler says so).
"""

from __future__ import annotations

import hashlib
import hmac

MAX_AGE = 12 * 3600
#: Several web processes on several hosts: a form made on one may be posted to another.
CLOCK_SKEW = 120


def _key(secret: str) -> bytes:
    return hashlib.sha256(b"newsletter admin form\x00" + secret.encode()).digest()


def _mac(secret: str, action: str, target: int, issued: int) -> str:
    body = f"{action}:{target}:{issued}".encode()
    return hmac.new(_key(secret), body, hashlib.sha256).hexdigest()[:32]


def form_token(secret: str, *, action: str, target: int, now: float) -> str:
    """``<issued>.<mac>`` for one action on one edition."""
    issued = int(now)
    return f"{issued}.{_mac(secret, action, target, issued)}"


def form_token_ok(secret: str, token: str, *, action: str, target: int, now: float) -> bool:
    """True if ``token`` was made here for this action and edition, less than MAX_AGE ago."""
    issued_text, _, mac = token.partition(".")
    if not (issued_text.isascii() and issued_text.isdigit()) or len(issued_text) > 12:
        return False
    issued = int(issued_text)
    if not (-CLOCK_SKEW <= now - issued <= MAX_AGE):
        return False
    return hmac.compare_digest(mac.encode(), _mac(secret, action, target, issued).encode())
