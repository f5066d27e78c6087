"""The write-ahead journal: a sender killed (SIGKILL) mid-chunk re-sends nothing it had an
answer for, because the next send reads the dead sender's journal back into the ledger."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlmodel import Session, select

from newsletter import publish
from newsletter.backends import backend_from_url
from newsletter.backends.base import HandoverError, SendResult
from newsletter.backends.file import FileBackend
from newsletter.config import Settings
from newsletter.edition.message import OutgoingMessage
from newsletter.sending import journal, ledger
from newsletter.storage.database import make_engine
from newsletter.storage.models import Delivery, DeliveryStatus, Subscriber

from .conftest import SECRET, APIStub, SMTPSink

HTTP_FIXTURES = Path(__file__).parent / "fixtures" / "http"

#: The sender kills itself right after the backend answered this many messages: inside the
#: first chunk of 50, before the chunk's ledger commit.
KILL_AFTER = 7

_SENDER = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from sqlmodel import Session
    from newsletter import publish
    from newsletter.backends.file import FileBackend
    from newsletter.config import Settings
    from newsletter.storage.database import make_engine

    class DiesMidChunk(FileBackend):
        answered = 0

        def send_each(self, messages, on_result, on_handover=None):
            def counting(index, result):
                on_result(index, result)
                DiesMidChunk.answered += 1
                if DiesMidChunk.answered == int(os.environ["KILL_AFTER"]):
                    os.kill(os.getpid(), signal.SIGKILL)
            results = []
            for i, m in enumerate(messages):
                results += self.send_messages([m])
                counting(i, results[-1])
            return results

    settings = Settings()
    engine = make_engine(settings.database_url)
    with Session(engine, expire_on_commit=False) as session:
        publish.send_edition(
            session, edition_id=int(sys.argv[1]), settings=settings,
            backend=DiesMidChunk(Path(sys.argv[2])),
        )
    """
)


