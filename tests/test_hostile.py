"""Issue 11, the parts done so far: hostile requests and operator mistakes get a clear answer,
never a 500, a traceback, a redirect to another host, or an edition that keeps sending. The
tests on the store run on SQLite and on PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, select
from typer.testing import CliRunner

from newsletter import publish
from newsletter.backends.memory import MemoryBackend
from newsletter.cli import app
from newsletter.config import Settings
from newsletter.storage import store
from newsletter.storage.database import make_engine, upgrade
from newsletter.storage.models import EditionStatus
from newsletter.web.app import create_app
from tests.conftest import EXAMPLES, IMPORTED_AT, SECRET
from tests.test_web import token_for


@pytest.fixture
def database_url(both_database_url: str) -> str:
    """Every test here that uses the store runs on SQLite and on PostgreSQL (production's)."""
    return both_database_url


@pytest.fixture
def client(settings: Settings, engine: Engine, seeded: Session) -> Iterator[TestClient]:
    with TestClient(
        create_app(settings, engine=engine),
        base_url="https://news.example.com",
        follow_redirects=False,
    ) as c:
        yield c


def test_ids_beyond_the_column_range_are_refused_not_a_500(
    postgres_url: str, settings: Settings
) -> None:
    """PostgreSQL's integer ends at 2,147,483,647: a bigger id in a path was a query error
    (a 500 and a traceback in the log every time)."""
    engine = make_engine(postgres_url)
    upgrade(engine)
    pg = settings.model_copy(update={"database_url": postgres_url})
    try:
        with TestClient(create_app(pg, engine=engine), raise_server_exceptions=True) as web:
            for path in ("/archive/2147483648", "/archive/99999999999999999999"):
                answer = web.get(path)
                assert 400 <= answer.status_code < 500, (path, answer.status_code)
            assert web.get("/archive/2147483647").status_code == 404  # in range, not there
    finally:
        engine.dispose()


def test_no_redirect_takes_its_host_from_the_request(client: TestClient) -> None:
    answer = client.get("/console/", headers={"Host": "evil.example"})
    assert answer.status_code != 307 and "evil.example" not in answer.headers.get("location", "")


def test_the_archive_carries_the_same_content_security_policy(
    client: TestClient, seeded: Session, settings: Settings, draft: int, add_subscribers: Any
) -> None:
    add_subscribers(1)
    publish.send_edition(seeded, edition_id=draft, settings=settings, backend=MemoryBackend())
    page = client.get(f"/archive/{draft}")
    assert page.status_code == 200
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
    assert "script-src" not in policy  # no script allowed anywhere


def test_head_is_answered_like_get(
    client: TestClient, seeded: Session, settings: Settings, add_subscribers: Any
) -> None:
    """Mail clients and link scanners probe with HEAD: a 405 looks like a broken link."""
    (person,) = add_subscribers(1, prefix="head")
    newsletter = publish.default_newsletter(seeded, settings)
    token = token_for(person.id or 0, newsletter.id or 0)
    head = client.head(f"/u/{token}")
    assert head.status_code == 200 and head.content == b""
    assert store.get_newsletter(seeded, slug=newsletter.slug)  # and nothing changed:
    assert client.get(f"/u/{token}").status_code == 200


def test_a_long_pause_reason_is_refused_and_the_pause_itself_never_fails(
    postgres_url: str, settings: Settings
) -> None:
    """On PostgreSQL a 600-character reason failed the UPDATE and the edition kept sending."""
    engine = make_engine(postgres_url)
    upgrade(engine)
    pg = settings.model_copy(update={"database_url": postgres_url})
    from newsletter.audience.importing import import_comparisons

    try:
        with Session(engine, expire_on_commit=False) as session:
            publish.default_newsletter(session, pg)
            import_comparisons(session, path=EXAMPLES)
            session.commit()
            from datetime import UTC, datetime

            edition_id = (
                publish.draft_edition(
                    session,
                    settings=pg,
                    newsletter_slug=None,
                    at=datetime(2026, 11, 25, tzinfo=UTC),
                ).edition.id
                or 0
            )
            publish.start_edition(session, edition_id=edition_id, settings=pg)
        env = {
            "NEWSLETTER_DATABASE_URL": postgres_url,
            "NEWSLETTER_SECRET_KEY": SECRET,
            "NEWSLETTER_BASE_URL": "https://news.example.com",
        }
        out = CliRunner().invoke(
            app, ["edition", "pause", str(edition_id), "--reason", "x" * 600], env=env
        )
        assert out.exit_code == 1
        assert out.output.strip() == "error: --reason: at most 500 characters (this one has 600)"
        with Session(engine, expire_on_commit=False) as session:
            assert store.edition_status(session, edition_id=edition_id) == EditionStatus.sending
            # Any other caller (an error-budget reason, a provider's error) is cut to fit.
            publish.pause_edition(session, edition_id=edition_id, reason="y" * 600)
            edition = store.get_edition(session, edition_id=edition_id)
            session.refresh(edition)
            assert edition.status == EditionStatus.paused
            assert edition.status_reason == "y" * 500
    finally:
        engine.dispose()


class _BusyFirstRelay:
    """A TCP front for the real SMTP server: the connections numbered in ``busy`` get
    `421 too busy` and are closed (as a loaded relay does); the others are passed through."""

    def __init__(self, backend_port: int, busy: set[int]) -> None:
        import socket

        self.backend_port, self.busy, self.connections = backend_port, busy, 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        import socket

        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            if self.connections in self.busy:
                client.sendall(b"421 4.3.2 too busy, try again later\r\n")
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.backend_port))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: Any, target: Any) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, target):
                try:
                    s.shutdown(2)
                except OSError:
                    pass

    def close(self) -> None:
        self.listener.close()


