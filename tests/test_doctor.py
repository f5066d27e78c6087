"""`newsletter.doctor` against real components: SQLite files, PostgreSQL, aiosmtpd, a local
HTTP server standing in for the email APIs, and ports nobody listens on."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from newsletter import backends
from newsletter.backends import MailBackend, ProbeResult
from newsletter.backends.memory import MemoryBackend
from newsletter.config import Settings
from newsletter.doctor import Check, exit_code, render, run_checks
from newsletter.storage.database import head_revision, make_engine, upgrade
from tests import dns_server
from tests.conftest import APIStub, SMTPSink

SMTP_USER, SMTP_PASSWORD = "doctor", "right-smtp-password"


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def only(checks: list[Check], name: str) -> Check:
    found = [c for c in checks if c.name == name]
    assert len(found) == 1, [c.name for c in checks]
    return found[0]


def doctor(settings: Settings, **changes: Any) -> list[Check]:
    return run_checks(settings.model_copy(update=changes), timeout=1.5)


@pytest.fixture
def healthy(settings: Settings, engine: Engine, smtp_server: SMTPSink) -> Iterator[Settings]:
    """A migrated SQLite file, the SMTP sink, an https base URL, a strong key, and a
    nameserver (dnslib, on 127.0.0.1) publishing the domain's SPF and DMARC records."""
    zones = {
        "mail.aitoolverdicts.dev": {"TXT": ["v=spf1 ip4:203.0.113.5 -all"]},
        "_dmarc.mail.aitoolverdicts.dev": {"TXT": ["v=DMARC1; p=quarantine"]},
    }
    with dns_server.running(zones) as dns:
        yield settings.model_copy(
            update={
                "mail_backend": smtp_server.url,
                "from_address": "Verdicts <verdicts@mail.aitoolverdicts.dev>",
                "site_url": "https://aitoolverdicts.dev",
                "dns_resolver": dns.address,
            }
        )


