"""Console backend: prints each message to a stream (stdout by default). For development."""

from __future__ import annotations

import sys
import threading
from collections.abc import Sequence
from typing import Self, TextIO

from newsletter.backends.base import MailBackend, ProbeResult, SendResult, SendStatus
from newsletter.edition.message import OutgoingMessage

#: What a probe of a backend that keeps mail on this machine says, and what to do about it.
LOCAL_ONLY = "no mail leaves this machine (fine for development, not for production)"
SEND_FOR_REAL = "Set NEWSLETTER_MAIL_BACKEND to smtp://... or an email API to send for real."


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

    def probe(self, timeout: float = 5.0) -> ProbeResult:
        return ProbeResult(None, f"{self.describe()}: {LOCAL_ONLY}", SEND_FOR_REAL)