def test_a_busy_relay_defers_and_retries_instead_of_pausing_the_edition(
    seeded: Session, settings: Settings, draft: int, add_subscribers: Any, smtp_server: Any
) -> None:
    """Before: the 421 on the first connection raised out of `open()` and paused the whole
    edition. Now it defers that chunk (with backoff), the next connection sends, the retry
    sends the deferred ones, and the edition ends `sent` with everyone once."""
    from collections import Counter

    from newsletter.backends import backend_from_url

    add_subscribers(10)
    relay = _BusyFirstRelay(smtp_server.port, busy={1})
    quick = settings.model_copy(update={"batch_size": 5, "retry_base_seconds": 0.05})
    try:
        report = publish.send_edition(
            seeded,
            edition_id=draft,
            settings=quick,
            backend=lambda: backend_from_url(f"smtp://127.0.0.1:{relay.port}"),
            options=publish.SendOptions(wait=True),
        )
    finally:
        relay.close()
    assert report.edition.status == EditionStatus.sent and report.run.stopped_because is None
    assert report.totals["sent"] == 10 and report.run.deferred == 5
    per_recipient = Counter(e.rcpt_tos[0] for e in smtp_server.received)
    assert len(per_recipient) == 10 and set(per_recipient.values()) == {1}


def test_a_relay_that_refuses_for_good_pauses_with_the_command_to_resume(
    seeded: Session, settings: Settings, draft: int, add_subscribers: Any
) -> None:
    from newsletter.backends import BackendError, backend_from_url

    add_subscribers(3)
    # A 5xx greeting is permanent: the edition pauses and the error says how to go on.
    relay = _BusyFirstRelay(1, busy=set())
    relay.busy = set(range(1, 100))
    relay_5xx = relay  # reuse the front, answering 554 instead
    relay_5xx.close()
    import socket

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def refuse() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.sendall(b"554 5.7.1 no mail from you\r\n")
            conn.close()

    threading.Thread(target=refuse, daemon=True).start()
    try:
        with pytest.raises(BackendError, match=rf"newsletter edition resume {draft}"):
            publish.send_edition(
                seeded,
                edition_id=draft,
                settings=settings,
                backend=lambda: backend_from_url(f"smtp://127.0.0.1:{port}"),
            )
    finally:
        listener.close()
    seeded.rollback()
    assert store.edition_status(seeded, edition_id=draft) == EditionStatus.paused


