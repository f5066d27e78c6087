"""Health checks for operators (``newsletter doctor``): is this setup ready to send?

Each check looks at one thing an edition needs (settings, secret key, database, mail backend,
journal, web endpoints) and returns a :class:`Check` saying what it found and, when something
is wrong, how to fix it, naming the ``NEWSLETTER_`` variable. :func:`run_checks` never raises:
a check that breaks is reported as failed, so one broken thing never hides the others.

Nothing is sent and nothing is created: SMTP servers are opened and closed (EHLO, STARTTLS and
AUTH when configured); email APIs are reached over TCP and, where the provider has one, asked a
harmless authenticated GET (Postmark ``GET /server``, SendGrid ``GET /v3/scopes``); folders are
tested with a temporary file that vanishes. A missing SQLite file is reported, not created.

Secrets never reach a summary: backends speak through ``describe()``, database URLs are rendered
with the password hidden, and every text is scrubbed of the configured secrets as a last guard,
since a driver's error message may quote more than expected.
"""

from __future__ import annotations

import dataclasses
import math
import re
import smtplib
import socket
import ssl
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import requests
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from newsletter.backends import BackendError, MailBackend, available_schemes, backend_from_url
from newsletter.backends.console import ConsoleBackend
from newsletter.backends.failover import FailoverBackend
from newsletter.backends.file import FileBackend
from newsletter.backends.http import LOOPBACK, HTTPBackend
from newsletter.backends.memory import MemoryBackend
from newsletter.backends.postmark import PostmarkBackend
from newsletter.backends.sendgrid import SendGridBackend
from newsletter.backends.smtp import SMTPBackend
from newsletter.config import INSECURE_SECRET_KEYS, MIN_SECRET_KEY_LENGTH, ConfigError, Settings
from newsletter.database import alembic_config, current_revision, head_revision, make_engine

#: Domains reserved for examples (RFC 2606, RFC 6761): a placeholder left in the settings.
_RESERVED_TLDS = frozenset({"example", "test", "invalid", "localhost"})
_RESERVED_DOMAINS = frozenset({"example.com", "example.net", "example.org"})
_LABELS = {True: "ok", None: "warn", False: "FAIL"}
_MAIL_FIX = (
    "Check the host and port in NEWSLETTER_MAIL_BACKEND and that the server accepts "
    "connections from this machine."
)


@dataclass(frozen=True)
class Check:
    """One finding: ``ok`` is True (fine), None (a warning, or skipped) or False (broken)."""

    name: str
    ok: bool | None
    summary: str
    fix: str | None = None


Step = Callable[[Settings, float], list[Check]]


def run_checks(settings: Settings, *, timeout: float = 5.0) -> list[Check]:
    """Every check, in order; never raises. ``timeout`` bounds each network wait, in seconds."""
    steps: list[tuple[str, Step]] = [
        ("configuration", _configuration),
        ("secret key", _secret_key),
        ("database", _database),
        ("mail backend", _mail_backend),
        ("journal", _journal),
        ("admin page", _admin_page),
        ("webhooks", _webhooks),
    ]
    checks: list[Check] = []
    for name, step in steps:
        try:
            checks.extend(step(settings, timeout))
        except Exception as exc:  # a check must never take the others down with it
            summary = f"the check itself broke: {type(exc).__name__}: {exc}"
            checks.append(Check(name, False, summary, "Fix the setting the message names."))
    secrets = _secrets(settings)
    return [_scrub(check, secrets) for check in checks]


def render(checks: Sequence[Check]) -> str:
    """One line per check, a ``fix:`` line under each that is not ok, then the counts."""
    lines = []
    for check in checks:
        lines.append(f"{_LABELS[check.ok]:<4}  {check.name}: {check.summary}")
        if check.ok is not True and check.fix:
            lines.append(f"      fix: {check.fix}")
    counts = {ok: sum(1 for c in checks if c.ok is ok) for ok in (True, None, False)}
    warnings = "warning" if counts[None] == 1 else "warnings"
    lines.append(f"{counts[True]} ok, {counts[None]} {warnings}, {counts[False]} failed")
    return "\n".join(lines)


def exit_code(checks: Iterable[Check]) -> int:
    """1 if any check failed, else 0: warnings alone don't fail the command."""
    return 1 if any(check.ok is False for check in checks) else 0