@pytest.fixture
def auth_smtp_server() -> Iterator[str]:
    """An aiosmtpd server that accepts only SMTP_USER / SMTP_PASSWORD (no TLS: loopback)."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    def authenticator(
        server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
            SMTP_USER.encode(),
            SMTP_PASSWORD.encode(),
        )
        return AuthResult(success=ok, handled=False, auth_data=auth_data)

    port = free_port()
    controller = Controller(
        object(),
        hostname="127.0.0.1",
        port=port,
        authenticator=authenticator,
        auth_require_tls=False,
    )
    controller.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        controller.stop()


# --- a healthy setup -------------------------------------------------------------------------


def test_healthy_setup_has_no_failures_and_sends_nothing(
    healthy: Settings, engine: Engine, smtp_server: SMTPSink
) -> None:
    checks = run_checks(healthy, timeout=2)

    assert [c for c in checks if c.ok is False] == []
    assert exit_code(checks) == 0
    for name in ("configuration", "base URL", "secret key", "database", "schema", "journal"):
        assert only(checks, name).ok is True, only(checks, name)
    mail = only(checks, "mail backend")
    assert mail.ok is True and "connected" in mail.summary
    assert only(checks, "schema").summary.endswith(str(head_revision(engine)))
    assert smtp_server.received == []
    assert render(checks).splitlines()[-1].endswith("0 failed")


# --- the secret key --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "words"),
    [
        ("too-short-key", "shorter than 32"),
        ("change-me", "placeholder"),
        ("", "empty"),
        ("change-me-change-me-change-me-change-me", "too predictable"),
    ],
)
def test_weak_secret_key_fails_with_a_fix(healthy: Settings, key: str, words: str) -> None:
    checks = doctor(healthy, secret_key=key)

    found = only(checks, "secret key")
    assert found.ok is False
    assert words in found.summary
    assert found.fix is not None and "NEWSLETTER_SECRET_KEY" in found.fix
    assert exit_code(checks) == 1


def test_weak_old_key_is_a_warning(healthy: Settings) -> None:
    checks = doctor(
        healthy,
        old_secret_keys="QEitVA04kIfvUPz5CAdpiMk8q-8J7cRNI_JcjXtvjwr2o5bdLBTAUw, tiny-old-key",
    )

    found = only(checks, "secret key")
    assert found.ok is None
    assert "#2 (shorter than 32 characters)" in found.summary
    assert found.fix is not None and "NEWSLETTER_OLD_SECRET_KEYS" in found.fix


# --- the database ----------------------------------------------------------------------------


def test_unmigrated_sqlite_file_fails_schema(healthy: Settings, tmp_path: Path) -> None:
    fresh = tmp_path / "fresh.db"
    engine = make_engine(f"sqlite:///{fresh}")
    with engine.connect():
        pass
    engine.dispose()

    checks = doctor(healthy, database_url=f"sqlite:///{fresh}")

    assert only(checks, "database").ok is True
    schema = only(checks, "schema")
    assert schema.ok is False and "no migrations" in schema.summary
    assert schema.fix is not None and "newsletter db upgrade" in schema.fix


def test_missing_sqlite_file_fails_and_is_not_created(healthy: Settings, tmp_path: Path) -> None:
    missing = tmp_path / "typo" / "newsletter.db"

    checks = doctor(healthy, database_url=f"sqlite:///{missing}")

    found = only(checks, "database")
    assert found.ok is False and "does not exist" in found.summary
    assert only(checks, "schema").ok is None
    assert not missing.parent.exists()


def test_older_and_unknown_revisions(healthy: Settings, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = make_engine(url)
    upgrade(engine, "+1")
    older = only(doctor(healthy, database_url=url), "schema")
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'from-the-future'"))
    engine.dispose()
    unknown = only(doctor(healthy, database_url=url), "schema")

    assert older.ok is False and "code expects" in older.summary
    assert older.fix is not None and "newsletter db upgrade" in older.fix
    assert unknown.ok is False and "does not know" in unknown.summary


def test_unreachable_postgres_fails_without_the_password(healthy: Settings) -> None:
    url = f"postgresql://doctor:pg-secret-pw@127.0.0.1:{free_port()}/newsletter"

    checks = doctor(healthy, database_url=url)

    found = only(checks, "database")
    assert found.ok is False
    assert "127.0.0.1" in found.summary and "***" in found.summary
    assert found.fix is not None and "NEWSLETTER_DATABASE_URL" in found.fix
    assert "pg-secret-pw" not in render(checks)


def test_postgres_reachable_then_migrated(healthy: Settings, postgres_url: str) -> None:
    before = doctor(healthy, database_url=postgres_url)
    engine = make_engine(postgres_url)
    upgrade(engine)
    engine.dispose()
    after = doctor(healthy, database_url=postgres_url)

    assert only(before, "database").ok is True
    assert only(before, "schema").ok is False
    assert only(after, "schema").ok is True


def test_garbage_database_url_is_a_failed_check_not_an_exception(healthy: Settings) -> None:
    found = only(doctor(healthy, database_url="not a url at all"), "database")

    assert found.ok is False and "NEWSLETTER_DATABASE_URL" in found.summary


# --- the mail backend ------------------------------------------------------------------------


def test_smtp_server_not_listening(healthy: Settings) -> None:
    checks = doctor(healthy, mail_backend=f"smtp://127.0.0.1:{free_port()}")

    found = only(checks, "mail backend")
    assert found.ok is False and "refused" in found.summary.lower()
    assert found.fix is not None and "host and port" in found.fix
    assert exit_code(checks) == 1


def test_smtp_login_refused_then_accepted(healthy: Settings, auth_smtp_server: str) -> None:
    wrong = doctor(healthy, mail_backend=f"smtp://{SMTP_USER}:wrong-pass@{auth_smtp_server}")
    right = doctor(healthy, mail_backend=f"smtp://{SMTP_USER}:{SMTP_PASSWORD}@{auth_smtp_server}")

    refused = only(wrong, "mail backend")
    assert refused.ok is False
    assert refused.fix is not None and "user and password" in refused.fix
    accepted = only(right, "mail backend")
    assert accepted.ok is True and f"logged in as {SMTP_USER}" in accepted.summary


@pytest.mark.parametrize(
    ("url", "words"), [("gopher://host", "no mail backend for gopher://"), ("", "no scheme")]
)
def test_bad_backend_url(healthy: Settings, url: str, words: str) -> None:
    found = only(doctor(healthy, mail_backend=url), "mail backend")

    assert found.ok is False and words in found.summary
    assert found.fix is not None and "smtp://" in found.fix


def test_local_backends_warn_that_no_mail_leaves(healthy: Settings, tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    a_file = tmp_path / "a-file"
    a_file.write_text("")

    memory = only(doctor(healthy, mail_backend="memory://"), "mail backend")
    folder = only(doctor(healthy, mail_backend=f"file://{outbox}"), "mail backend")
    not_folder = only(doctor(healthy, mail_backend=f"file://{a_file}"), "mail backend")

    assert memory.ok is None and "no mail leaves" in memory.summary
    assert folder.ok is None and "writable" in folder.summary
    assert not outbox.exists()
    assert not_folder.ok is False and "not a folder" in not_folder.summary


def test_postmark_token_checked_with_a_get(healthy: Settings, api_stub: APIStub) -> None:
    url = f"postmark://pm-token-1@?endpoint={api_stub.url}"
    api_stub.reply(200, '{"ID": 1, "Name": "Broadcasts"}')
    accepted = only(doctor(healthy, mail_backend=url), "mail backend")
    api_stub.replies.clear()
    api_stub.reply(401, '{"ErrorCode": 10, "Message": "Bad or missing Server API token."}')
    refused = only(doctor(healthy, mail_backend=url), "mail backend")

    assert accepted.ok is True
    assert refused.ok is False and "refused (401)" in refused.summary
    assert [(c.method, c.path) for c in api_stub.calls] == [("GET", "/server")] * 2
    assert api_stub.calls[0].headers["X-Postmark-Server-Token"] == "pm-token-1"


def test_sendgrid_key_needs_mail_send(healthy: Settings, api_stub: APIStub) -> None:
    url = f"sendgrid://SG.key@?endpoint={api_stub.url}"
    api_stub.reply(200, '{"scopes": ["mail.send", "stats.read"]}')
    can_send = only(doctor(healthy, mail_backend=url), "mail backend")
    api_stub.replies.clear()
    api_stub.reply(200, '{"scopes": ["stats.read"]}')
    cannot = only(doctor(healthy, mail_backend=url), "mail backend")

    assert can_send.ok is True
    assert cannot.ok is False and cannot.fix is not None and "Mail Send" in cannot.fix
    assert {(c.method, c.path) for c in api_stub.calls} == {("GET", "/v3/scopes")}


def test_api_without_a_harmless_read_is_reached_not_verified(
    healthy: Settings, api_stub: APIStub
) -> None:
    found = only(
        doctor(healthy, mail_backend=f"resend://re_key@?endpoint={api_stub.url}"), "mail backend"
    )

    assert found.ok is None and "not verified" in found.summary
    assert api_stub.calls == []


def test_api_endpoint_unreachable(healthy: Settings) -> None:
    url = f"postmark://pm-token@?endpoint=http://127.0.0.1:{free_port()}"

    found = only(doctor(healthy, mail_backend=url), "mail backend")

    assert found.ok is False and "can't reach 127.0.0.1" in found.summary


def test_failover_checks_each_backend(healthy: Settings, smtp_server: SMTPSink) -> None:
    url = f"{smtp_server.url} smtp://127.0.0.1:{free_port()}"

    checks = doctor(healthy, mail_backend=url)

    assert only(checks, "mail backend 1/2").ok is True
    assert only(checks, "mail backend 2/2").ok is False


class ProbedBackend(MemoryBackend):
    """A plugin backend whose probe finds a problem."""

    def probe(self, timeout: float = 5.0) -> ProbeResult:
        return ProbeResult(False, "plugin: the outbox is full", "Empty the plugin outbox.")


class BrokenProbeBackend(MemoryBackend):
    def probe(self, timeout: float = 5.0) -> ProbeResult:
        raise RuntimeError("bug in the plugin")


class SilentBackend(MemoryBackend):
    probe = MailBackend.probe  # the default: nothing to check


def test_a_plugin_backend_is_judged_by_its_own_probe(
    healthy: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The doctor calls probe() on whatever backend is configured; without one, a warning."""
    real = entry_points
    plugins = {"probed": "ProbedBackend", "broken": "BrokenProbeBackend", "silent": "SilentBackend"}

    def patched(*, group: str) -> list[EntryPoint]:
        extra = [EntryPoint(n, f"tests.test_doctor:{c}", group) for n, c in plugins.items()]
        return [*real(group=group), *extra]

    monkeypatch.setattr(backends, "entry_points", patched)

    probed = only(doctor(healthy, mail_backend="probed://"), "mail backend")
    broken = only(doctor(healthy, mail_backend="broken://"), "mail backend")
    silent = only(doctor(healthy, mail_backend="silent://"), "mail backend")

    assert (probed.ok, probed.summary, probed.fix) == (
        False,
        "plugin: the outbox is full",
        "Empty the plugin outbox.",
    )
    assert broken.ok is False and "probe broke" in broken.summary
    assert silent.ok is None and "no probe for this backend" in silent.summary


