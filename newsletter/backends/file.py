"""File backend: one ``.eml`` file per message in a folder (the local outbox).

The console backend with :meth:`write_message` overridden. A file is never overwritten: a
second message with the same key gets a numbered name, so a duplicate send is visible.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Self
from urllib.parse import unquote, urlsplit

from newsletter.backends.base import BackendError, ProbeResult
from newsletter.backends.console import LOCAL_ONLY, ConsoleBackend
from newsletter.edition.message import OutgoingMessage


class FileBackend(ConsoleBackend):
    schemes = ("file",)

    def __init__(self, directory: Path) -> None:
        super().__init__()
        self.directory = directory

    @classmethod
    def from_url(cls, url: str) -> Self:
        """``file:///abs/path`` or ``file://./relative/path``."""
        parts = urlsplit(url)
        path = unquote(parts.netloc + parts.path)
        if not path:
            raise BackendError("file backend needs a folder: file:///abs/path or file://./outbox")
        return cls(Path(path))

    def open(self) -> bool:
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise BackendError(f"can't create outbox folder {self.directory}: {exc}") from exc
        return False

    def write_message(self, message: OutgoingMessage) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in message.key)
        for n in range(1, 10_000):
            name = f"{stem}.eml" if n == 1 else f"{stem}.{n}.eml"
            try:
                # 0600: the message carries the reader's signed unsubscribe link.
                fd = os.open(self.directory / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(message.data)
                return
            except FileExistsError:
                continue
        raise BackendError(f"too many copies of {stem} in {self.directory}")

    def describe(self) -> str:
        return f"file outbox {self.directory}"

    def probe(self, timeout: float = 5.0) -> ProbeResult:
        """Whether the folder can take files, tested with a temporary file that vanishes; a
        missing folder is not created (a probe changes nothing), its nearest ancestor is
        tested instead."""
        hint = "Point NEWSLETTER_MAIL_BACKEND at a folder this user can write, or at a real server."
        existing = self.directory
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        problem = None
        if not existing.is_dir():
            problem = f"{existing} is not a folder"
        else:
            try:
                with tempfile.TemporaryFile(dir=existing):
                    pass
            except OSError as exc:
                problem = f"can't write in {existing}: {exc.strerror or exc}"
        if problem:
            return ProbeResult(False, f"{self.describe()}: {problem}", hint)
        return ProbeResult(None, f"{self.describe()} is writable; {LOCAL_ONLY}", hint)
