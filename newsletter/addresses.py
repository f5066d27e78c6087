"""What an email address and a display name must be before they are stored.

One place for the rules, because the CSV import and the public subscribe form must agree: an
address is stored in its ASCII form (IDN domains as ``xn--``: it goes into SMTP envelopes and
headers as is) with a lower-cased key that dedupes; a name has no control characters (a line
break in a name would be a header injection attempt) and a bounded length.
"""

from __future__ import annotations

from email_validator import EmailNotValidError, validate_email

MAX_NAME_LENGTH = 200
MAX_EMAIL_LENGTH = 254  # RFC 5321 path limit minus the angle brackets
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


class AddressError(ValueError):
    """The value is unusable; the message says why, for a person to read."""


def normalize_email(raw: str) -> tuple[str, str]:
    """(address as stored, dedupe key) or :class:`AddressError`."""
    raw = raw.strip()
    if not raw:
        raise AddressError("missing")
    if len(raw) > MAX_EMAIL_LENGTH:
        raise AddressError(f"longer than {MAX_EMAIL_LENGTH} characters")
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
