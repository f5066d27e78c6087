"""Settings read from the environment (prefix ``NEWSLETTER_``) and an optional ``.env`` file.

Nothing is built at import time: the entry points (the CLI, the web app's factory) build
:class:`Settings` when they start and pass it down, so tests and the demo pass their own.
Values are validated when settings are read, so a bad URL or time zone is refused before
anything runs.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from email.headerregistry import Address
from email.utils import parseaddr
from pathlib import Path
from typing import Literal, get_args
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from newsletter.edition.content import SLUG_PATTERN
from newsletter.edition.verp import ReturnPaths
from newsletter.errors import NewsletterError
from newsletter.sending.domainrate import DomainLimits, WarmupPlan
from newsletter.sending.ratelimit import RateSpec

#: Placeholder values that must never sign real tokens.
INSECURE_SECRET_KEYS = frozenset({"", "change-me", "changeme", "secret", "dev", "demo"})
MIN_SECRET_KEY_LENGTH = 32
#: A signing key must carry at least this much guessable-work (see :func:`key_strength_bits`):
#: `secrets.token_urlsafe(32)` has ~256, `change-me-change-me-change-me-change-me` ~65.
MIN_SECRET_KEY_BITS = 128


def key_strength_bits(key: str) -> float:
    """A cautious estimate of a key's entropy: the characters a guesser could not predict
    (a repeat of three or more characters already seen counts as one, as an LZ77 coder would
    write it) times log2 of the alphabet the key draws from. Judges keys by what they are,
    not against a list of known placeholders (a list of six let any repeated phrase through).
    """
    if not key:
        return 0.0
    alphabet = (
        26 * any(c.islower() for c in key)
        + 26 * any(c.isupper() for c in key)
        + 10 * any(c.isdigit() for c in key)
        + 33 * any(not c.isalnum() for c in key)
    )
    symbols, i = 0, 0
    while i < len(key):
        longest = 0
        for j in range(i):
            k = 0
            while i + k < len(key) and key[j + k] == key[i + k]:
                k += 1
            longest = max(longest, k)
        i += longest if longest >= 3 else 1
        symbols += 1
    return symbols * math.log2(max(alphabet, 2))


#: Who may write suggestions (the writers package builds each; a schedule file names one).
WriterName = Literal["rules", "claude", "huggingface"]
WRITER_NAMES: tuple[str, ...] = get_args(WriterName)


class ConfigError(NewsletterError, ValueError):
    """A setting is missing or unusable; the message names the variable and the fix."""


class Settings(BaseSettings):
    """Every knob of the engine. Each field maps to ``NEWSLETTER_<FIELD>``."""

    model_config = SettingsConfigDict(
        env_prefix="NEWSLETTER_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    database_url: str = Field(
        "sqlite:///./newsletter.db", description="SQLAlchemy URL of the store."
    )
    mail_backend: str = Field(
        "file://./outbox",
        description="Where mail goes: console://, file:///path, memory://, smtp://user:pass@host:port?starttls=1",
    )
    base_url: str = Field(
        "http://127.0.0.1:8000",
        description="Public URL of the web app; every link in an email starts with it.",
    )
    secret_key: str = Field("", description="Signs unsubscribe tokens. At least 32 characters.")
    from_address: str = Field(
        "Weekly AI Tool Verdicts <verdicts@example.com>",
        alias="NEWSLETTER_FROM",
        description='Sender, as "Name <address>".',
    )
    reply_to: str = Field(
        "",
        description='Where replies go, as "Name <address>" or an address (empty: the sender).',
    )
    dkim_keys: str = Field(
        "",
        description="DKIM signing for the messages the engine sends itself: "
        '"selector:/path/key.pem", comma-separated for two keys (RSA-2048 and Ed25519: dual '
        "signing). Empty: no signature (an email API signs with its own key).",
    )
    dkim_domain: str = Field(
        "",
        description="The DKIM d= domain (empty: the From address's domain, which DMARC "
        "alignment needs).",
    )
    postal_address: str = Field(
        "AI Tool Verdicts, 1 Example Street, Springfield, USA",
        description="Physical postal address shown in every footer (CAN-SPAM).",
    )
    newsletter: str = Field(
        "weekly-ai-tool-verdicts", description="Slug of the default newsletter."
    )
    newsletter_name: str = Field(
        "Weekly AI Tool Verdicts", description="Name of the default newsletter when created."
    )
    timezone: str = Field(
        "UTC", description="IANA time zone of the default newsletter's week when created."
    )
    site_url: str = Field(
        "https://aitoolverdicts.example",
        description='The review site; the "N more this week" link points here.',
    )
    item_cap: int = Field(8, ge=1, le=50, description="Most comparisons in one edition.")
    batch_size: int = Field(500, ge=1, le=10_000, description="Deliveries sent per batch.")
    senders: int = Field(
        0,
        ge=0,
        le=64,
        description="Senders of one send, each with its own connection; 0: four per CPU core, "
        "at most 16 (spread over one process per core).",
    )
    lease_seconds: float = Field(
        300, ge=0, description="How long a send holds a claimed batch before another may take it."
    )
    max_attempts: int = Field(
        5, ge=1, le=50, description="Tries of a transiently failing delivery before it fails."
    )
    retry_base_seconds: float = Field(
        60, ge=0, description="First retry delay; doubles each try (with jitter), at most 1 h."
    )
    error_budget: int = Field(
        100, ge=0, description="Failures in a row that pause the edition (0: never)."
    )
    rate_limit: str = Field(
        "", description='Per send: "100/s", "50000/h" or "100/s,50000/h"; empty is unlimited.'
    )
    journal_dir: str = Field(
        "auto",
        description="Where each sender writes answers ahead of the ledger, read back after a "
        'crash on this machine. "auto": a folder per database under the user\'s state '
        'directory; "off": no journal.',
    )
    admin_password: str = Field(
        "",
        description="No longer used: the console (/console; `newsletter user add`) replaced the "
        "HTTP-Basic /admin page. Read only so doctor and the web app can say so, and so a "
        "leftover value is still masked in logs.",
    )
    writer: WriterName = Field(
        "rules",
        description="Who writes verdict suggestions for editors: rules (no key, the default and "
        "the fallback), claude or huggingface (need the ai extra and a key).",
    )
    writer_budget: int = Field(
        60_000,
        ge=0,
        le=10_000_000,
        description="Tokens a writer may spend on one edition's suggestions; past it the rest "
        "fall back to the rules, with a note. 0: no model calls at all.",
    )
    writer_timeout: float = Field(
        60.0, gt=0, le=600, description="Seconds one writer call may take."
    )
    anthropic_api_key: str = Field("", description="Claude writer: the Anthropic API key.")
    claude_model: str = Field("claude-sonnet-4-5", description="Claude writer: the model.")
    anthropic_base_url: str = Field(
        "", description="Claude writer: another API host (a proxy); empty: Anthropic's."
    )
    hf_token: str = Field("", description="Hugging Face writer: the access token (hf_...).")
    hf_model: str = Field(
        "meta-llama/Llama-3.3-70B-Instruct", description="Hugging Face writer: the model id."
    )
    hf_providers: str = Field(
        "groq,together,fireworks-ai",
        description="Hugging Face writer: Inference Providers to try, in order (failover on "
        "429, 5xx and timeouts).",
    )
    hf_endpoint: str = Field(
        "", description="Hugging Face writer: another Hub host; empty: huggingface.co."
    )
    hf_router: str = Field(
        "", description="Hugging Face writer: another router host; empty: router.huggingface.co."
    )
    subscribe_limit: int = Field(
        10, ge=1, le=10_000, description="Subscribe form posts per client IP per hour."
    )
    confirm_limit: int = Field(
        3,
        ge=1,
        le=50,
        description="Confirmation emails one address can be sent in a week, however often the "
        "form is posted with it (at most one an hour).",
    )
    signup_limit: int = Field(
        1000,
        ge=1,
        le=1_000_000,
        description="Confirmation emails the whole site sends in an hour; beyond it the form "
        "asks people to come back later and stores nothing.",
    )
    pending_days: int = Field(
        7,
        ge=1,
        le=365,
        description="Days an unconfirmed signup is kept; then the scheduler forgets it (and "
        "the address, if nothing else holds it).",
    )
    ipv6_prefix: int = Field(
        64,
        ge=16,
        le=128,
        description="IPv6 clients are counted by network of this prefix (subscribe and login "
        "limits): one household or server usually holds a whole /64.",
    )
    soft_bounce_limit: int = Field(
        3, ge=0, le=100, description="Soft bounces in a row that suppress an address (0: never)."
    )
    bounce_address: str = Field(
        "",
        description="VERP return path for the messages the engine sends itself, e.g. "
        "bounces@example.com: each message's envelope sender becomes "
        "bounces+<signed token>@example.com, so a bounce names its delivery. Empty: the From "
        "address (bounces land there unread).",
    )
    bounce_mailbox: str = Field(
        "",
        description="The mailbox `newsletter bounces poll` reads and empties: "
        "imaps://user:password@host:993/INBOX, imap://...?starttls=1, pop3s://user:password@"
        "host:995 or pop3://... (empty: no polling).",
    )
    complaint_rate_limit: float = Field(
        0.003,
        ge=0,
        le=1,
        description="Complaints per delivered message that pause an edition (Gmail's 0.3%; "
        "0: never).",
    )
    bounce_rate_limit: float = Field(
        0.05,
        ge=0,
        le=1,
        description="Hard bounces per message sent that pause an edition (0: never).",
    )
    breaker_min_sample: int = Field(
        500,
        ge=1,
        description="Messages an edition must have sent before the rates can pause it.",
    )
    domain_limits: str = Field(
        "",
        description='Most messages per minute to one receiving domain, e.g. "gmail.com=600,'
        'yahoo.com=300,outlook.com=300,*=1000" (googlemail.com counts as gmail.com; '
        "hotmail.com, live.com and msn.com as outlook.com; ymail.com and aol.com as "
        "yahoo.com). Empty: no per-domain limit.",
    )
    warmup: str = Field(
        "",
        description='Warm-up plan for a new IP or domain: "YYYY-MM-DD:50,100,500,..." caps '
        "the messages sent on the first, second, ... day from that date; after the last "
        "day there is no cap. Empty: none.",
    )
    dns_resolver: str = Field(
        "",
        description="host[:port] of the nameserver `newsletter doctor` asks about SPF, DKIM and "
        "DMARC (empty: the system's).",
    )
    sending_ips: str = Field(
        "",
        description="Comma-separated public IPs mail leaves from, for doctor's SPF check "
        "(empty: the smtp:// host's addresses).",
    )
    delivery_retention_days: int = Field(
        0,
        ge=0,
        description="`newsletter ledger prune` deletes the delivery rows of editions finished "
        "more than this many days ago, keeping their counts (0: only with --days).",
    )
    webhook_postmark: str = Field(
        "", description='Postmark webhook Basic auth "user:password" (empty: endpoint off).'
    )
    webhook_sendgrid: str = Field(
        "", description="SendGrid Event Webhook verification key (base64 public key)."
    )
    webhook_mailgun: str = Field("", description="Mailgun HTTP webhook signing key.")
    webhook_ses: str = Field(
        "", description="Amazon SNS topic ARN whose SES notifications are accepted."
    )
    webhook_resend: str = Field("", description="Resend webhook signing secret (whsec_...).")
    old_secret_keys: str = Field(
        "",
        description="Comma-separated previous keys, still accepted when verifying tokens "
        "(key rotation); never used to sign.",
    )

    model_config["populate_by_name"] = True

    @field_validator("from_address")
    @classmethod
    def _valid_from(cls, value: str) -> str:
        name, addr = parseaddr(value)
        if "@" not in addr or any(c in value for c in "\r\n"):
            raise ValueError(f'expected "Name <address>", got {value!r}')
        return value

    @field_validator("reply_to")
    @classmethod
    def _valid_reply_to(cls, value: str) -> str:
        if not value:
            return value
        _, addr = parseaddr(value)
        if "@" not in addr or any(c in value for c in "\r\n"):
            raise ValueError(f'expected "Name <address>" or an address, got {value!r}')
        return value

    @field_validator("base_url", "site_url")
    @classmethod
    def _valid_url(cls, value: str) -> str:
        """An http(s) URL of ASCII characters with a host and no query, fragment or spaces.

        Every link in every email starts with it, and the unsubscribe URL goes into a header:
        anything else would break links or allow header injection.
        """
        parts = urlsplit(value)
        if (
            parts.scheme not in ("http", "https")
            or not parts.hostname
            or parts.query
            or parts.fragment
            or not value.isascii()
            or any(c.isspace() or ord(c) < 32 for c in value)
        ):
            raise ValueError(
                "expected an ASCII http(s) URL with a host and no query, fragment or spaces "
                "(IDN hosts in their xn-- form)"
            )
        return value.rstrip("/")

    @field_validator("bounce_address")
    @classmethod
    def _valid_bounce_address(cls, value: str) -> str:
        if value:
            ReturnPaths(value, ["check"])  # raises ValueError naming the setting
        return value.strip()

    @field_validator("domain_limits")
    @classmethod
    def _valid_domain_limits(cls, value: str) -> str:
        DomainLimits.parse(value)  # raises ValueError naming the entry
        return value

    @field_validator("warmup")
    @classmethod
    def _valid_warmup(cls, value: str) -> str:
        if value.strip():
            WarmupPlan.parse(value)
        return value

    @field_validator("rate_limit")
    @classmethod
    def _valid_rate(cls, value: str) -> str:
        RateSpec.parse(value)
        return value

    @field_validator("timezone")
    @classmethod
    def _valid_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise ValueError(f"unknown IANA time zone {value!r}") from None
        return value

    @field_validator("newsletter")
    @classmethod
    def _valid_slug(cls, value: str) -> str:
        if not re.fullmatch(SLUG_PATTERN, value):
            raise ValueError("expected lower-case words joined by hyphens, e.g. weekly-verdicts")
        return value

    def signing_keys(self) -> list[str]:
        """The current key first, then the old ones still accepted."""
        return [self.secret_key, *(k.strip() for k in self.old_secret_keys.split(",") if k.strip())]

    def journal_path(self) -> Path | None:
        """The journal folder of this database, or None when journaling is off.

        Per database, because recovery deletes a journal once read: a journal of one
        database must never be read by a sender of another. ``auto`` does not depend on the
        working directory, so every sender of a database on this machine finds the others'.
        """
        if self.journal_dir.strip().lower() in ("", "off", "none"):
            return None
        if self.journal_dir != "auto":
            return Path(self.journal_dir).expanduser().resolve()
        state = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
        identity = self.database_url
        if identity.startswith("sqlite:///") and not identity.startswith("sqlite:////"):
            identity = "sqlite:///" + str(Path(identity[len("sqlite:///") :]).resolve())
        digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
        return state / "newsletter" / "journal" / digest

    def sender(self) -> Address:
        """The From address as a structured value."""
        name, addr = parseaddr(self.from_address)
        local, _, domain = addr.rpartition("@")
        return Address(display_name=name, username=local, domain=domain)

    def require_sending_ready(self) -> None:
        """Refuse to sign real links with a missing, placeholder or short key.

        Raises :class:`ConfigError` naming the variable, never the key. There is no demo
        exception: ``newsletter demo`` generates a strong key of its own.
        """
        key = self.secret_key
        if (
            key.lower() in INSECURE_SECRET_KEYS
            or len(key) < MIN_SECRET_KEY_LENGTH
            or key_strength_bits(key) < MIN_SECRET_KEY_BITS
        ):
            raise ConfigError(
                "NEWSLETTER_SECRET_KEY is missing, shorter than "
                f"{MIN_SECRET_KEY_LENGTH} characters or too predictable (a placeholder, a "
                "repeated phrase); generate one with "
                '`python -c "import secrets; print(secrets.token_urlsafe(48))"`'
            )