def _sender_env(settings: Settings, journal_dir: Path | None, **extra: str) -> dict[str, str]:
    """The environment of a sender subprocess: this test's database, a short lease."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env.update(
        NEWSLETTER_DATABASE_URL=settings.database_url,
        NEWSLETTER_SECRET_KEY=SECRET,
        NEWSLETTER_BASE_URL=settings.base_url,
        NEWSLETTER_FROM=settings.from_address,
        NEWSLETTER_LEASE_SECONDS="0.5",
        NEWSLETTER_JOURNAL_DIR=str(journal_dir or ""),
        **extra,
    )
    return env


@pytest.mark.parametrize("with_journal", [True, False])
def test_a_killed_sender_re_sends_nothing_it_had_an_answer_for(
    seeded: Session,
    settings: Settings,
    add_subscribers: Callable[..., list[Subscriber]],
    tmp_path: Path,
    with_journal: bool,
) -> None:
    add_subscribers(120)
    edition_id = publish.draft_edition(
        seeded, settings=settings, newsletter_slug=None, at=datetime(2026, 11, 25, tzinfo=UTC)
    ).edition.id
    assert edition_id is not None
    journal_dir = tmp_path / "journal" if with_journal else None
    env = _sender_env(settings, journal_dir, KILL_AFTER=str(KILL_AFTER))
    outbox = tmp_path / "outbox"
    died = subprocess.run(
        [sys.executable, "-c", _SENDER, str(edition_id), str(outbox)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert died.returncode == -9, died.stderr
    assert len(list(outbox.glob("*.eml"))) == KILL_AFTER
    if journal_dir is not None:
        assert len(list(journal_dir.glob("*.journal"))) == 1  # left behind by the dead sender

    # The next send (this process) resumes: the journal first, then the expired lease.
    engine = make_engine(settings.database_url)
    with Session(engine, expire_on_commit=False) as session:
        resumed = settings.model_copy(
            update={"lease_seconds": 0.5, "journal_dir": str(journal_dir or "")}
        )
        report = publish.send_edition(
            session,
            edition_id=edition_id,
            settings=resumed,
            backend=FileBackend(outbox),
            options=publish.SendOptions(wait=True),
        )
        counts = ledger.counts(session, edition_id=edition_id)
    engine.dispose()

    files = list(outbox.glob("*.eml"))
    copies = [f for f in files if f.name.count(".") > 1]  # "key.2.eml": a second copy
    assert counts[DeliveryStatus.sent] == 120
    assert len({f.name.split(".")[0] for f in files}) == 120  # nobody lost
    if with_journal:
        assert journal_dir is not None
        assert copies == []
        assert report.run.sent == 120 - KILL_AFTER
        assert not list(journal_dir.glob("*.journal"))
    else:
        # Without the journal the answered-but-unrecorded messages go out again: the window
        # the journal closes.
        assert len(copies) == KILL_AFTER


_HANDING_SENDER = textwrap.dedent(
    """
    import os, signal, sys
    from sqlmodel import Session
    from newsletter import publish
    from newsletter.backends import backend_from_url
    from newsletter.config import Settings
    from newsletter.storage.database import make_engine

    backend = backend_from_url(sys.argv[2])
    inner, handed = backend.send_each, [0]

    def send_each(messages, on_result, on_handover=None):
        # Killed right after message KILL_AT was handed over (HTTP: its request written in
        # full; SMTP: its hand-over line written, before the dot), before its answer is read.
        def handing(index):
            if on_handover is not None:
                on_handover(index)
            handed[0] += 1
            if handed[0] == int(os.environ["KILL_AT"]):
                os.kill(os.getpid(), signal.SIGKILL)
        return inner(messages, on_result, handing)

    if os.environ["KILL_WHERE"] == "after-the-dot":
        # SMTP: killed right after the write that carries message KILL_AT's end-of-data dot,
        # before its 250 is read: RFC 1047's window (the server has it, we never heard).
        # The body goes out through the backend's one gathering write (its pieces, then the
        # next envelope); the kill follows the write whose pieces hold the dot.
        from newsletter.backends import smtp as smtp_backend
        real_send_parts, dots = smtp_backend._send_parts, [0]

        def send_parts(conn, parts):
            real_send_parts(conn, parts)
            if b"\\r\\n.\\r\\n" in b"".join(parts):
                dots[0] += 1
                if dots[0] == int(os.environ["KILL_AT"]):
                    os.kill(os.getpid(), signal.SIGKILL)

        smtp_backend._send_parts = send_parts
    else:
        backend.send_each = send_each
    settings = Settings()
    engine = make_engine(settings.database_url)
    with Session(engine, expire_on_commit=False) as session:
        publish.send_edition(
            session, edition_id=int(sys.argv[1]), settings=settings, backend=backend
        )
    """
)


@pytest.mark.parametrize(
    ("backend", "with_journal", "where"),
    [
        ("smtp", True, "after-the-dot"),
        ("smtp", False, "after-the-dot"),
        ("postmark", True, "at-the-hand-over"),
    ],
    ids=["smtp-journal", "smtp-no-journal", "postmark-journal"],
)
def test_a_sender_killed_before_reading_the_servers_answer_sends_nothing_twice(
    seeded: Session,
    settings: Settings,
    add_subscribers: Callable[..., list[Subscriber]],
    smtp_server: SMTPSink,
    api_stub: APIStub,
    tmp_path: Path,
    backend: str,
    with_journal: bool,
    where: str,
) -> None:
    """The kill lands after the message went out and before the answer was read: the server
    has it, the sender never learnt it. With the journal's hand-over line that delivery is
    ``unknown`` and not sent again; without it, it is sent twice (the test can fail)."""
    add_subscribers(30)
    edition_id = publish.draft_edition(
        seeded, settings=settings, newsletter_slug=None, at=datetime(2026, 11, 25, tzinfo=UTC)
    ).edition.id
    assert edition_id is not None
    if backend == "smtp":
        url = smtp_server.url

        def received() -> list[tuple[str, str]]:  # (recipient, Message-ID)
            return [
                (
                    e.rcpt_tos[0],
                    e.content.split(b"Message-ID: ")[1].split(b"\r\n")[0].decode(),
                )
                for e in smtp_server.received
            ]
    else:
        api_stub.reply(200, (HTTP_FIXTURES / "postmark" / "send-ok.json").read_text())
        url = f"postmark://token@?endpoint={api_stub.url}"

        def received() -> list[tuple[str, str]]:
            payloads = [json.loads(call.body) for call in api_stub.calls]
            return [
                (
                    p["To"],
                    next(h["Value"] for h in p["Headers"] if h["Name"] == "Message-ID"),
                )
                for p in payloads
            ]

    journal_dir = tmp_path / "journal" if with_journal else None
    env = _sender_env(settings, journal_dir, KILL_AT=str(KILL_AFTER), KILL_WHERE=where)
    died = subprocess.run(
        [sys.executable, "-c", _HANDING_SENDER, str(edition_id), url],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert died.returncode == -9, died.stderr
    _wait_for(lambda: len(received()) >= KILL_AFTER)  # the kernel still sent it

    engine = make_engine(settings.database_url)
    with Session(engine, expire_on_commit=False) as session:
        resumed = settings.model_copy(
            update={"lease_seconds": 0.5, "journal_dir": str(journal_dir or "")}
        )
        publish.send_edition(
            session,
            edition_id=edition_id,
            settings=resumed,
            backend=backend_from_url(url),
            options=publish.SendOptions(wait=True),
        )
        counts = ledger.counts(session, edition_id=edition_id)
        unknown = session.exec(
            select(Delivery).where(
                Delivery.edition_id == edition_id, Delivery.status == DeliveryStatus.unknown
            )
        ).all()
    engine.dispose()

    per_recipient = Counter(rcpt for rcpt, _ in received())
    assert len(per_recipient) == 30  # nobody lost
    twice = [rcpt for rcpt, n in per_recipient.items() if n > 1]
    accepted = DeliveryStatus.sent if backend == "smtp" else DeliveryStatus.queued
    if with_journal:
        assert twice == []
        assert counts[accepted] == 29 and counts[DeliveryStatus.unknown] == 1
        assert unknown[0].error_text is not None
        assert "most likely delivered" in unknown[0].error_text
        assert unknown[0].message_id in {mid for _, mid in received()}  # and it was
    else:
        # Nothing written down: every message of the chunk handed over so far goes again
        # (with a journal of answers only, it would be the one whose answer was unread).
        assert len(twice) == KILL_AFTER
        assert counts[accepted] == 30


def _wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


#: The time recovery runs at, where it does not matter.
PINNED = datetime(2026, 11, 23, 9, tzinfo=UTC)


def test_a_live_senders_journal_is_left_alone(seeded: Session, tmp_path: Path) -> None:
    """A journal whose sender still holds its lock is not read (that sender will record it)."""
    live = journal.ResultJournal(tmp_path, "live-owner")
    live.write(ledger.Outcome(1, DeliveryStatus.sent, message_id="<m@x>"))
    assert journal.recover(seeded, tmp_path, now=PINNED) == 0
    assert live.path.exists()
    live.close()
    assert not live.path.exists()


def test_a_torn_last_line_is_ignored(seeded: Session, tmp_path: Path) -> None:
    path = tmp_path / f"dead{journal.SUFFIX}"
    path.write_bytes(b'[1,"sent",250,null,"<a@x>",null,null]\n[2,"se')
    assert journal.recover(seeded, tmp_path, now=PINNED) == 1  # one answer read, no claim matched
    assert not path.exists()


class _InterruptedAfter(FileBackend):
    """Answers ``n`` messages, then the operator presses Ctrl-C."""

    def __init__(self, directory: Path, n: int) -> None:
        super().__init__(directory)
        self.left = n

    def send_each(
        self,
        messages: Sequence[OutgoingMessage],
        on_result: Callable[[int, SendResult], None],
        on_handover: Callable[[int], None] | None = None,
    ) -> list[SendResult]:
        results: list[SendResult] = []
        for i, m in enumerate(messages):
            if self.left == 0:
                raise KeyboardInterrupt
            self.left -= 1
            results += self.send_messages([m])
            on_result(i, results[-1])
        return results


def test_an_interrupted_send_keeps_its_journal_for_the_next(
    seeded: Session,
    settings: Settings,
    add_subscribers: Callable[..., list[Subscriber]],
    tmp_path: Path,
) -> None:
    add_subscribers(20)
    edition_id = publish.draft_edition(
        seeded, settings=settings, newsletter_slug=None, at=datetime(2026, 11, 25, tzinfo=UTC)
    ).edition.id
    assert edition_id is not None
    outbox = tmp_path / "outbox"
    quick = settings.model_copy(update={"lease_seconds": 0.2})
    with pytest.raises(KeyboardInterrupt):
        publish.send_edition(
            seeded, edition_id=edition_id, settings=quick, backend=_InterruptedAfter(outbox, 7)
        )
    seeded.rollback()
    journal_dir = settings.journal_path()
    assert journal_dir is not None and len(list(journal_dir.glob("*.journal"))) == 1
    publish.send_edition(
        seeded,
        edition_id=edition_id,
        settings=quick,
        backend=FileBackend(outbox),
        options=publish.SendOptions(wait=True),
    )
    files = list(outbox.glob("*.eml"))
    assert len(files) == 20 and not [f for f in files if f.name.count(".") > 1]


def test_the_automatic_journal_folder_is_per_database_not_per_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    a = Settings(database_url="sqlite:///a.db", _env_file=None)
    b = Settings(database_url="sqlite:///b.db", _env_file=None)
    path_a = a.journal_path()
    assert path_a is not None and path_a.is_relative_to(tmp_path / "state" / "newsletter")
    assert path_a != b.journal_path()
    monkeypatch.chdir(tmp_path)
    assert a.journal_path() != path_a  # same relative URL, another directory: another file
    off = Settings(journal_dir="off", _env_file=None)
    assert off.journal_path() is None


@pytest.mark.parametrize("failing_write", [6, 7], ids=["an-answer", "a-hand-over"])
def test_a_full_disk_stops_the_send_and_loses_nothing(
    seeded: Session,
    settings: Settings,
    add_subscribers: Callable[..., list[Subscriber]],
    smtp_server: SMTPSink,
    monkeypatch: pytest.MonkeyPatch,
    failing_write: int,
) -> None:
    """The journal's mapping is full at the Nth line and the disk has no block to grow it by:
    the send stops with an error that names the journal (not a lost connection), what it
    handed over and heard goes straight to the ledger, and the next send delivers everyone
    exactly once."""
    add_subscribers(12)
    edition_id = publish.draft_edition(
        seeded, settings=settings, newsletter_slug=None, at=datetime(2026, 11, 25, tzinfo=UTC)
    ).edition.id
    assert edition_id is not None
    real_write_line = journal.ResultJournal.write_line
    written = [0]

    def no_space(size: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def filling(self: journal.ResultJournal, line: bytes) -> None:
        written[0] += 1
        if written[0] == failing_write:
            self._used = len(self._map)  # the mapping is full: this line needs it to grow
            monkeypatch.setattr(self, "_reserve", no_space)
        real_write_line(self, line)

    monkeypatch.setattr(journal.ResultJournal, "write_line", filling)
    quick = settings.model_copy(update={"lease_seconds": 0.3})
    with pytest.raises(
        (HandoverError, journal.JournalError), match="can't write the send journal .*No space"
    ):
        publish.send_edition(
            seeded,
            edition_id=edition_id,
            settings=quick,
            backend=backend_from_url(smtp_server.url),
        )
    seeded.rollback()
    counts = ledger.counts(seeded, edition_id=edition_id)
    # Lines: hand-over 0, answer 0, hand-over 1, answer 1, hand-over 2, answer 2, hand-over 3.
    # The 6th failing: message 2's answer was heard; the 7th: message 3's hand-over, written
    # before its dot, failed, so message 3 never left and goes back to the queue.
    assert counts[DeliveryStatus.sent] == 3
    assert counts[DeliveryStatus.unknown] == 0
    assert counts[DeliveryStatus.claimed] == 0  # the rest went back to the queue at once
    monkeypatch.setattr(journal.ResultJournal, "write_line", real_write_line)
    publish.send_edition(
        seeded,
        edition_id=edition_id,
        settings=quick,
        backend=backend_from_url(smtp_server.url),
        options=publish.SendOptions(wait=True),
    )
    per_recipient = Counter(e.rcpt_tos[0] for e in smtp_server.received)
    assert len(per_recipient) == 12 and max(per_recipient.values()) == 1
    final = ledger.counts(seeded, edition_id=edition_id)
    assert final[DeliveryStatus.sent] == 12


def test_smtp_journals_the_hand_over_before_the_dot_so_a_kill_there_sends_nobody_twice(
    seeded: Session,
    settings: Settings,
    add_subscribers: Callable[..., list[Subscriber]],
    smtp_server: SMTPSink,
    tmp_path: Path,
) -> None:
    """Killed between the hand-over line and the write that carries the dot (the old
    duplicate window, now before the write): the server never got the message, the ledger
    says ``unknown`` (for the operator), and no one is mailed twice."""
    add_subscribers(30)
    edition_id = publish.draft_edition(
        seeded, settings=settings, newsletter_slug=None, at=datetime(2026, 11, 25, tzinfo=UTC)
    ).edition.id
    assert edition_id is not None
    journal_dir = tmp_path / "journal"
    env = _sender_env(settings, journal_dir, KILL_AT=str(KILL_AFTER), KILL_WHERE="hand-over")
    died = subprocess.run(
        [sys.executable, "-c", _HANDING_SENDER, str(edition_id), smtp_server.url],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert died.returncode == -9, died.stderr
    engine = make_engine(settings.database_url)
    with Session(engine, expire_on_commit=False) as session:
        resumed = settings.model_copy(update={"journal_dir": str(journal_dir)})
        publish.send_edition(
            session,
            edition_id=edition_id,
            settings=resumed,
            backend=backend_from_url(smtp_server.url),
            options=publish.SendOptions(wait=True),
        )
        counts = ledger.counts(session, edition_id=edition_id)
        (unknown,) = session.exec(
            select(Delivery).where(
                Delivery.edition_id == edition_id, Delivery.status == DeliveryStatus.unknown
            )
        ).all()
    engine.dispose()
    per_recipient = Counter(e.rcpt_tos[0] for e in smtp_server.received)
    assert max(per_recipient.values()) == 1  # nobody twice
    assert len(per_recipient) == 29 and counts[DeliveryStatus.sent] == 29
    ids = {
        e.content.split(b"Message-ID: ")[1].split(b"\r\n")[0].decode() for e in smtp_server.received
    }
    assert unknown.message_id not in ids  # never delivered: the operator's to re-send


@pytest.mark.parametrize(
    "outcome",
    [
        ledger.Outcome(1, DeliveryStatus.sent, 250, None, "<a.b@news.example.com>"),
        ledger.Outcome(
            2,
            DeliveryStatus.deferred,
            451,
            'try "later"\n\u00e9\u2603 \x00 \\ \ud83d\ude00 end',
            "<m@x>",
            "provider-\u00e9",
            datetime(2026, 1, 2, 3, 4, 5, 678, tzinfo=UTC),
        ),
        ledger.Outcome(3, DeliveryStatus.unknown, None, "handed over"),
        ledger.Outcome(4, DeliveryStatus.failed, 550, "", "", ""),
    ],
)
def test_a_journal_line_is_the_json_the_general_encoder_writes(outcome: ledger.Outcome) -> None:
    """The fast line builder writes exactly what ``json.dumps`` wrote before it (old journals
    and new ones read the same), and reads back to the same outcome."""
    expected = (
        json.dumps(
            [
                outcome.delivery_id,
                outcome.status.value,
                outcome.code,
                outcome.detail,
                outcome.message_id,
                outcome.provider_message_id,
                outcome.retry_at.isoformat() if outcome.retry_at else None,
            ],
            separators=(",", ":"),
        ).encode()
        + b"\n"
    )
    assert journal.ResultJournal.encode(outcome) == expected
    assert json.loads(expected)[0] == outcome.delivery_id


def test_a_cleared_journal_keeps_only_what_came_after(seeded: Session, tmp_path: Path) -> None:
    """Lines go into a memory mapping of the file: what was cleared (committed) is zeros, not
    lines, and what came after is on disk once the sender stops, for the next send to read."""
    sender = journal.ResultJournal(tmp_path, "dead-owner")
    sender.write(ledger.Outcome(1, DeliveryStatus.sent, message_id="<a@x>"))
    sender.write(ledger.Outcome(2, DeliveryStatus.sent, message_id="<b@x>"))
    sender.clear()
    sender.write(ledger.Outcome(3, DeliveryStatus.deferred, code=421, detail="busy"))
    sender.abandon()  # stops as a killed sender does: the file stays, unlocked
    data = sender.path.read_bytes()
    assert data.rstrip(b"\0") == b'[3,"deferred",421,"busy",null,null,null]\n'
    assert len(data) == journal.START_BYTES  # its blocks reserved up front
    assert [o.delivery_id for o in journal._read(data)] == [3]
    assert journal.recover(seeded, tmp_path, now=PINNED) == 1
    assert not sender.path.exists()


def test_a_journal_grows_past_its_first_size(tmp_path: Path) -> None:
    sender = journal.ResultJournal(tmp_path, "big")
    detail = "x" * 1000
    lines = journal.START_BYTES // 1000 + 5  # more than the first mapping holds
    for i in range(lines):
        sender.write(ledger.Outcome(i, DeliveryStatus.failed, code=550, detail=detail))
    sender.abandon()
    read = list(journal._read(sender.path.read_bytes()))
    assert [o.delivery_id for o in read] == list(range(lines))
    assert all(o.detail == detail for o in read)


def test_no_room_for_a_journal_stops_the_send_before_it_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A disk that can't give the journal its blocks is an error naming the journal when it
    opens (never a crash on a later store into the mapping), and leaves no file behind."""

    def no_space(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", no_space)
    with pytest.raises(journal.JournalError, match="can't create the send journal .*No space"):
        journal.ResultJournal(tmp_path, "owner")
    assert list(tmp_path.iterdir()) == []
