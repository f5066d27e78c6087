"""A sender's write-ahead file of answers the ledger does not have yet.

The ledger is written once per chunk of messages (one transaction per ~50 messages keeps a
send fast). A sender killed between the server's answer and that commit would leave the chunk
claimed, and whoever takes the claim over would mail those people again. So each answer is also
appended to this file the moment it arrives and the file is emptied after each commit. The next
send on the same machine reads the files of dead senders back into the ledger before it claims
anything.

The file is mapped into memory (``MAP_SHARED``) and a line is one copy into the mapping: the
pages are the file's page-cache pages, which the kernel keeps, and writes to disk, when the
process is killed, exactly as it keeps what a ``write`` put there. A ``write`` per line was two
system calls a message, each releasing the GIL that four senders in a process share (a hand-over
between threads every time); a copy into the mapping releases nothing. The file's blocks are
reserved (``posix_fallocate``) before they are mapped, so a full disk is an error when the
journal opens or grows, never a ``SIGBUS`` on a store. Emptying it zeroes what was used; the
unused rest reads as zeros, which are not a line.

That leaves RFC 1047's window: the server accepted the message and its answer was on the way
when the sender died. Where the backend can tell when the server may start counting a
message, a *hand-over* line is written then, before the answer is read: a dead sender's
hand-over without an answer is recorded as ``unknown`` ("most likely delivered"), never sent
again automatically, like a connection lost during DATA. Over SMTP the line is written right
*before* the write that carries the end-of-data dot, so a kill can't fall between a delivered
message and its line: the window that re-sent a delivered message is closed, and a kill between
the two calls leaves an undelivered message ``unknown`` for an operator to re-send instead. The
email APIs report the hand-over when the request is written in full, so for them the gap
between the socket write and the journal write remains. A later line for the same delivery
(its answer) overrides an earlier one (its hand-over).

A dead sender's deliveries that have no line at all were not handed over (over SMTP; for an
email API, except one caught in the gap above): recovery gives them back to the queue at once,
so the next sender on this machine sends them without waiting for the lease to expire.

A sender on another machine cannot read this file; after a whole machine is lost, at most the
chunk in flight is sent again, as without a journal.

A live sender holds an exclusive ``flock`` on its file; a file nobody holds belongs to a sender
that died. Lines are JSON; a torn last line (killed mid-write) is ignored: its answer was not
complete when the process died, so that message counts as in flight.
"""

from __future__ import annotations

import fcntl
import json
import mmap
import os
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

from sqlmodel import Session

from newsletter.errors import NewsletterError
from newsletter.sending import ledger
from newsletter.storage.models import DeliveryStatus

SUFFIX = ".journal"
#: The mapping's first size: a chunk's lines (two a message, ~150 bytes each) fit many times.
START_BYTES = 256 * 1024


class JournalError(NewsletterError, RuntimeError):
    """The journal can't be written (disk full, folder gone): the send stops, keeping what the
    journal and the ledger hold; nothing is lost, and running it again continues."""


def ensure_folder(directory: Path) -> None:
    """Create the journal folder (0700) or raise :class:`JournalError` saying why it can't be
    used (a file in the way, a read-only filesystem, no permission): checked before a send
    starts, so a bad ``NEWSLETTER_JOURNAL_DIR`` stops nothing half-way."""
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        # A name of its own: senders in threads of one process probe at the same moment.
        probe = directory / f".probe-{uuid.uuid4().hex}"
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        probe.unlink(missing_ok=True)
    except OSError as exc:
        what = "is a file, not a folder" if directory.is_file() else (exc.strerror or str(exc))
        raise JournalError(
            f"NEWSLETTER_JOURNAL_DIR {directory}: {what}; set it to a writable folder "
            "(or `off`, which gives up crash recovery of answers)"
        ) from None