# --- operator mistakes: one readable line, nothing left behind --------------------------


def _run(args: list[str], env: dict[str, str]) -> Any:
    return CliRunner().invoke(app, args, env={"COLUMNS": "200", **env})


def test_a_typo_in_the_sqlite_path_creates_nothing(tmp_path: Any) -> None:
    missing = tmp_path / "nonexistent" / "dir" / "x.db"
    out = _run(["edition", "list"], {"NEWSLETTER_DATABASE_URL": f"sqlite:///{missing}"})
    assert out.exit_code == 1
    line = out.output.strip()
    assert "\n" not in line and f"no database at {missing}" in line and "db upgrade" in line
    assert not (tmp_path / "nonexistent").exists()


def test_a_command_run_without_settings_leaves_no_database_behind(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in [k for k in __import__("os").environ if k.startswith("NEWSLETTER_")]:
        monkeypatch.delenv(name)
    out = _run(["edition", "list"], {})
    assert out.exit_code == 1 and "no database at" in out.output
    assert list(tmp_path.iterdir()) == []


def test_db_upgrade_creates_the_database_private(tmp_path: Any) -> None:
    import stat

    db = tmp_path / "fresh" / "n.db"
    out = _run(["db", "upgrade"], {"NEWSLETTER_DATABASE_URL": f"sqlite:///{db}"})
    assert out.exit_code == 0, out.output
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    assert stat.S_IMODE(db.parent.stat().st_mode) == 0o700


def test_the_outbox_keeps_messages_private(tmp_path: Any) -> None:
    import stat

    from newsletter.backends.file import FileBackend
    from newsletter.edition.message import OutgoingMessage

    outbox = tmp_path / "outbox"
    backend = FileBackend(outbox)
    backend.open()
    backend.write_message(
        OutgoingMessage(
            sender="a@example.com",
            recipient="b@example.com",
            raw=b"x\r\n",
            key="k",
            message_id="<k@example.com>",
        )
    )
    (written,) = outbox.iterdir()
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    assert stat.S_IMODE(outbox.stat().st_mode) == 0o700


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("postgresql://user@db.example:fivefourthreetwo/news", "the port must be a number"),
        ("sqlite:///", None),  # not a file: handled by SQLite itself, no crash here
    ],
)
def test_a_database_url_with_a_bad_port_gets_one_line(url: str, words: str | None) -> None:
    out = _run(["edition", "list"], {"NEWSLETTER_DATABASE_URL": url})
    if words is None:
        assert "Traceback" not in out.output
        return
    assert out.exit_code == 1 and words in out.output and "Traceback" not in out.output
    assert len(out.output.strip().splitlines()) == 1


def test_postgresql_without_its_driver_says_which_pip_command_adds_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if the extra were not installed
    out = _run(["edition", "list"], {"NEWSLETTER_DATABASE_URL": "postgresql://u@127.0.0.1/db"})
    assert out.exit_code == 1 and len(out.output.strip().splitlines()) == 1
    assert "pip install 'newsletter-engine[postgres]'" in out.output


def test_an_smtp_url_with_a_bad_port_names_the_port() -> None:
    from newsletter.backends import BackendError
    from newsletter.backends.smtp import SMTPBackend

    with pytest.raises(BackendError, match="the port after the host must be a number") as caught:
        SMTPBackend.from_url("smtp://relay.example:notaport")
    assert "percent-encode" not in str(caught.value)


def test_a_repeated_phrase_is_not_a_secret_key(settings: Settings) -> None:
    from newsletter.config import ConfigError

    weak = settings.model_copy(update={"secret_key": "change-me-change-me-change-me-change-me"})
    with pytest.raises(ConfigError, match="too predictable"):
        weak.require_sending_ready()
    settings.require_sending_ready()  # a random key of the same length passes


# --- CLI polish -------------------------------------------------------------------------------