# --- settings ------------------------------------------------------------------------------


def _configuration(settings: Settings, _timeout: float) -> list[Check]:
    problems, fixes = [], []
    sender = settings.sender()
    if _placeholder_host(sender.domain):
        problems.append(f"from address {sender.addr_spec} is at an example domain")
        fixes.append('Set NEWSLETTER_FROM to "Name <address>" at a domain with SPF and DKIM.')
    if settings.postal_address == Settings.model_fields["postal_address"].default:
        problems.append("the postal address is the shipped example (CAN-SPAM wants yours)")
        fixes.append("Set NEWSLETTER_POSTAL_ADDRESS to your physical postal address.")
    found = "; ".join(problems) or f"settings valid, sending as {settings.from_address}"
    config = Check("configuration", None if problems else True, found, " ".join(fixes) or None)

    base = urlsplit(settings.base_url)
    if base.scheme == "https":
        base_check = Check("base URL", True, f"{settings.base_url} (https)")
    elif base.hostname in LOOPBACK:
        base_check = Check("base URL", True, f"{settings.base_url} (http on this machine: dev)")
    else:
        base_check = Check(
            "base URL",
            None,
            f"{settings.base_url} is http on a public host: one-click unsubscribe (RFC 8058) "
            "needs https, and tokens and passwords would cross the network in clear",
            "Serve the web app over https and set NEWSLETTER_BASE_URL=https://...",
        )

    site = urlsplit(settings.site_url)
    site_fix = "Set NEWSLETTER_SITE_URL to your review site's https URL."
    if _placeholder_host(site.hostname or ""):
        site_check = Check("site URL", None, f"{settings.site_url} is an example domain", site_fix)
    elif site.scheme != "https":
        site_check = Check("site URL", None, f"{settings.site_url} is plain http", site_fix)
    else:
        site_check = Check("site URL", True, settings.site_url)
    return [config, base_check, site_check]


def _placeholder_host(host: str) -> bool:
    labels = host.lower().rstrip(".").split(".")
    return labels[-1] in _RESERVED_TLDS or ".".join(labels[-2:]) in _RESERVED_DOMAINS


def _secret_key(settings: Settings, _timeout: float) -> list[Check]:
    key = settings.secret_key
    try:
        settings.require_sending_ready()
    except ConfigError as exc:
        summary = f"NEWSLETTER_SECRET_KEY is {_key_weakness(key)}: unsubscribe links can be forged"
        return [Check("secret key", False, summary, str(exc))]
    old = settings.signing_keys()[1:]
    # Each old key against the very rule the current key passed (require_sending_ready).
    weak = [
        f"#{n} ({_key_weakness(k)})"
        for n, k in enumerate(old, 1)
        if _refused(settings.model_copy(update={"secret_key": k}))
    ]
    if weak:
        summary = f"current key strong, but NEWSLETTER_OLD_SECRET_KEYS {', '.join(weak)} "
        summary += "would accept forged links"
        fix = "Remove weak keys from NEWSLETTER_OLD_SECRET_KEYS (links they signed stop working)."
        return [Check("secret key", None, summary, fix)]
    accepted = f"; {len(old)} old key(s) still accepted" if old else ""
    return [Check("secret key", True, f"set, at least {MIN_SECRET_KEY_LENGTH} chars{accepted}")]


def _refused(settings: Settings) -> bool:
    try:
        settings.require_sending_ready()
    except ConfigError:
        return True
    return False


def _key_weakness(key: str) -> str:
    if not key:
        return "empty"
    if key.lower() in INSECURE_SECRET_KEYS:
        return "a placeholder"
    return f"shorter than {MIN_SECRET_KEY_LENGTH} characters"


# --- database ------------------------------------------------------------------------------