class ResultJournal:
    """The open journal of one sender (``owner`` is its lease owner id)."""

    def __init__(self, directory: Path, owner: str) -> None:
        ensure_folder(directory)
        self.path = directory / f"{owner}{SUFFIX}"
        # Created and locked under another name, then renamed: a recovering sender never
        # sees (and deletes) a journal that exists but is not locked yet.
        starting = directory / f"{owner}{SUFFIX}.new"
        self._fd = os.open(starting, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._reserve(START_BYTES)
            self._map = mmap.mmap(self._fd, START_BYTES)
        except OSError as exc:
            os.close(self._fd)
            self._fd = -1
            starting.unlink(missing_ok=True)
            raise self._error("create", exc) from exc
        os.rename(starting, self.path)
        self._used = 0

    def write(self, outcome: ledger.Outcome) -> None:
        """Append one answer in a single copy into the mapping."""
        self.write_line(self.encode(outcome))

    def write_line(self, line: bytes) -> None:
        """Append a line made by :meth:`encode` earlier: the hand-over of a message is written
        with nothing but this copy between it and the socket write."""
        start = self._used
        end = start + len(line)
        if end > len(self._map):
            self._grow(end)
        self._map[start:end] = line
        self._used = end

    def _grow(self, needed: int) -> None:
        """Twice the size (or what ``needed`` takes), its blocks reserved before they are
        mapped; :class:`JournalError` when the disk can't give them."""
        size = max(2 * len(self._map), needed)
        try:
            self._reserve(size)
            self._map.resize(size)
        except OSError as exc:
            raise self._error("write", exc) from exc

    def _reserve(self, size: int) -> None:
        """Give the file ``size`` bytes of real blocks (not a sparse tail, whose first store
        on a full disk would kill the process with ``SIGBUS``)."""
        current = os.fstat(self._fd).st_size
        if size <= current:
            return
        if hasattr(os, "posix_fallocate"):
            os.posix_fallocate(self._fd, current, size - current)
        else:  # macOS: zeros written are blocks taken
            os.pwrite(self._fd, bytes(size - current), current)

    def _error(self, verb: str, exc: OSError) -> JournalError:
        return JournalError(
            f"can't {verb} the send journal {self.path}: {exc.strerror or exc}; the send "
            "stopped and nothing is lost: run it again once this is fixed"
        )

    @staticmethod
    def encode(outcome: ledger.Outcome) -> bytes:
        """One journal line: the JSON array ``json.dumps(..., separators=(",", ":"))`` makes,
        byte for byte (a test compares them), built with the C string encoder json itself
        uses. Two lines are encoded per message (the hand-over and the answer), and the
        general encoder cost a tenth of a sender's CPU."""
        retry_at = outcome.retry_at
        return (
            f"[{int(outcome.delivery_id)},{_json_str(outcome.status.value)},"
            f"{'null' if outcome.code is None else int(outcome.code)},"
            f"{_json_or_null(outcome.detail)},{_json_or_null(outcome.message_id)},"
            f"{_json_or_null(outcome.provider_message_id)},"
            f"{'null' if retry_at is None else _json_str(retry_at.isoformat())}]\n"
        ).encode("ascii")

    def clear(self) -> None:
        """Forget what the ledger now holds (call right after the commit): the used part is
        zeroed, so nothing of it reads as a line."""
        if self._used:
            self._map[: self._used] = bytes(self._used)
            self._used = 0

    def close(self) -> None:
        """Remove the file: only called when everything in it is committed."""
        if self._fd < 0:
            return
        self.path.unlink(missing_ok=True)
        self._release()

    def abandon(self) -> None:
        """Stop writing but keep the file (releasing the lock): the sender is stopping on an
        error, and what the file holds may not be in the ledger; the next send recovers it."""
        if self._fd < 0:
            return
        self._release()

    def _release(self) -> None:
        self._map.close()  # the pages stay in the page cache, and reach the file
        os.close(self._fd)
        self._fd = -1


def recover(session: Session, directory: Path, *, now: datetime) -> int:
    """Record the answers in journals of dead senders, then delete those journals.

    Only deliveries still claimed by the dead sender are updated (``ledger.record`` checks the
    owner), so a journal read after its lease was taken over changes nothing. The dead sender's
    other claims (no line: not handed over) go back to the queue at once: its lock being free
    proves it dead, so nobody needs to wait for its lease. Returns how many deliveries were
    recorded from journals.
    """
    if not directory.is_dir():
        return 0
    recovered = 0
    for path in sorted(directory.glob(f"*{SUFFIX}")):
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            continue  # another recoverer took it
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its sender is alive
            with os.fdopen(os.dup(fd), "rb") as f:
                # The last line about a delivery wins (its answer after its hand-over).
                latest = {o.delivery_id: o for o in _read(f.read())}
            outcomes = list(latest.values())
            owner = path.name[: -len(SUFFIX)]
            ledger.record(session, outcomes=outcomes, owner=owner, now=now)
            ledger.release_owner(session, owner=owner)
            session.commit()
            recovered += len(outcomes)
            path.unlink(missing_ok=True)
        finally:
            os.close(fd)
    return recovered


def _read(data: bytes) -> Iterator[ledger.Outcome]:
    # The mapping's unused rest (and a cleared part) is zeros, not lines.
    for line in data.rstrip(b"\0").split(b"\n"):
        try:
            d_id, status, code, detail, message_id, provider_id, retry_at = json.loads(line)
        except ValueError:
            continue  # empty or torn line
        yield ledger.Outcome(
            d_id,
            DeliveryStatus(status),
            code=code,
            detail=detail,
            message_id=message_id,
            provider_message_id=provider_id,
            retry_at=datetime.fromisoformat(retry_at) if retry_at else None,
        )


#: json's own string encoder (C), as ``json.dumps`` with ``ensure_ascii`` uses it.
_json_str: Callable[[str], str] = json.encoder.encode_basestring_ascii


def _json_or_null(value: str | None) -> str:
    return "null" if value is None else _json_str(value)
