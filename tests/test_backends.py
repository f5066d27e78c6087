"""The mail backend contract, for every built-in backend, plus each backend's own options.

One suite is parametrized over console, file, memory and SMTP (a real aiosmtpd server): real
messages built by ``MessageTemplate`` go in, one ``SendResult`` per message comes out in order,
and the bytes arrive where the backend puts them.
"""

from __future__ import annotations

import io
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session

from newsletter import publish
from newsletter.backends import (
    BackendError,
    MailBackend,
    SendResult,
    SendStatus,
    available_schemes,
    backend_factory,
    backend_from_url,
)
from newsletter.backends import memory as memory_module
from newsletter.backends.console import ConsoleBackend
from newsletter.backends.failover import FailoverBackend
from newsletter.backends.file import FileBackend
from newsletter.backends.memory import MemoryBackend
from newsletter.backends.smtp import SMTPBackend
from newsletter.config import Settings
from newsletter.edition.message import OutgoingMessage
from newsletter.edition.personalization import Recipient
from newsletter.storage import store
from tests.conftest import PINNED_DATE

BUILT_IN = {
    "console": ConsoleBackend,
    "file": FileBackend,
    "memory": MemoryBackend,
    "smtp": SMTPBackend,
    "smtps": SMTPBackend,
}
NAMES = ["Ada Lovelace", None, "Grace Hopper"]


def build_messages(
    session: Session, settings: Settings, edition_id: int, count: int = 3
) -> list[OutgoingMessage]:
    edition = store.get_edition(session, edition_id=edition_id)
    _, template, _ = publish.prepare(session, edition=edition, settings=settings)
    signer = publish.signer_for(settings)
    return [
        template.build(
            Recipient(i + 1, f"r{i}@example.com", NAMES[i % len(NAMES)]), signer, now=PINNED_DATE
        )
        for i in range(count)
    ]


@pytest.fixture
def messages(session: Session, settings: Settings, draft: int) -> list[OutgoingMessage]:
    built = build_messages(session, settings, draft)
    assert len({m.data for m in built}) == 3, "each recipient gets their own bytes"
    return built


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the contract, for every built-in backend -------------------------------------------------


@dataclass
class Case:
    backend: MailBackend
    arrived: Callable[[], list[bytes]]  # the bytes that reached the destination, in order


def _console_text_to_bytes(text: str) -> list[bytes]:
    separator = "\n" + "-" * 79 + "\n"
    if not text:
        return []
    assert text.endswith(separator)
    return [chunk.replace("\n", "\r\n").encode("ascii") for chunk in text.split(separator)[:-1]]


@pytest.fixture(params=["console", "file", "memory", "smtp"])
def case(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Case]:
    kind = request.param
    if kind == "console":
        stream = io.StringIO()
        yield Case(ConsoleBackend(stream), lambda: _console_text_to_bytes(stream.getvalue()))
    elif kind == "file":
        outbox = tmp_path / "outbox"

        def files() -> list[bytes]:
            # keys are e<edition>-s1, -s2, -s3: name order is send order
            return [p.read_bytes() for p in sorted(outbox.glob("*.eml"))]

        yield Case(backend_from_url(f"file://{outbox}"), files)
    elif kind == "memory":
        yield Case(backend_from_url("memory://"), lambda: [m.data for m in memory_module.outbox])
    else:
        server = request.getfixturevalue("smtp_server")
        backend = backend_from_url(server.url)
        yield Case(backend, lambda: [e.content for e in server.received])
        backend.close()