def _database(settings: Settings, timeout: float) -> list[Check]:
    try:
        url = make_url(settings.database_url)
    except Exception:  # any parse error; its message may quote the password
        fix = "Set NEWSLETTER_DATABASE_URL, e.g. sqlite:///./newsletter.db."
        return [Check("database", False, "NEWSLETTER_DATABASE_URL is not a database URL", fix)]
    shown = url.render_as_string(hide_password=True)
    skipped = Check("schema", None, "not checked: the database is not reachable")
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        if not Path(str(url.database)).exists():
            fix = "Run `newsletter db upgrade` to create it, or fix NEWSLETTER_DATABASE_URL."
            return [Check("database", False, f"{shown}: the file does not exist", fix), skipped]
    if url.get_backend_name() == "postgresql" and "connect_timeout" not in url.query:
        url = url.update_query_dict({"connect_timeout": str(max(1, math.ceil(timeout)))})
    try:
        engine = make_engine(url.render_as_string(hide_password=False))
    except ImportError as exc:
        fix = "Install the driver, e.g. `pip install 'newsletter-engine[postgres]'`."
        return [Check("database", False, f"{shown}: driver missing ({exc.name})", fix), skipped]
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return [Check("database", True, f"{shown} reachable"), _schema(engine)]
    except SQLAlchemyError as exc:
        fix = "Check NEWSLETTER_DATABASE_URL (host, port, user, password) and that the server runs."
        return [Check("database", False, f"can't connect to {shown}: {_reason(exc)}", fix), skipped]
    finally:
        engine.dispose()


def _schema(engine: Engine) -> Check:
    try:
        current, head = current_revision(engine), head_revision(engine)
    except SQLAlchemyError as exc:
        return Check("schema", False, f"can't read the migration level: {_reason(exc)}")
    if current == head:
        return Check("schema", True, f"at the head revision {head}")
    upgrade = "Run `newsletter db upgrade` (back up the database first)."
    if current is None:
        summary = f"empty (no migrations applied); code expects {head}"
        return Check("schema", False, summary, upgrade)
    try:
        ScriptDirectory.from_config(alembic_config(engine)).get_revision(current)
    except Exception:  # alembic raises several kinds for an unknown revision
        summary = f"at revision {current}, which this code does not know (migrated by a newer one?)"
        fix = "Run the engine version that migrated it, or point NEWSLETTER_DATABASE_URL elsewhere."
        return Check("schema", False, summary, fix)
    return Check("schema", False, f"at revision {current}, code expects {head}", upgrade)


def _reason(exc: SQLAlchemyError) -> str:
    """The driver's own words on one line, without SQLAlchemy's SQL echo and links."""
    reason = exc.orig if isinstance(exc, DBAPIError) else exc
    return " ".join(str(reason).split())


# --- mail ----------------------------------------------------------------------------------


def _mail_backend(settings: Settings, timeout: float) -> list[Check]:
    try:
        backend = backend_from_url(settings.mail_backend)
    except BackendError as exc:
        schemes = ", ".join(f"{s}://" for s in available_schemes())
        fix = f"Set NEWSLETTER_MAIL_BACKEND to a URL starting with one of {schemes}."
        return [Check("mail backend", False, f"NEWSLETTER_MAIL_BACKEND: {exc}", fix)]
    backends = backend.backends if isinstance(backend, FailoverBackend) else [backend]
    if len(backends) == 1:
        return [_probe("mail backend", backend, timeout)]
    return [
        _probe(f"mail backend {n}/{len(backends)}", b, timeout) for n, b in enumerate(backends, 1)
    ]


def _probe(name: str, backend: MailBackend, timeout: float) -> Check:
    """Reach the backend as far as possible without sending anything."""
    if isinstance(backend, SMTPBackend):
        return _probe_smtp(name, backend, timeout)
    if isinstance(backend, HTTPBackend):
        return _probe_api(name, backend, timeout)
    local = "no mail leaves this machine (fine for development, not for production)"
    if isinstance(backend, FileBackend):  # before ConsoleBackend, its base class
        problem = _unwritable(backend.directory)
        fix = "Point NEWSLETTER_MAIL_BACKEND at a folder this user can write, or at a real server."
        if problem:
            return Check(name, False, f"{backend.describe()}: {problem}", fix)
        return Check(name, None, f"{backend.describe()} is writable; {local}", fix)
    fix = "Set NEWSLETTER_MAIL_BACKEND to smtp://... or an email API to send for real."
    if isinstance(backend, ConsoleBackend | MemoryBackend):
        return Check(name, None, f"{backend.describe()}: {local}", fix)
    if backend.open():  # a third-party backend: its contract is all we know
        backend.close()
    return Check(name, None, f"{backend.describe()} opened and closed; not checked further")