def test_help_has_a_short_flag_and_there_is_a_version() -> None:
    for args in (["-h"], ["edition", "-h"], ["edition", "send", "-h"]):
        out = _run(args, {})
        assert out.exit_code == 0 and "Usage:" in out.output, args
    version = _run(["--version"], {})
    assert version.exit_code == 0 and version.output.startswith("newsletter ")


def test_db_upgrade_says_what_it_applied_and_an_empty_list_says_so(tmp_path: Any) -> None:
    env = {"NEWSLETTER_DATABASE_URL": f"sqlite:///{tmp_path / 'n.db'}"}
    first = _run(["db", "upgrade"], env)
    assert first.exit_code == 0 and "applied nothing (empty) -> " in first.output
    again = _run(["db", "upgrade"], env)
    assert "already at" in again.output and "nothing to apply" in again.output
    empty = _run(["edition", "list"], env)
    assert empty.exit_code == 0 and "no editions yet" in empty.output


def test_an_over_long_newsletter_name_is_refused_before_anything_is_stored(tmp_path: Any) -> None:
    env = {"NEWSLETTER_DATABASE_URL": f"sqlite:///{tmp_path / 'n.db'}"}
    assert _run(["db", "upgrade"], env).exit_code == 0
    out = _run(["newsletters", "add", "long-one", "--name", "N" * 201], env)
    assert out.exit_code == 1
    assert out.output.strip() == "error: --name: at most 200 characters (this one has 201)"
    assert "long-one" not in _run(["newsletters", "list"], env).output


def test_doctor_output_ends_with_a_newline(tmp_path: Any) -> None:
    out = _run(["doctor"], {"NEWSLETTER_DATABASE_URL": f"sqlite:///{tmp_path / 'n.db'}"})
    assert out.output.endswith("failed\n")


@pytest.mark.parametrize("problem", ["a-file", "not-writable"])
def test_a_journal_folder_that_cannot_be_used_stops_the_send_before_it_starts(
    seeded: Session,
    settings: Settings,
    draft: int,
    add_subscribers: Any,
    tmp_path: Any,
    problem: str,
) -> None:
    from newsletter.sending.journal import JournalError

    add_subscribers(2)
    if problem == "a-file":
        target = tmp_path / "journal-file"
        target.write_text("not a folder")
        words = "is a file, not a folder"
    else:
        # sysfs refuses new folders even to root (the tests run as root in CI): the same
        # answer as a read-only filesystem or a folder without write permission.
        target = Path("/sys/newsletter-journal-test")
        words = "Operation not permitted"
    broken = settings.model_copy(update={"journal_dir": str(target)})
    with pytest.raises(JournalError, match=words):
        publish.send_edition(seeded, edition_id=draft, settings=broken, backend=MemoryBackend())
    # Nothing started: the edition is still a draft, with no deliveries written.
    assert store.edition_status(seeded, edition_id=draft) == EditionStatus.draft


def test_schedule_check_refuses_everything_sync_would(tmp_path: Any) -> None:
    folder = tmp_path / "schedules"
    folder.mkdir()
    base = 'send = "Monday 09:00"\ntimezone = "Europe/Berlin"\n'
    (folder / "huge-lead.toml").write_text(
        f'slug = "huge-lead"\nname = "N"\n{base}draft_before = "99999999999999d"\n'
    )
    (folder / "nested.toml").write_text("a = " + "[" * 5000 + "]" * 5000 + "\n")
    long_slug = "s" * 121
    (folder / f"{long_slug}.toml").write_text(f'slug = "{long_slug}"\nname = "N"\n{base}')
    (folder / "long-name.toml").write_text(f'slug = "long-name"\nname = "{"n" * 201}"\n{base}')
    (folder / "long-url.toml").write_text(
        f'slug = "long-url"\nname = "N"\n{base}site_url = "https://x.example/{"p" * 500}"\n'
    )
    out = _run(["schedule", "check", str(folder)], {})
    assert out.exit_code == 1 and "Traceback" not in out.output
    assert "huge-lead.toml: draft_before: " in out.output and "at most a year" in out.output
    assert "nested.toml: not valid TOML" in out.output
    assert f"{long_slug}.toml: slug: at most 120 characters" in out.output
    assert "long-name.toml: name: at most 200 characters" in out.output
    assert "long-url.toml: site_url: at most 500 characters" in out.output
    assert "5 problem(s) in the schedule files" in out.output


