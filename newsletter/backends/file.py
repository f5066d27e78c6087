"""File backend: one ``.eml`` file per message in a folder (the local outbox).

The console backend with :meth:`write_message` overridden. A file is never overwritten: a
second message with the same key gets a numbered name, so a duplicate send is visible.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Self
from urllib.parse import unquote, urlsplit

from newsletter.backends.base import BackendError
from newsletter.backends.console import ConsoleBackend
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