# --- URLs, journal, web ----------------------------------------------------------------------


def test_http_base_url_on_a_public_host_warns(healthy: Settings) -> None:
    public = doctor(healthy, base_url="http://news.aitoolverdicts.dev")
    local = doctor(healthy, base_url="http://127.0.0.1:8000")

    found = only(public, "base URL")
    assert found.ok is None and "RFC 8058" in found.summary
    assert found.fix is not None and "NEWSLETTER_BASE_URL" in found.fix
    assert exit_code(public) == 0
    assert only(local, "base URL").ok is True


def test_example_from_address_warns(healthy: Settings) -> None:
    found = only(doctor(healthy, from_address="V <v@example.com>"), "configuration")

    assert found.ok is None and "example domain" in found.summary
    assert found.fix is not None and "NEWSLETTER_FROM" in found.fix


def test_journal_dir(healthy: Settings, tmp_path: Path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("")

    broken = only(doctor(healthy, journal_dir=str(a_file)), "journal")
    off = only(doctor(healthy, journal_dir="off"), "journal")

    assert broken.ok is False and "not a folder" in broken.summary
    assert broken.fix is not None and "NEWSLETTER_JOURNAL_DIR" in broken.fix
    assert off.ok is None


def test_a_leftover_admin_password_and_webhooks(healthy: Settings, api_stub: APIStub) -> None:
    api_stub.reply(200, '{"Name": "Broadcasts"}')
    postmark = f"postmark://pm-token@?endpoint={api_stub.url}"
    bare = doctor(healthy, mail_backend=postmark)
    configured = doctor(
        healthy,
        mail_backend=postmark,
        admin_password="admin-pass-Xq7Lp2mN9",
        webhook_postmark="u:p-hook",
    )

    assert not [c for c in bare if c.name == "admin page"]  # nothing to say when unset
    hook = only(bare, "webhooks")
    assert hook.ok is None and "won't be processed" in hook.summary
    assert hook.fix is not None and "NEWSLETTER_WEBHOOK_POSTMARK" in hook.fix
    leftover = only(configured, "admin page")
    assert leftover.ok is None and "no longer used" in leftover.summary
    assert only(configured, "webhooks").ok is True


# --- secrets and output ----------------------------------------------------------------------


def test_no_secret_appears_in_the_report(healthy: Settings, api_stub: APIStub) -> None:
    api_stub.reply(401, '{"ErrorCode": 10, "Message": "Bad or missing Server API token."}')
    secrets = {
        "secret_key": "gB2ZkR8qVw1mNc-7LpXe4TyUiOa0SdFh_JkQ3nMzWx9",
        "old_secret_keys": "old-signing-key-" + "o" * 32,
        "admin_password": "admin-pass-123",
        "webhook_postmark": "hook-user:hook-pass",
    }
    smtp_password, api_key, db_password = "smtp-pass-456", "pm-api-key-789", "db-pass-000"
    checks = doctor(
        healthy,
        database_url=f"postgresql://u:{db_password}@127.0.0.1:{free_port()}/x",
        mail_backend=f"smtp://user:{smtp_password}@127.0.0.1:{free_port()} "
        f"postmark://{api_key}@?endpoint={api_stub.url}",
        **secrets,
    )

    report = render(checks)
    assert "smtp://user:***@127.0.0.1" in report  # the checks ran and described the backends
    assert "credentials refused" in report
    for secret in [*secrets.values(), smtp_password, api_key, db_password]:
        assert secret not in report


def test_render_and_exit_code() -> None:
    checks = [
        Check("database", True, "reachable"),
        Check("webhooks", None, "none configured", "Set NEWSLETTER_WEBHOOK_POSTMARK."),
        Check("secret key", False, "too short", "Set NEWSLETTER_SECRET_KEY."),
    ]

    assert render(checks).splitlines() == [
        "ok    database: reachable",
        "warn  webhooks: none configured",
        "      fix: Set NEWSLETTER_WEBHOOK_POSTMARK.",
        "FAIL  secret key: too short",
        "      fix: Set NEWSLETTER_SECRET_KEY.",
        "1 ok, 1 warning, 1 failed",
    ]
    assert exit_code(checks) == 1
    assert exit_code(checks[:2]) == 0


def test_doctor_says_when_nobody_can_sign_in_to_the_console(
    healthy: Settings, engine: Engine
) -> None:
    from datetime import UTC, datetime

    from sqlmodel import Session

    from newsletter.operations import accounts

    (console,) = [c for c in doctor(healthy) if c.name == "console"]
    assert console.ok is None and "no console admin yet" in console.summary
    assert "newsletter user add" in (console.fix or "")
    now = datetime(2026, 11, 24, tzinfo=UTC)
    with Session(engine) as session:
        _, token = accounts.add_user(session, email="boss@example.com", role="admin", now=now)
        accounts.set_password(
            session, token=token, password="correct horse battery staple 42", now=now
        )
        session.commit()
    (console,) = [c for c in doctor(healthy) if c.name == "console"]
    assert console.ok is True and "1 admin(s)" in console.summary
    (plain,) = [
        c for c in doctor(healthy, base_url="http://news.example.com") if c.name == "console"
    ]
    assert plain.ok is None and "over http" in plain.summary