# --- abuse: logins and signups -------------------------------------------------------------


def test_wrong_console_passwords_are_throttled_per_client(
    settings: Settings, engine: Engine, seeded: Session
) -> None:
    """Before (the HTTP-Basic admin page): 800 wrong passwords in 2.2 s from one client, all
    401. The console's sign-in counts failures per client, across accounts."""
    from tests.test_console import PASSWORD as RIGHT
    from tests.test_console import _user

    _user(seeded, "boss@example.com", "admin")
    app_ = create_app(settings, engine=engine)
    login = "/console/login"
    with TestClient(app_, client=("203.0.113.7", 5000), follow_redirects=False) as attacker:
        answers = [
            attacker.post(
                login, data={"email": f"guess{i % 3}@example.com", "password": f"guess-{i}"}
            ).status_code
            for i in range(12)
        ]
        assert 429 not in answers[:10] and answers[10:] == [429, 429]
        # Even the right password is not checked while the client is over the limit.
        right = {"email": "boss@example.com", "password": RIGHT}
        assert attacker.post(login, data=right).status_code == 429
    with TestClient(app_, client=("198.51.100.9", 5000), follow_redirects=False) as operator:
        assert operator.post(login, data=right).status_code == 303


def test_a_leftover_admin_password_is_named_and_opens_nothing(
    settings: Settings, engine: Engine, seeded: Session, caplog: pytest.LogCaptureFixture
) -> None:
    """The HTTP-Basic admin page is gone; a NEWSLETTER_ADMIN_PASSWORD still set opens nothing,
    and the web app's log and doctor say what replaced it."""
    from newsletter.doctor import run_checks

    configured = settings.model_copy(update={"admin_password": "1234"})
    with caplog.at_level("WARNING"), TestClient(create_app(configured, engine=engine)) as c:
        answer = c.get("/admin", auth=("admin", "1234"), follow_redirects=False)
        assert answer.status_code == 301 and answer.headers["location"] == "/console"
        assert c.get("/console", auth=("admin", "1234"), follow_redirects=False).status_code == 303
    assert "NEWSLETTER_ADMIN_PASSWORD is no longer used" in caplog.text
    (check,) = [c for c in run_checks(configured) if c.name == "admin page"]
    assert check.ok is None and "no longer used" in check.summary
    assert "--role admin" in (check.fix or "")
    assert not [c for c in run_checks(settings) if c.name == "admin page"]


def test_ipv6_clients_are_counted_by_their_slash_64(
    settings: Settings, engine: Engine, seeded: Session
) -> None:
    """Before: 20 addresses of one /64 posted 200 signups, all accepted."""
    from newsletter.web.throttle import client_key

    assert (
        client_key("2001:db8:1:2::1") == client_key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    )
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("::ffff:192.0.2.1") == "192.0.2.1" and client_key("192.0.2.1") == "192.0.2.1"
    limited = settings.model_copy(update={"subscribe_limit": 3})
    app_ = create_app(limited, engine=engine)
    statuses = []
    for host in range(1, 6):
        with TestClient(app_, client=(f"2001:db8:1:2::{host}", 5000)) as c:
            form = {"email": f"v6-{host}@example.com"}
            statuses.append(c.post("/subscribe", data=form).status_code)
    assert statuses == [200, 200, 200, 429, 429]
    with TestClient(app_, client=("2001:db8:9:9::1", 5000)) as elsewhere:
        assert elsewhere.post("/subscribe", data={"email": "v6-x@example.com"}).status_code == 200


# --- SES through SNS -----------------------------------------------------------------------


