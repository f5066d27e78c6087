"""In-memory backend, shipped for tests and benchmarks (as Django's locmem backend).

Sent messages land in the module-level :data:`outbox`. Options in the URL:
``memory://?retain=0`` counts messages and bytes without keeping them (benchmarks);
``reject=a@x,b@y`` answers 550, ``defer=c@z`` answers 451 and ``lose=d@w`` reports the answer
lost after handing over (``unknown``) for those recipients.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Self

from newsletter.backends.base import (
    MailBackend,
    ProbeResult,
    SendResult,
    SendStatus,
    flag,
    query_options,
)
from newsletter.backends.console import LOCAL_ONLY, SEND_FOR_REAL
from newsletter.edition.message import OutgoingMessage

outbox: list[OutgoingMessage] = []


@dataclass
class Counters:
    messages: int = 0
    bytes: int = 0


counters = Counters()
_lock = threading.Lock()


def reset() -> None:
    """Empty the outbox and zero the counters (call between tests)."""
    with _lock:
        outbox.clear()
        counters.messages = counters.bytes = 0


class MemoryBackend(MailBackend):
    schemes = ("memory",)
    in_process_only = True

    def __init__(
        self,
        *,
        retain: bool = True,
        reject: frozenset[str] = frozenset(),
        defer: frozenset[str] = frozenset(),
        lose: frozenset[str] = frozenset(),
    ) -> None:
        super().__init__()
        self.retain = retain
        self.reject = reject
        self.defer = defer
        self.lose = lose

    @classmethod
    def from_url(cls, url: str) -> Self:
        options = query_options(url)

        def addresses(name: str) -> frozenset[str]:
            return frozenset(a.strip().lower() for a in options.get(name, "").split(",") if a)

        return cls(
            retain=flag(options, "retain", True),
            reject=addresses("reject"),
            defer=addresses("defer"),
            lose=addresses("lose"),
        )

    def send_messages(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        results = []
        with _lock:
            for message in messages:
                rcpt = message.recipient.lower()
                if rcpt in self.reject:
                    results.append(SendResult(SendStatus.rejected, 550, "5.1.1 user unknown"))
                    continue
                if rcpt in self.defer:
                    results.append(SendResult(SendStatus.deferred, 451, "4.3.0 try again later"))
                    continue
                counters.messages += 1
                counters.bytes += message.size
                if self.retain:
                    outbox.append(message)
                if rcpt in self.lose:  # delivered, but the answer never came back
                    results.append(SendResult(SendStatus.unknown, None, "connection lost"))
                    continue
                results.append(SendResult(SendStatus.sent, 250, "ok", provider_id=message.key))
        return results

    def describe(self) -> str:
        return "memory" + ("" if self.retain else " (counting only)")

    def probe(self, timeout: float = 5.0) -> ProbeResult:
        return ProbeResult(None, f"{self.describe()}: {LOCAL_ONLY}", SEND_FOR_REAL)
