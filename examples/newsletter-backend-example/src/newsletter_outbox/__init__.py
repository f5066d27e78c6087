"""A JSON-lines outbox: each message one line appended to a file another program ships.

``outbox:///var/spool/newsletter/outbox.jsonl`` (``outbox://./outbox.jsonl`` for a relative
path). Each line is ``{"key", "sender", "recipient", "message_id", "data"}``, ``data`` being
the MIME message in base64, written and flushed before the result is reported, so a crash
never reports a message that isn't in the file. ``?fsync=1`` also forces it to disk.

An example of a third-party backend: installed with its own entry point in the
``newsletter.backends`` group, checked by ``newsletter doctor`` through :meth:`probe`, and
tested with the engine's own contract suite (``newsletter.testing``).
"""

from __future__ import annotations

import base64
import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Self
from urllib.parse import unquote, urlsplit

from newsletter.backends import (
    BackendError,
    MailBackend,
    OutgoingMessage,
    ProbeResult,
    SendResult,
    SendStatus,
    flag,
    query_options,
)

__all__ = ["OutboxBackend", "read_outbox"]


class OutboxBackend(MailBackend):
    """Appends each message to a JSON-lines file; ``open()`` opens the file (True when this
    call opened it), so a caller's ``with`` keeps one file handle across batches."""

    schemes = ("outbox",)

    def __init__(self, path: Path, *, fsync: bool = False) -> None:
        super().__init__()
        self.path = path
        self.fsync = fsync
        self._file: IO[str] | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str) -> Self:
        parts = urlsplit(url)
        path = unquote(parts.netloc + parts.path)
        if not path or path.endswith("/"):
            raise BackendError("outbox backend needs a file: outbox:///abs/path/outbox.jsonl")
        options = query_options(url)
        if unknown := sorted(set(options) - {"fsync"}):
            raise BackendError(f"outbox backend URL: unknown option(s) {', '.join(unknown)}")
        return cls(Path(path), fsync=flag(options, "fsync", False))

    def open(self) -> bool:
        if self._file is not None:
            return False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as exc:
            raise BackendError(f"can't open outbox {self.path}: {exc.strerror}") from exc
        self._file = os.fdopen(fd, "a", encoding="ascii")
        return True

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def send_messages(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        opened_here = self.open()
        try:
            with self._lock:
                return [self._append(message) for message in messages]
        finally:
            if opened_here:
                self.close()

    def _append(self, message: OutgoingMessage) -> SendResult:
        # The address is written as a JSON string (CR/LF escaped), but whoever ships the
        # outbox may paste it into an SMTP envelope: refuse it here, where we can say why.
        if any(c in message.recipient for c in "\r\n<> ") or "@" not in message.recipient:
            return SendResult(SendStatus.invalid, None, "unsafe recipient address")
        assert self._file is not None
        record = {
            "key": message.key,
            "sender": message.sender,
            "recipient": message.recipient,
            "message_id": message.message_id,
            "data": base64.b64encode(message.data).decode("ascii"),
        }
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self.fsync:
            os.fsync(self._file.fileno())
        return SendResult(SendStatus.queued, None, "appended to the outbox", message.key)

    def describe(self) -> str:
        return f"outbox {self.path}"

    def probe(self, timeout: float = 5.0) -> ProbeResult:
        """Whether the file can be appended to, without writing to it or creating it."""
        hint = "Point NEWSLETTER_MAIL_BACKEND at a file in a folder this user can write."
        target = self.path if self.path.exists() else self.path.parent
        while not target.exists() and target != target.parent:
            target = target.parent
        if self.path.exists() and not self.path.is_file():
            return ProbeResult(False, f"{self.describe()}: not a file", hint)
        if not os.access(target, os.W_OK):
            return ProbeResult(False, f"{self.describe()}: {target} is not writable", hint)
        return ProbeResult(True, f"{self.describe()}: writable; whatever ships it must run")


def read_outbox(path: Path) -> list[dict[str, str]]:
    """The records of an outbox file, in order (for the program that ships them)."""
    if not path.exists():
        return []
    with path.open(encoding="ascii") as fh:
        return [json.loads(line) for line in fh if line.strip()]