def test_new_sns_certificates_are_fetched_at_most_five_a_minute(api_stub: Any) -> None:
    """Before: 40 forged posts with 40 distinct certificate URLs made 40 outbound fetches."""
    from newsletter.webhooks import ses

    api_stub.reply(200, "-----BEGIN CERTIFICATE-----\n")
    minute = [1000.0]
    ses.clear_certificate_cache()
    try:
        outcomes = []
        for i in range(8):
            try:
                ses.fetch_certificate(f"{api_stub.url}/cert-{i}.pem", clock=lambda: minute[0])
                outcomes.append("fetched")
            except ses.CertificateUnavailable:
                outcomes.append("refused")
        assert outcomes == ["fetched"] * 5 + ["refused"] * 3
        assert len(api_stub.calls) == 5
        # A certificate already fetched is served from memory, whatever the count.
        ses.fetch_certificate(f"{api_stub.url}/cert-0.pem", clock=lambda: minute[0])
        minute[0] += 61  # the next minute: new ones again
        ses.fetch_certificate(f"{api_stub.url}/cert-9.pem", clock=lambda: minute[0])
        assert len(api_stub.calls) == 6
    finally:
        ses.clear_certificate_cache()


@pytest.mark.parametrize(
    "url",
    [
        "https://sns.us-east-1.amazonaws.com/anything-else.pem",
        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-1.pem?x=1",
        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-1.pem/../../x",
    ],
)
def test_only_certificate_shaped_sns_urls_are_ever_fetched(url: str) -> None:
    from newsletter.webhooks import ses

    assert ses.is_sns_url(url.split("?")[0]) and not ses.is_sns_certificate_url(url)


# --- importers: what is echoed back ----------------------------------------------------------


def test_import_problems_escape_control_characters_and_cut_long_values(
    session: Session, settings: Settings, tmp_path: Any
) -> None:
    """ESC, BEL, CR and LF from a file were echoed raw to the terminal, and a 1 MB value was
    repeated once per problem."""
    from newsletter.audience import importing

    publish.default_newsletter(session, settings)
    csv = tmp_path / "hostile.csv"
    huge = "x" * 1_000_000
    csv.write_text(
        "email,name,timezone,newsletters\n"
        f'"evil\x1b[2J\x07@example.com",,,\n'
        f"fine@example.com,,Not/AZone\x1b,\n"
        f"other@example.com,,,{huge}\n",
        encoding="utf-8",
    )
    report = importing.import_subscribers(
        session, now=IMPORTED_AT, path=csv, default_newsletter=settings.newsletter
    )
    text = "\n".join(report.rejected)
    assert len(report.rejected) == 3
    assert "\x1b" not in text and "\x07" not in text and "\\x1b" in text
    assert len(text) < 2_000 and "1,000,000 characters" in text
    assert report.rejected[2].startswith("line 4 (other@example.com): newsletters: ")


# --- secrets never stored or shown ------------------------------------------------------------

LEAKY_TOKEN = "pm-9f4c2e7a-leaky-server-token"