def test_contract_send_three_real_messages(case: Case, messages: list[OutgoingMessage]) -> None:
    assert case.arrived() == []
    with case.backend as backend:
        assert backend is case.backend
        results = backend.send_messages(messages)

    assert len(results) == len(messages) == 3
    assert all(isinstance(r, SendResult) for r in results)
    assert [r.status for r in results] == [SendStatus.sent] * 3
    assert all(r.status.delivered and not r.status.transient for r in results)
    assert [r.code for r in results] == [250, 250, 250]

    arrived = case.arrived()
    assert len(arrived) == 3
    for got, message in zip(arrived, messages, strict=True):
        # SMTP servers may drop the final CRLF of the DATA section; nothing else may change.
        assert got.rstrip(b"\r\n") == message.data.rstrip(b"\r\n")
        assert message.message_id.encode() in got


def test_contract_empty_batch_and_describe(case: Case) -> None:
    with case.backend as backend:
        assert backend.send_messages([]) == []
    assert case.arrived() == []
    assert isinstance(case.backend.describe(), str) and case.backend.describe()


def test_contract_send_without_context_manager(case: Case, messages: list[OutgoingMessage]) -> None:
    """A backend used without ``with`` still sends (SMTP opens and closes on its own)."""
    first = case.backend.send_messages(messages[:1])
    second = case.backend.send_messages(messages[1:])
    assert [r.status for r in first + second] == [SendStatus.sent] * 3
    assert [a.rstrip(b"\r\n") for a in case.arrived()] == [m.data.rstrip(b"\r\n") for m in messages]
    if isinstance(case.backend, SMTPBackend):
        assert case.backend.connection is None, "send_messages closes what it opened"


def test_contract_results_follow_message_order(
    smtp_server: Any, messages: list[OutgoingMessage]
) -> None:
    """One result per message, in the same order, when statuses differ (memory and SMTP)."""
    middle = messages[1].recipient
    last = messages[2].recipient
    memory_backend = backend_from_url(f"memory://?reject={middle}&defer={last}")
    smtp_server.responses[middle] = "550 5.1.1 no such user"
    smtp_server.responses[last] = "450 4.2.1 mailbox busy"
    smtp_backend = backend_from_url(smtp_server.url)

    for backend in (memory_backend, smtp_backend):
        with backend:
            results = backend.send_messages(messages)
        assert [r.status for r in results] == [
            SendStatus.sent,
            SendStatus.rejected,
            SendStatus.deferred,
        ], backend.describe()
        assert (results[1].code or 0) // 100 == 5 and (results[2].code or 0) // 100 == 4

    assert [m.recipient for m in memory_module.outbox] == [messages[0].recipient]
    assert [e.rcpt_tos for e in smtp_server.received] == [[messages[0].recipient]]


# --- finding a backend by URL ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "cls"),
    [
        ("console://", ConsoleBackend),
        ("file:///tmp/x", FileBackend),
        ("memory://", MemoryBackend),
        ("smtp://host:25", SMTPBackend),
        ("smtps://host", SMTPBackend),
        ("SMTP://host:25", SMTPBackend),
    ],
)
def test_backend_from_url_resolves_built_in_schemes(url: str, cls: type[MailBackend]) -> None:
    backend = backend_from_url(url)
    assert type(backend) is cls


def test_built_in_backends_are_registered_as_entry_points() -> None:
    registered = {ep.name: ep for ep in entry_points(group="newsletter.backends")}
    assert set(BUILT_IN) <= set(registered)
    for name, cls in BUILT_IN.items():
        assert registered[name].load() is cls
        assert name in cls.schemes
    assert set(BUILT_IN) <= set(available_schemes())


def test_backend_from_url_builds_each_backend_from_its_url() -> None:
    file_backend = backend_from_url("file:///tmp/x")
    assert isinstance(file_backend, FileBackend) and file_backend.directory == Path("/tmp/x")

    relative = backend_from_url("file://./outbox")
    assert isinstance(relative, FileBackend) and relative.directory == Path("./outbox")

    smtp = backend_from_url("smtp://host:25")
    assert isinstance(smtp, SMTPBackend)
    assert (smtp.host, smtp.port, smtp.use_ssl, smtp.starttls) == ("host", 25, False, False)

    smtps = backend_from_url("smtps://host")
    assert isinstance(smtps, SMTPBackend)
    assert (smtps.host, smtps.port, smtps.use_ssl, smtps.starttls) == ("host", 465, True, False)

    starttls = backend_from_url("smtp://host?starttls=1&timeout=5&helo=me.example")
    assert isinstance(starttls, SMTPBackend)
    assert (starttls.port, starttls.starttls, starttls.timeout, starttls.helo) == (
        587,
        True,
        5.0,
        "me.example",
    )
    plain = backend_from_url("smtp://host")
    assert isinstance(plain, SMTPBackend) and plain.port == 25