def _probe_smtp(name: str, backend: SMTPBackend, timeout: float) -> Check:
    backend.timeout = min(backend.timeout, timeout)
    try:
        backend.open()
    except BackendError as exc:
        cause = exc.__cause__
        fix = _MAIL_FIX
        if isinstance(cause, smtplib.SMTPAuthenticationError):
            fix = "The server refused the login: check the user and password in "
            fix += "NEWSLETTER_MAIL_BACKEND (percent-encode special characters)."
        elif isinstance(cause, smtplib.SMTPNotSupportedError):
            fix = "The server offers no login here: most want ?starttls=1 (port 587) or "
            fix += "smtps:// (port 465) in NEWSLETTER_MAIL_BACKEND first."
        elif isinstance(cause, ssl.SSLError):
            fix = "TLS failed: check smtps:// versus ?starttls=1 and the port in "
            fix += "NEWSLETTER_MAIL_BACKEND (?verify=0 only for a test server)."
        return Check(name, False, str(exc), fix)
    backend.close()
    tls = backend.use_ssl or backend.starttls
    found = f"{backend.describe()}: connected, {'TLS' if tls else 'no TLS'}, "
    found += f"logged in as {backend.username}" if backend.username else "no login"
    if backend.username and not tls and backend.host not in LOOPBACK:
        fix = "Add ?starttls=1 (or use smtps://) in NEWSLETTER_MAIL_BACKEND."
        return Check(name, None, found + ": the password crossed the network in clear", fix)
    return Check(name, True, found)


