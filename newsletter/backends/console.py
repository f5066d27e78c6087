"""Console backend: prints each message to a stream (stdout by default). For development."""

from __future__ import annotations

import sys
import threading
from collections.abc import Sequence
from typing import Self, TextIO

from newsletter.backends.base import MailBackend, SendResult, SendStatus
from newsletter.edition.message import OutgoingMessage


class ConsoleBackend(MailBackend):
    schemes = ("console",)

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__()
        self.stream = stream or sys.stdout
        self._lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str) -> Self:
        return cls()

    def write_message(self, message: OutgoingMessage) -> None:
        """Where one message goes; the file backend overrides only this."""
        self.stream.write(message.data.decode("ascii", "replace").replace("\r\n", "\n"))
        self.stream.write("\n" + "-" * 79 + "\n")

    def send_messages(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        results = []
        with self._lock:
            for message in messages:
                self.write_message(message)
                results.append(SendResult(SendStatus.sent, 250, "written"))
            self.stream.flush()
        return results

    def describe(self) -> str:
        return "console (stdout)"