def test_backend_from_url_goes_through_the_entry_point_group(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A third-party package's entry point is honoured, and one naming a non-backend refused."""
    import newsletter.backends as backends

    real = entry_points

    def patched(*, group: str) -> list[EntryPoint]:
        extra = [
            EntryPoint("thirdparty", "newsletter.backends.memory:MemoryBackend", group),
            EntryPoint("notabackend", "builtins:dict", group),
        ]
        return [*real(group=group), *extra]

    monkeypatch.setattr(backends, "entry_points", patched)
    assert isinstance(backend_from_url("thirdparty://?retain=0"), MemoryBackend)
    assert "thirdparty" in available_schemes()
    with pytest.raises(BackendError, match="notabackend"):
        backend_from_url("notabackend://x")


def test_a_backend_factory_looks_each_scheme_up_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A send makes a backend per sender (up to 16) and the web app one per confirmation
    mail: the entry points (every installed package's metadata) are read for the first
    backend, never again, and every call still makes a backend of its own."""
    import newsletter.backends as backends

    real, groups = entry_points, []

    def counted(*, group: str) -> Any:
        groups.append(group)
        return real(group=group)

    monkeypatch.setattr(backends, "entry_points", counted)
    make = backend_factory("smtp://relay.example:2525 memory://?retain=0")
    assert groups == []  # nothing is looked up before the first backend is made
    made = [make() for _ in range(8)]
    assert groups == ["newsletter.backends"] * 2  # one lookup per URL of the failover
    first, second = made[0], made[1]
    assert isinstance(first, FailoverBackend) and isinstance(second, FailoverBackend)
    assert first is not second and first.backends[0] is not second.backends[0]
    smtp, memory = first.backends
    assert isinstance(smtp, SMTPBackend) and (smtp.host, smtp.port) == ("relay.example", 2525)
    assert isinstance(memory, MemoryBackend)
    # An unknown scheme is refused on the first call (the CLI makes it before any sender
    # starts), and on every call after: a refusal is not kept as a backend.
    pigeon = backend_factory("carrierpigeon://coop")
    for _ in range(2):
        with pytest.raises(BackendError, match="no mail backend for carrierpigeon://"):
            pigeon()


def test_unknown_scheme_names_the_installed_schemes() -> None:
    with pytest.raises(BackendError) as excinfo:
        backend_from_url("carrierpigeon://coop")
    message = str(excinfo.value)
    assert "carrierpigeon://" in message
    for scheme in BUILT_IN:
        assert f"{scheme}://" in message


@pytest.mark.parametrize(
    "url",
    [
        "outbox",  # no scheme
        "file://",  # no folder
        "smtp:///nohost",
        "smtp://host:notaport",
        "smtp://host?timeout=soon",
        "smtp://host?timeout=0",  # the kernel would read 0 as no limit at all
        "smtp://host?timeout=-5",
        "smtp://host?timeout=inf",
        "smtp://host?timeout=nan",
        "smtps://host?starttls=1",
        "memory://?retain=maybe",
    ],
)
def test_bad_urls_raise_backend_error(url: str) -> None:
    with pytest.raises(BackendError):
        backend_from_url(url)


# --- open() and close() ---------------------------------------------------------------------


@pytest.mark.parametrize("url", ["console://", "memory://"])
def test_connectionless_backends_never_report_opening(url: str) -> None:
    backend = backend_from_url(url)
    assert backend.open() is False
    backend.close()
    backend.close()


def test_file_backend_open_creates_the_folder_but_no_connection(tmp_path: Path) -> None:
    folder = tmp_path / "a" / "b"
    backend = FileBackend(folder)
    assert backend.open() is False
    assert folder.is_dir()


def test_file_backend_open_fails_cleanly_when_folder_is_a_file(tmp_path: Path) -> None:
    blocker = tmp_path / "outbox"
    blocker.write_text("not a folder")
    with pytest.raises(BackendError, match="outbox"):
        FileBackend(blocker).open()


def test_smtp_open_returns_true_only_when_it_opened(smtp_server: Any) -> None:
    backend = SMTPBackend.from_url(smtp_server.url)
    assert backend.connection is None
    assert backend.open() is True
    conn = backend.connection
    assert conn is not None
    assert backend.open() is False, "already open: this call opened nothing"
    assert backend.connection is conn
    backend.close()
    assert backend.connection is None
    backend.close()  # safe twice
    assert backend.open() is True
    backend.close()


def test_context_manager_opens_and_closes_its_own_connection(
    smtp_server: Any, messages: list[OutgoingMessage]
) -> None:
    backend = SMTPBackend.from_url(smtp_server.url)
    with backend:
        conn = backend.connection
        assert conn is not None
        backend.send_messages(messages[:1])
        backend.send_messages(messages[1:])
        assert backend.connection is conn, "send_messages must not close the caller's connection"
    assert backend.connection is None
    assert conn.sock is None, "the socket was closed"
    assert len(smtp_server.received) == 3


def test_context_manager_leaves_a_caller_opened_connection_open(
    smtp_server: Any, messages: list[OutgoingMessage]
) -> None:
    backend = SMTPBackend.from_url(smtp_server.url)
    assert backend.open() is True
    conn = backend.connection
    with backend:
        backend.send_messages(messages[:1])
    assert backend.connection is conn, "the context manager closed what it did not open"
    assert conn is not None and conn.sock is not None
    with backend:
        backend.send_messages(messages[1:])
    assert backend.connection is conn
    backend.close()
    assert backend.connection is None
    assert len(smtp_server.received) == 3


def test_nested_context_managers_close_at_the_outermost_exit(smtp_server: Any) -> None:
    backend = SMTPBackend.from_url(smtp_server.url)
    with backend:
        conn = backend.connection
        with backend:
            assert backend.connection is conn
        assert backend.connection is conn, "the inner `with` opened nothing, so closes nothing"
    assert backend.connection is None, "the outer `with` opened the connection and must close it"


# --- file backend ---------------------------------------------------------------------------


def test_file_backend_never_overwrites(tmp_path: Path, messages: list[OutgoingMessage]) -> None:
    outbox = tmp_path / "outbox"
    backend = FileBackend(outbox)
    first, second = messages[0], messages[1]
    # The same idempotency key twice, with different bytes (a duplicate send).
    again = OutgoingMessage(first.sender, first.recipient, first.message_id, second.data, first.key)
    with backend:
        results = backend.send_messages([first, again, first])
    assert [r.status for r in results] == [SendStatus.sent] * 3
    names = sorted(p.name for p in outbox.iterdir())
    assert names == [f"{first.key}.2.eml", f"{first.key}.3.eml", f"{first.key}.eml"]
    assert (outbox / f"{first.key}.eml").read_bytes() == first.data
    assert (outbox / f"{first.key}.2.eml").read_bytes() == second.data
    assert (outbox / f"{first.key}.3.eml").read_bytes() == first.data


def test_file_backend_keeps_unsafe_keys_inside_its_folder(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    message = OutgoingMessage(
        "a@x.com", "b@y.com", "<m@x>", b"Subject: x\r\n\r\nhi\r\n", "../../evil"
    )
    FileBackend(outbox).send_messages([message])
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(written) == 1
    assert written[0].parent == outbox
    assert written[0].read_bytes() == message.data


# --- memory backend -------------------------------------------------------------------------


def test_memory_retain_0_counts_without_retaining(messages: list[OutgoingMessage]) -> None:
    backend = backend_from_url("memory://?retain=0")
    assert isinstance(backend, MemoryBackend) and backend.retain is False
    assert "counting only" in backend.describe()
    with backend:
        results = backend.send_messages(messages)
    assert [r.status for r in results] == [SendStatus.sent] * 3
    assert memory_module.outbox == []
    assert memory_module.counters.messages == 3
    assert memory_module.counters.bytes == sum(len(m.data) for m in messages)


def test_memory_retains_by_default_and_reset_empties(messages: list[OutgoingMessage]) -> None:
    backend = backend_from_url("memory://")
    results = backend.send_messages(messages)
    assert memory_module.outbox == messages
    assert [r.provider_id for r in results] == [m.key for m in messages]
    assert memory_module.counters.messages == 3
    memory_module.reset()
    assert memory_module.outbox == [] and memory_module.counters.messages == 0


def test_memory_reject_and_defer(messages: list[OutgoingMessage]) -> None:
    rejected, deferred = messages[0].recipient, messages[2].recipient
    backend = backend_from_url(f"memory://?reject={rejected.upper()},x@y.z&defer={deferred}")
    results = backend.send_messages(messages)
    assert results[0] == SendResult(SendStatus.rejected, 550, results[0].detail)
    assert results[1].status == SendStatus.sent and results[1].code == 250
    assert results[2] == SendResult(SendStatus.deferred, 451, results[2].detail)
    assert results[0].detail and results[2].detail
    assert memory_module.outbox == [messages[1]]
    assert memory_module.counters.messages == 1
    assert memory_module.counters.bytes == len(messages[1].data)


# --- SMTP description -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "secret"),
    [
        ("smtp://user:s3cret@host:25", "s3cret"),
        ("smtps://mailer:p%40ss%3Aword@smtp.example.com", "p@ss:word"),
        ("smtp://mailer:hunter2hunter2@smtp.example.com?starttls=1", "hunter2hunter2"),
    ],
)
def test_smtp_describe_never_contains_the_password(url: str, secret: str) -> None:
    backend = backend_from_url(url)
    assert isinstance(backend, SMTPBackend)
    assert backend._password == secret  # parsed (and percent-decoded) correctly
    description = backend.describe()
    assert secret not in description
    assert secret.replace("@", "%40").replace(":", "%3A") not in description
    assert backend.username is not None and backend.username in description
    assert backend.host in description and str(backend.port) in description


def test_smtp_describe_of_user_host_port() -> None:
    assert backend_from_url("smtp://user:s3cret@host:25").describe() == "smtp://user:***@host:25"


def test_smtp_connect_error_does_not_leak_the_password() -> None:
    backend = backend_from_url(f"smtp://user:s3cret@127.0.0.1:{free_port()}?timeout=2")
    with pytest.raises(BackendError) as excinfo:
        backend.open()
    assert "s3cret" not in str(excinfo.value)
    assert "127.0.0.1" in str(excinfo.value)


def test_memory_url_keeps_plus_in_addresses() -> None:
    backend = MemoryBackend.from_url(
        "memory://?reject=user+tag@example.com&defer=a%2Bb@example.com"
    )
    assert backend.reject == frozenset({"user+tag@example.com"})
    assert backend.defer == frozenset({"a+b@example.com"})


def test_a_url_that_cannot_be_parsed_gets_a_readable_error_without_the_password() -> None:
    from newsletter.backends import BackendError, backend_from_url

    with pytest.raises(BackendError) as caught:
        backend_from_url("smtp://user:pa[ss@mail.example.com:587")
    assert "percent-encode" in str(caught.value) and "pa[ss" not in str(caught.value)