def test_provider_errors_are_scrubbed_of_configured_secrets_everywhere_they_show(
    seeded: Session,
    settings: Settings,
    engine: Engine,
    draft: int,
    add_subscribers: Any,
    api_stub: Any,
) -> None:
    """A provider (or a proxy in front of it) that echoes the credential it refused: before,
    its body went verbatim into the delivery's error, the pause reason, `edition status` and
    the admin page. Now every one of them shows *** in its place."""
    import base64
    import json

    from newsletter.backends import BackendError, backend_from_url
    from newsletter.storage.models import Delivery

    add_subscribers(2)
    url = f"postmark://{LEAKY_TOKEN}@?endpoint={api_stub.url}"
    basic = base64.b64encode(f"api:{LEAKY_TOKEN}".encode()).decode()
    api_stub.reply(
        422,
        json.dumps(
            {"ErrorCode": 300, "Message": f"Invalid 'To' address (sent with {LEAKY_TOKEN})."}
        ),
    )
    api_stub.reply(
        401,
        json.dumps(
            {
                "ErrorCode": 10,
                "Message": f"The Server Token you provided ({LEAKY_TOKEN}) is invalid; "
                f"Authorization: Basic {basic}",
            }
        ),
    )
    configured = settings.model_copy(update={"mail_backend": url})
    with pytest.raises(BackendError) as raised:
        publish.send_edition(
            seeded, edition_id=draft, settings=configured, backend=lambda: backend_from_url(url)
        )
    seeded.rollback()
    assert LEAKY_TOKEN not in str(raised.value) and "***" in str(raised.value)
    edition = store.get_edition(seeded, edition_id=draft)
    seeded.refresh(edition)
    assert edition.status == EditionStatus.paused
    errors = [d.error_text or "" for d in seeded.exec(select(Delivery)).all()]
    shown = [
        edition.status_reason or "",
        *errors,
        _run(["edition", "status", str(draft)], _env_of(configured)).output,
    ]
    from tests.test_console import _user, sign_in

    _user(seeded, "ops@example.com", "operator")
    with TestClient(
        create_app(configured, engine=engine),
        base_url="https://news.example.com",
        follow_redirects=False,
    ) as console:
        sign_in(console, "ops@example.com")
        shown.append(console.get(f"/console/editions/{draft}").text)
    assert any("Invalid 'To' address (sent with ***)" in text for text in errors), errors
    assert "The Server Token you provided (***) is invalid" in (edition.status_reason or "")
    assert "Basic ***" in (edition.status_reason or "")
    for text in shown:
        assert LEAKY_TOKEN not in text and basic not in text
    assert "***" in shown[-2] and "***" in shown[-1]  # status and console show the scrubbed text


def _env_of(settings: Settings) -> dict[str, str]:
    return {
        "NEWSLETTER_DATABASE_URL": settings.database_url,
        "NEWSLETTER_MAIL_BACKEND": settings.mail_backend,
        "NEWSLETTER_SECRET_KEY": SECRET,
        "NEWSLETTER_JOURNAL_DIR": settings.journal_dir,
    }


@pytest.mark.parametrize(
    ("base", "host", "port", "warned"),
    [
        ("http://127.0.0.1:8000", "127.0.0.1", 8001, True),
        ("http://localhost:8000", "0.0.0.0", 9000, True),
        ("http://127.0.0.1:8000", "127.0.0.1", 8000, False),
        ("http://localhost", "127.0.0.1", 80, False),
        ("https://news.example.com", "127.0.0.1", 8000, False),  # behind a proxy: by design
        ("http://10.0.0.5:8000", "10.0.0.5", 8001, True),
    ],
)
def test_serve_warns_when_the_base_url_names_this_machine_at_another_port(
    base: str, host: str, port: int, warned: bool
) -> None:
    from newsletter.cli.common import base_url_mismatch

    warning = base_url_mismatch(base, host, port)
    assert (warning is not None) == warned
    if warning:
        assert warning.startswith(f"warning: NEWSLETTER_BASE_URL is {base}, but this serves")
        assert f":{port}" in warning.split("set NEWSLETTER_BASE_URL=")[1]


def test_page_links_and_redirects_are_paths_under_the_base_url_path(
    settings: Settings, engine: Engine, seeded: Session
) -> None:
    prefixed = settings.model_copy(update={"base_url": "https://example.com/news"})
    with TestClient(create_app(prefixed, engine=engine), base_url="http://127.0.0.1:8001") as c:
        page = c.get("/subscribe").text
        assert 'action="/news/subscribe"' in page and 'href="/news/archive"' in page
        assert "example.com" not in page.split("<footer>")[0]


