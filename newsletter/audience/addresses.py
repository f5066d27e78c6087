"""What an email address and a display name must be before they are stored.

One place for the rules, because the CSV import and the public subscribe form must agree: an
address is stored in its ASCII form (IDN domains as ``xn--``: it goes into SMTP envelopes and
headers as is) with a lower-cased key that dedupes; a name has no control characters (a line
break in a name would be a header injection attempt) and a bounded length.
"""

from __future__ import annotations

import re

from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email

from newsletter.errors import NewsletterError

MAX_NAME_LENGTH = 200
MAX_EMAIL_LENGTH = 254  # RFC 5321 path limit minus the angle brackets
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


class AddressError(NewsletterError, ValueError):
    """The value is unusable; the message says why, for a person to read."""


#: The plain addresses almost every list is made of: an ASCII dot-atom local part and a
#: lower-case-able domain of letter-digit-hyphen labels under an alphabetic TLD, nothing
#: IDNA (``xn--``) or special-use. For these email-validator's answer is known (the local part
#: as written, the domain lower-cased), so an import of a million lines skips its ~30 us each;
#: anything else goes through email-validator (tests/test_importing.py compares the two).
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_PLAIN = re.compile(rf"({_ATOM}(?:\.{_ATOM})*)@((?:{_LABEL}\.)+[A-Za-z]{{2,63}})")


def _plain(raw: str) -> tuple[str, str] | None:
    """email-validator's result for a plain address, or None when it must decide."""
    match = _PLAIN.fullmatch(raw)
    if match is None or len(match.group(1)) > 64 or len(raw) > MAX_EMAIL_LENGTH:
        return None
    domain = match.group(2).lower()
    labels = domain.split(".")
    if len(domain) > 253 or any(label[2:4] == "--" for label in labels):
        return None  # IDNA-looking labels are email-validator's to judge
    if labels[-1] in SPECIAL_USE_DOMAIN_NAMES:
        return None
    email = f"{match.group(1)}@{domain}"
    return email, email.lower()


def normalize_email(raw: str) -> tuple[str, str]:
    """(address as stored, dedupe key) or :class:`AddressError`."""
    raw = raw.strip()
    if not raw:
        raise AddressError("missing")
    if len(raw) > MAX_EMAIL_LENGTH:
        raise AddressError(f"longer than {MAX_EMAIL_LENGTH} characters")
    plain = _plain(raw)
    if plain is not None:
        return plain
    try:
        checked = validate_email(raw, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        raise AddressError(str(exc)) from None
    email = checked.ascii_email or checked.normalized
    return email, email.lower()


def check_name(raw: str | None) -> str | None:
    """The name with outer spaces removed (None if empty) or :class:`AddressError`."""
    name = (raw or "").strip()
    if not name:
        return None
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise AddressError("contains control characters or line breaks")
    if any(c in BIDI_CONTROLS for c in name):
        # Right-to-left overrides make "moc.elpmaxe" read as something else in a header.
        raise AddressError("contains bidirectional control characters")
    if len(name) > MAX_NAME_LENGTH:
        raise AddressError(f"longer than {MAX_NAME_LENGTH} characters")
    return name
