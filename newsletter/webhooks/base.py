"""The webhook contract: one normalized event type for every provider, and one way to refuse.

Each provider module exposes ``parse(headers, body, *, secret, now=None, ...)`` that first
proves the request came from the provider (signature, shared secret), then turns the body into
a list of :class:`ProviderEvent`. Anything it cannot trust or read raises
:class:`WebhookRejected`: the web app answers 401/400 and stores nothing. Events the engine
does not act on (opens, clicks, deferrals, ...) are skipped, not refused, so the provider stops
retrying them.

This package is pure: no database, no web framework, no network except where a provider makes
it unavoidable (the SNS certificate, behind an injectable fetcher). The helpers below are the
parsing steps every provider shares; they raise :class:`WebhookRejected` with a short reason
that never contains a secret, a signature or the body.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from newsletter.edition.verp import DeliveryRef

DETAIL_MAX = 500


class WebhookRejected(Exception):
    """The request is not a genuine, readable webhook (bad or missing signature or secret,
    replayed, malformed). The message says why in a few words and never echoes a secret."""


class EventKind(StrEnum):
    """What a provider reported; the values equal ``newsletter.storage.models.MailEventKind``."""

    delivered = "delivered"
    bounced_hard = "bounced_hard"
    bounced_soft = "bounced_soft"
    complained = "complained"
    #: Refused for a reason that is not the address's: our reputation, authentication or
    #: content (5.7.x), or our own return path (5.1.7/5.1.8). Stored, counted for operators,
    #: never held against the subscriber.
    blocked = "blocked"


@dataclass(frozen=True, slots=True)
class ProviderEvent:
    """One provider report about one recipient of one message.

    ``event_id`` is unique per provider and stable across the provider's retries, so the
    store can refuse duplicates. ``provider_message_id`` is the id the provider's send API
    returned (what the send backends store), or None when the provider omits it.
    ``occurred_at`` is normalized to UTC (a naive datetime is refused: a provider time
    without an offset would be a guess) and ``detail`` is cut to :data:`DETAIL_MAX` chars.
    """

    provider: str
    event_id: str
    kind: EventKind
    email: str
    provider_message_id: str | None
    occurred_at: datetime
    detail: str
    #: The delivery a signed VERP return path named (bounce reports over SMTP or a mailbox);
    #: it beats ``provider_message_id``.
    delivery: DeliveryRef | None = None
    #: Whether an event tied to no delivery may be matched to a subscriber by address alone.
    #: Provider webhooks are signed, so yes; a bounce report that came without a genuine
    #: return path could be forged by anyone who can send mail, so it is stored, not acted on.
    match_email: bool = True

    def __post_init__(self) -> None:
        if self.occurred_at.tzinfo is None:
            raise ValueError("ProviderEvent.occurred_at must be timezone-aware")
        object.__setattr__(self, "occurred_at", self.occurred_at.astimezone(UTC))
        object.__setattr__(self, "detail", clip(self.detail))


class WebhookParser(Protocol):
    """The shape of every provider's ``parse`` (providers may add keyword-only options)."""

    def __call__(
        self,
        headers: Mapping[str, str],
        body: bytes,
        *,
        secret: str,
        now: datetime | None = None,
    ) -> list[ProviderEvent]: ...


@dataclass(frozen=True, slots=True)
class WebhookProvider:
    """What an entry point in the ``newsletter.webhooks`` group names: one provider's webhook.

    ``POST /webhooks/<name>`` exists only while the secret is set: the environment variable
    ``secret_variable`` (for the built-ins ``NEWSLETTER_WEBHOOK_<NAME>``, which is also a
    setting, so ``.env`` and ``Settings`` work too). ``replay_token``, when the provider signs
    a one-time token (Mailgun), returns it from an accepted body so a replay is refused.
    """

    name: str
    parse: WebhookParser
    secret_variable: str
    replay_token: Callable[[bytes], str] | None = None


def clip(text: str, limit: int = DETAIL_MAX) -> str:
    """``text`` on one line, stripped, at most ``limit`` characters (an ellipsis marks a cut)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def header(headers: Mapping[str, str], name: str) -> str | None:
    """The value of header ``name``, compared case-insensitively, or None when absent.

    A plain dict is case-sensitive and web frameworks differ in how they spell names, so
    every lookup goes through here.
    """
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def require_header(headers: Mapping[str, str], name: str) -> str:
    """The value of header ``name``; refuses the request when it is missing or empty."""
    value = header(headers, name)
    if not value:
        raise WebhookRejected(f"missing {name} header")
    return value


def resolve_now(now: datetime | None) -> datetime:
    """``now`` (for tests and replays) or the current time; a naive ``now`` is a caller bug."""
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now


def load_json(body: bytes) -> Any:
    """The decoded JSON body; refuses anything that is not UTF-8 JSON."""
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise WebhookRejected("body is not valid JSON") from None


def as_object(value: Any, what: str) -> dict[str, Any]:
    """``value`` when it is a JSON object; refuses otherwise (``what`` names it in the reason)."""
    if not isinstance(value, dict):
        raise WebhookRejected(f"{what} is not a JSON object")
    return value


def text(obj: Mapping[str, Any], key: str) -> str:
    """``obj[key]`` as stripped text, or "" when absent or not a string/number."""
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return ""
    return str(value).strip()


def require_text(obj: Mapping[str, Any], key: str, what: str) -> str:
    """``obj[key]`` as non-empty text; refuses the request when it is missing."""
    value = text(obj, key)
    if not value:
        raise WebhookRejected(f"{what} has no {key}")
    return value


def from_unix(value: Any, what: str) -> datetime:
    """A Unix timestamp (seconds, int, float or numeric string) as an aware UTC datetime."""
    try:
        seconds = float(value)
        return datetime.fromtimestamp(seconds, UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        raise WebhookRejected(f"{what} is not a Unix timestamp") from None


def from_iso(value: Any, what: str) -> datetime:
    """An ISO 8601 timestamp as an aware datetime; one without an offset is taken as UTC,
    which is what every provider here means when it leaves the offset out."""
    if not isinstance(value, str):
        raise WebhookRejected(f"{what} is not a timestamp")
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise WebhookRejected(f"{what} is not a timestamp") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def check_fresh(value: str, now: datetime, max_skew: timedelta, what: str) -> datetime:
    """The Unix timestamp ``value`` when it lies within ``max_skew`` of ``now``.

    A signed request replayed later, or stamped far in the future, is refused: the signature
    covers the timestamp, so this is what stops an attacker from resending a captured request.
    """
    if not value.strip().isdigit():
        raise WebhookRejected(f"{what} is not a Unix timestamp")
    moment = from_unix(value, what)
    if abs(now - moment) > max_skew:
        raise WebhookRejected(f"{what} too far from now (stale or replayed)")
    return moment


def content_hash(obj: Any) -> str:
    """A stable event id for providers that give none: sha256 hex of the canonical JSON."""
    canonical = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