def test_newsletter_serve_prints_the_base_url_warning_at_start(tmp_path: Any) -> None:
    import os
    import subprocess
    import sys

    from tests.conftest import free_port

    db = tmp_path / "n.db"
    upgrade(make_engine(f"sqlite:///{db}"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env.update(
        NEWSLETTER_DATABASE_URL=f"sqlite:///{db}",
        NEWSLETTER_SECRET_KEY=SECRET,
        NEWSLETTER_BASE_URL="http://127.0.0.1:8000",
        NEWSLETTER_MAIL_BACKEND="memory://",
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "newsletter.cli", "serve", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stderr is not None
        first = server.stderr.readline()
        second = server.stderr.readline()
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert first.startswith("warning: NEWSLETTER_BASE_URL is http://127.0.0.1:8000, but this ")
    assert f"set NEWSLETTER_BASE_URL=http://127.0.0.1:{port}" in first
    assert second.startswith("serving http://127.0.0.1:8000 on")


def _command_paths(group: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = [prefix]
    for name, sub in getattr(group, "commands", {}).items():
        paths += _command_paths(sub, (*prefix, name))
    return paths


def test_no_help_shows_a_type_beside_a_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    """Typer printed `--wait <bool>`, as if the flag took a value; every help page of every
    command is read here (in-process, the tree `newsletter` runs)."""
    import contextlib
    import io

    from newsletter.cli import command

    monkeypatch.setenv("COLUMNS", "200")
    root = command()
    pages = {}
    for path in _command_paths(root):
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
            command().main(args=[*path, "-h"], prog_name="newsletter")
        pages[" ".join(path)] = out.getvalue()
    assert len(pages) > 30
    assert "--no-wait" in pages["edition send"] and "--help" in pages["edition send"]
    showing = [name for name, text in pages.items() if "<bool>" in text]
    assert not showing, showing
    assert "<int" in pages["edition send"]  # options that take a value still say what


@pytest.mark.parametrize("verbose", [False, True])
def test_the_scheduler_is_quiet_by_default_and_verbose_on_request(
    tmp_path: Any, verbose: bool
) -> None:
    """Before: APScheduler's "Running job" and "executed successfully" every 30 s (and Alembic's
    lines) drowned the engine's own. Now only the engine's lines, unless --verbose."""
    import os
    import subprocess
    import sys
    import time
    from datetime import UTC, datetime

    from sqlalchemy import update

    from newsletter.audience import subscriptions
    from newsletter.storage.models import Newsletter, Subscription

    db = tmp_path / "n.db"
    engine = make_engine(f"sqlite:///{db}")
    upgrade(engine)
    with Session(engine) as session:  # one stale signup: the first tick logs forgetting it
        newsletter = Newsletter(slug="weekly", name="Weekly", site_url="https://x.example")
        session.add(newsletter)
        session.commit()
        signup = subscriptions.parse_signup(
            email="old@example.com", name=None, slugs=[], newsletters={"weekly": newsletter}
        )
        subscriptions.request_signup(session, signup, now=datetime(2001, 1, 1, tzinfo=UTC))
        session.execute(update(Subscription).values(updated_at=datetime(2001, 1, 1, tzinfo=UTC)))
        session.commit()
    engine.dispose()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env.update(
        NEWSLETTER_DATABASE_URL=f"sqlite:///{db}",
        NEWSLETTER_SECRET_KEY=SECRET,
        NEWSLETTER_MAIL_BACKEND=f"file://{tmp_path / 'outbox'}",
        NEWSLETTER_JOURNAL_DIR=str(tmp_path / "journal"),
    )
    args = [sys.executable, "-m", "newsletter.cli", "scheduler", *(["-v"] if verbose else [])]
    process = subprocess.Popen(args, env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    seen: list[Any] = []
    try:
        assert process.stderr is not None
        deadline = time.monotonic() + 60
        while not any("forgot 1 unconfirmed" in line for line in seen):
            assert time.monotonic() < deadline and process.poll() is None, seen
            seen.append(process.stderr.readline())
        time.sleep(0.5)  # the job's "executed successfully" line follows the tick's own
    finally:
        process.terminate()
        _, rest = process.communicate(timeout=30)
    lines = [line for line in seen + rest.splitlines() if line.strip()]
    library = [line for line in lines if " apscheduler." in line or " alembic." in line]
    assert bool(library) == verbose, lines
    assert any(" newsletter.service.runner forgot 1 unconfirmed signups" in line for line in lines)