def _probe_api(name: str, backend: HTTPBackend, timeout: float) -> Check:
    endpoint = urlsplit(str(getattr(backend, "endpoint", "") or getattr(backend, "base_url", "")))
    host = endpoint.hostname or ""
    port = endpoint.port or (80 if endpoint.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        summary = f"{backend.describe()}: can't reach {host}:{port}: {exc}"
        fix = f"Check DNS and the outbound firewall for {host}:{port}, or ?endpoint= in "
        return Check(name, False, summary, fix + "NEWSLETTER_MAIL_BACKEND.")
    request = _credential_probe(backend)
    if request is None:
        summary = f"{backend.describe()}: {host}:{port} answers; credentials are not verified "
        fix = "Send a test edition to your own address: the doctor never sends mail."
        return Check(name, None, summary + "(that would need a real send)", fix)
    url, headers = request
    try:
        response = requests.get(url, headers=headers, timeout=timeout)
    except requests.RequestException as exc:
        summary = f"{backend.describe()}: the credential check failed: {type(exc).__name__}"
        return Check(name, False, summary, _MAIL_FIX)
    code = response.status_code
    fix = "Check the API key or token in NEWSLETTER_MAIL_BACKEND (percent-encoded user part)."
    if code in (401, 403):
        return Check(name, False, f"{backend.describe()}: credentials refused ({code})", fix)
    if not response.ok:
        return Check(name, None, f"{backend.describe()}: the credential check answered {code}")
    body = HTTPBackend.json_body(response)
    if isinstance(backend, SendGridBackend) and "mail.send" not in body.get("scopes", []):
        fix = "Give the SendGrid API key the Mail Send permission, or use one that has it."
        return Check(name, False, f"{backend.describe()}: the key can't send mail", fix)
    return Check(name, True, f"{backend.describe()}: credentials accepted (checked with GET)")


def _credential_probe(backend: HTTPBackend) -> tuple[str, dict[str, str]] | None:
    """A harmless authenticated GET for providers that have one (it reads, never sends).

    Postmark's ``GET /server`` reads the server the token belongs to; SendGrid's
    ``GET /v3/scopes`` lists the key's own permissions. Resend, Mailgun and SES offer no read
    that every sending key is allowed, so a refusal there would not mean the key can't send.
    """
    if isinstance(backend, PostmarkBackend):
        headers = {"Accept": "application/json", "X-Postmark-Server-Token": backend._token}
        return f"{backend.endpoint}/server", headers
    if isinstance(backend, SendGridBackend):
        return f"{backend.endpoint}/v3/scopes", {"Authorization": f"Bearer {backend._api_key}"}
    return None


# --- files and web -------------------------------------------------------------------------


def _unwritable(folder: Path) -> str | None:
    """Why ``folder`` can't take files, or None; a missing folder needs a writable ancestor."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is not a folder"
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        return f"can't write in {existing}: {exc.strerror or exc}"
    return None


def _journal(settings: Settings, _timeout: float) -> list[Check]:
    fix = 'Set NEWSLETTER_JOURNAL_DIR to "auto" or a writable folder on local disk.'
    folder = settings.journal_path()
    if folder is None:
        summary = "off: a sender that crashes may mail its chunk in flight again"
        return [Check("journal", None, summary, fix)]
    if problem := _unwritable(folder):
        return [Check("journal", False, f"{folder}: {problem}", fix)]
    state = "is writable" if folder.exists() else "will be created (its parent is writable)"
    return [Check("journal", True, f"{folder} {state}")]


def _admin_page(settings: Settings, _timeout: float) -> list[Check]:
    if not settings.admin_password:
        fix = 'Set NEWSLETTER_ADMIN_PASSWORD to turn on /admin (user "admin", HTTP Basic).'
        return [Check("admin page", None, "admin page off (no password set)", fix)]
    base = urlsplit(settings.base_url)
    if base.scheme != "https" and base.hostname not in LOOPBACK:
        summary = "on, but over http: the admin password would cross the network in clear"
        return [Check("admin page", None, summary, "Serve over https (NEWSLETTER_BASE_URL).")]
    return [Check("admin page", True, f'on at {settings.base_url}/admin (user "admin")')]


def _webhooks(settings: Settings, _timeout: float) -> list[Check]:
    """Bounce and complaint webhooks for each email API in NEWSLETTER_MAIL_BACKEND."""
    schemes = dict.fromkeys(urlsplit(u).scheme.lower() for u in settings.mail_backend.split())
    checks = []
    for scheme in schemes:
        if f"webhook_{scheme}" in Settings.model_fields:
            variable = f"NEWSLETTER_WEBHOOK_{scheme.upper()}"
            url = f"{settings.base_url}/webhooks/{scheme}"
            if getattr(settings, f"webhook_{scheme}"):
                checks.append(Check("webhooks", True, f"{scheme} events accepted at {url}"))
                continue
            summary = f"{variable} is empty: {scheme} bounces and complaints won't be processed"
            fix = f"Set {variable} and point {scheme}'s webhook at {url}."
            checks.append(Check("webhooks", None, summary, fix))
        elif scheme in SMTPBackend.schemes:
            summary = (
                f"{scheme}: bounces come back as mail to the sender; the engine doesn't read them"
            )
            fix = "Watch that mailbox and `newsletter subscribers remove` bounced addresses."
            checks.append(Check("webhooks", None, summary, fix))
    return checks or [Check("webhooks", True, "none apply to this mail backend")]


# --- secrets -------------------------------------------------------------------------------


def _secrets(settings: Settings) -> re.Pattern[str] | None:
    """Every configured secret as it could be quoted by an error message, as one pattern.

    Matched only where not inside a longer word, so that a weak key such as "short" doesn't
    blank out "shorter"; the published placeholders are not secrets and stay readable.
    """
    values = [*settings.signing_keys(), settings.admin_password]
    values += [getattr(settings, f) for f in Settings.model_fields if f.startswith("webhook_")]
    try:
        values.append(make_url(settings.database_url).password or "")
    except Exception:  # an unparsable URL: the whole of it may be a secret
        values.append(settings.database_url)
    for url in settings.mail_backend.split():
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018  (raises on a malformed netloc)
        except ValueError:  # unparsable: the whole URL may carry a secret
            values.append(url)
            continue
        values += [parts.password or "", unquote(parts.password or "")]
        if parts.scheme.lower() not in SMTPBackend.schemes:  # API backends: the user is the key
            values += [parts.username or "", unquote(parts.username or "")]
    secrets = {str(v) for v in values if len(str(v)) >= 4 and v.lower() not in INSECURE_SECRET_KEYS}
    if not secrets:
        return None
    alternatives = "|".join(re.escape(v) for v in sorted(secrets, key=len, reverse=True))
    return re.compile(f"(?<![A-Za-z0-9])(?:{alternatives})(?![A-Za-z0-9])")


def _scrub(check: Check, secrets: re.Pattern[str] | None) -> Check:
    if secrets is None:
        return check
    fix = secrets.sub("***", check.fix) if check.fix else check.fix
    return dataclasses.replace(check, summary=secrets.sub("***", check.summary), fix=fix)
