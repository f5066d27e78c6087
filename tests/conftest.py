"""Shared fixtures: real SQLite files, a real PostgreSQL database, a real SMTP server, the
memory backend, and factories for comparisons and subscribers."""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlmodel import Session

from newsletter import publish
from newsletter.backends import memory
from newsletter.config import Settings
from newsletter.edition.content import ComparisonData
from newsletter.storage.database import make_engine, upgrade
from newsletter.storage.models import Subscriber, Subscription

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples" / "comparisons.json"
#: A fixed key as random as a real one (the engine refuses predictable keys).
SECRET = "kkeGGYSJX5ngCNeegUU_0VtqkqUCpFk78bF_NgDwZLzXiSBtihZWjw"
#: The time the tests' subscriber imports write on their rows (time is an input).
IMPORTED_AT = datetime(2026, 11, 25, 9, tzinfo=UTC)
#: The Date of messages built in tests (epoch seconds, 2026-11-23 09:00 UTC): never the real clock.
PINNED_DATE = datetime(2026, 11, 23, 9, tzinfo=UTC).timestamp()
POSTGRES_ADMIN_URL = os.environ.get(
    "NEWSLETTER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """The store the ``settings`` of a test use: a SQLite file. A test file whose tests must
    hold on both databases overrides it with :func:`both_database_url`::

        @pytest.fixture
        def database_url(both_database_url: str) -> str:
            return both_database_url
    """
    return f"sqlite:///{tmp_path / 'newsletter.db'}"


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        mail_backend="memory://",
        base_url="https://news.example.com",
        secret_key=SECRET,
        from_address="Weekly AI Tool Verdicts <verdicts@news.example.com>",
        postal_address="AI Tool Verdicts, 1 Test Street, Testville",
        timezone="UTC",
        site_url="https://aitoolverdicts.example",
        journal_dir=str(tmp_path / "journal"),
        _env_file=None,
    )


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    eng = make_engine(settings.database_url)
    upgrade(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    with Session(engine, expire_on_commit=False) as s:
        yield s


@pytest.fixture(autouse=True)
def _clean_memory_outbox() -> Iterator[None]:
    memory.reset()
    yield
    memory.reset()


@pytest.fixture
def seeded(session: Session, settings: Settings) -> Session:
    """The example comparisons imported and the default newsletter created."""
    from newsletter.audience.importing import import_comparisons

    publish.default_newsletter(session, settings)
    import_comparisons(session, path=EXAMPLES)
    session.commit()
    return session


def comparison_dict(slug: str = "alpha-vs-beta", **overrides: Any) -> dict[str, Any]:
    """A valid comparison record as it appears in an import file."""
    record: dict[str, Any] = {
        "slug": slug,
        "title": "Alpha vs Beta",
        "url": f"https://aitoolverdicts.example/compare/{slug}",
        "published_at": "2026-11-24T10:00:00+00:00",
        "question": "Which one should you ship with?",
        "tools": [
            {
                "name": "Alpha",
                "category": "Developer Tools",
                "tagline": "Alpha does things",
                "description": "Alpha is a tool.",
                "entry_price": "Free",
                "community": None,
                "reviews": [
                    {"lens": "builder", "verdict": "ship", "quote": "Solid. Would ship it."},
                    {"lens": "skeptic", "verdict": "skip", "quote": "Not yet. I'd skip it."},
                ],
            },
            {
                "name": "Beta",
                "category": "Developer Tools",
                "tagline": "Beta does other things",
                "description": "Beta is another tool.",
                "entry_price": "Paid",
                "community": {"up": 3, "down": 1},
                "reviews": [
                    {"lens": "builder", "verdict": "ship", "quote": "Clean API. Ship it."},
                ],
            },
        ],
    }
    record.update(overrides)
    return record


@pytest.fixture
def make_comparison() -> Callable[..., ComparisonData]:
    def factory(slug: str = "alpha-vs-beta", **overrides: Any) -> ComparisonData:
        return ComparisonData.model_validate(comparison_dict(slug, **overrides))

    return factory


@pytest.fixture
def add_subscribers(session: Session, settings: Settings) -> Callable[..., list[Subscriber]]:
    """Create n active subscribers of the default newsletter (sub0@example.com, ...)."""

    def factory(n: int, *, prefix: str = "sub", status: str = "active") -> list[Subscriber]:
        newsletter = publish.default_newsletter(session, settings)
        people = [
            Subscriber(
                email=f"{prefix}{i}@example.com",
                email_key=f"{prefix}{i}@example.com",
                name=f"Reader {i}" if i % 2 else None,
            )
            for i in range(n)
        ]
        session.add_all(people)
        session.flush()
        session.add_all(
            Subscription(subscriber_id=p.id or 0, newsletter_id=newsletter.id or 0, status=status)
            for p in people
        )
        session.commit()
        return people

    return factory


@pytest.fixture
def draft(seeded: Session, settings: Settings) -> int:
    """The id of the draft edition for the week of 2026-11-23 (four example comparisons)."""
    outcome = publish.draft_edition(
        seeded,
        settings=settings,
        newsletter_slug=None,
        at=datetime(2026, 11, 25, 12, tzinfo=UTC),
    )
    assert outcome.edition.id is not None
    return outcome.edition.id


# --- PostgreSQL ------------------------------------------------------------------------------


@contextmanager
def _scratch_database(prefix: str, template: str | None = None) -> Iterator[str]:
    """A new database on the real server (a copy of ``template`` if given), dropped after;
    yields its name. The server is part of the test environment (README, .ci/run): when it
    is down this fails loudly instead of skipping."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    copy = f' TEMPLATE "{template}"' if template else ""
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"{copy}'))
    except Exception as exc:  # pragma: no cover - environment problem
        pytest.fail(f"PostgreSQL at {POSTGRES_ADMIN_URL} is not reachable: {exc}")
    try:
        yield name
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _url_of(name: str) -> str:
    return POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database on the real server; dropped afterwards."""
    with _scratch_database("newsletter_test") as name:
        yield _url_of(name)


@pytest.fixture(scope="session")
def _migrated_template() -> Iterator[str]:
    """A migrated PostgreSQL database, made once per run, that :func:`migrated_postgres_url`
    copies (CREATE DATABASE ... TEMPLATE: a fraction of a second against running every
    migration again for each test)."""
    with _scratch_database("newsletter_tmpl") as name:
        eng = make_engine(_url_of(name))
        upgrade(eng)
        eng.dispose()  # a template must have no connections while it is copied
        yield name


@pytest.fixture
def migrated_postgres_url(_migrated_template: str) -> Iterator[str]:
    """A fresh PostgreSQL database with every migration applied and no rows; dropped
    afterwards. (Its statistics are those of empty tables, as on a new install.)"""
    with _scratch_database("newsletter_test", template=_migrated_template) as name:
        yield _url_of(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def both_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The store, once on a SQLite file and once on a fresh, migrated PostgreSQL database
    (production runs PostgreSQL). A test marked ``one_database(reason)`` runs on SQLite only:
    its PostgreSQL run is skipped with that reason, never silently."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'both.db'}"
    only = request.node.get_closest_marker("one_database")
    if only is not None:
        pytest.skip(f"one database only: {only.args[0] if only.args else only.kwargs['reason']}")
    return str(request.getfixturevalue("migrated_postgres_url"))


@pytest.fixture
def both_engine(both_database_url: str) -> Iterator[Engine]:
    """A migrated, empty store: once on a SQLite file, once on a fresh PostgreSQL database."""
    url = both_database_url
    eng = make_engine(url)
    upgrade(eng)
    yield eng
    eng.dispose()


# --- SMTP --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class SMTPSink:
    """A real aiosmtpd server on 127.0.0.1 that records what it accepted.

    ``responses`` maps a recipient address to the reply its RCPT TO gets (e.g. "450 ...").
    """

    host: str
    port: int
    received: list[Any] = field(default_factory=list)
    responses: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"


@pytest.fixture
def smtp_server() -> Iterator[SMTPSink]:
    from aiosmtpd.controller import Controller

    sink = SMTPSink("127.0.0.1", free_port())

    class Handler:
        async def handle_RCPT(
            self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
        ) -> str:
            reply = sink.responses.get(address.lower())
            if reply:
                return reply
            envelope.rcpt_tos.append(address)
            return "250 OK"

        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            with sink.lock:
                sink.received.append(envelope)
            return "250 Message accepted for delivery"

    controller = Controller(Handler(), hostname=sink.host, port=sink.port)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()


# --- email APIs ----------------------------------------------------------------------------


@dataclass
class RecordedCall:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class APIStub:
    """A real HTTP server on 127.0.0.1 standing in for an email API.

    Answers come from ``replies`` in order (status, headers, body), the last one repeating;
    bodies are the providers' recorded responses (tests/fixtures/http/). Every request is kept
    in ``calls``. This is the only mock in the suite: the HTTP boundary of a third-party API.
    """

    url: str
    calls: list[RecordedCall] = field(default_factory=list)
    replies: list[tuple[int, dict[str, str], bytes]] = field(default_factory=list)

    def reply(self, status: int, body: str | bytes, headers: dict[str, str] | None = None) -> None:
        data = body.encode() if isinstance(body, str) else body
        self.replies.append((status, {"Content-Type": "application/json", **(headers or {})}, data))


@pytest.fixture
def api_stub() -> Iterator[APIStub]:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    stub = APIStub(url="")

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            stub.calls.append(
                RecordedCall(self.command, self.path, dict(self.headers.items()), body)
            )
            status, headers, data = (
                (stub.replies.pop(0) if len(stub.replies) > 1 else stub.replies[0])
                if stub.replies
                else (500, {}, b"no reply configured")
            )
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_POST = do_PUT = do_GET = _answer

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    stub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield stub
    finally:
        server.shutdown()
        server.server_close()
