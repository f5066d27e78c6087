"""Failover: several backends in order; when one keeps failing transiently, use the next.

``NEWSLETTER_MAIL_BACKEND="smtp://relay-a:25 postmark://TOKEN@"`` (URLs separated by spaces).
Messages go through the first backend that works. When it can't be opened, or answers
``deferred`` (refused for now, so not accepted: connection refused, SMTP 4xx, HTTP 429/5xx)
for ``switch_after`` messages in a row, the batch's deferred messages are sent again through
the next one, which then stays in use for later batches. Messages the first backend accepted
are never sent again. ``unknown`` answers are never re-sent through another backend: the first
one may have delivered them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Self

from newsletter.backends.base import (
    BackendError,
    MailBackend,
    ReportingBackend,
    SendResult,
    SendStatus,
)
from newsletter.edition.message import OutgoingMessage


class FailoverBackend(ReportingBackend):
    def __init__(self, backends: Sequence[MailBackend], *, switch_after: int = 3) -> None:
        super().__init__()
        if len(backends) < 2:
            raise BackendError("failover needs at least two backends")
        self.backends = list(backends)
        self.switch_after = switch_after
        self.current = 0
        self._opened: set[int] = set()

    @classmethod
    def from_url(cls, url: str) -> Self:
        raise BackendError("build a FailoverBackend from a list of backends, not one URL")

    def open(self) -> bool:
        while True:
            try:
                if self.backends[self.current].open():
                    self._opened.add(self.current)
                return bool(self._opened)
            except BackendError:
                if self.current + 1 >= len(self.backends):
                    raise
                self.current += 1

    def close(self) -> None:
        for index in sorted(self._opened):
            self.backends[index].close()
        self._opened.clear()

    def send_each(
        self,
        messages: Sequence[OutgoingMessage],
        on_result: Callable[[int, SendResult], None],
        on_handover: Callable[[int], None] | None = None,
    ) -> list[SendResult]:
        """Every answer is reported as it comes (the backend's own ``send_each`` timing, so a
        journal keeps up), under the caller's index; a deferred message moved to the next
        backend is reported again with that backend's answer (the last report counts)."""
        results: list[SendResult] = [SendResult(SendStatus.deferred, None, "not sent")] * len(
            messages
        )
        todo = list(range(len(messages)))
        while todo:
            batch = list(todo)
            heard: set[int] = set()

            def report(
                j: int, result: SendResult, batch: list[int] = batch, heard: set[int] = heard
            ) -> None:
                heard.add(j)
                results[batch[j]] = result
                on_result(batch[j], result)

            try:
                answers = self.backends[self.current].send_each(
                    [messages[i] for i in batch],
                    report,
                    None if on_handover is None else partial(_mapped, on_handover, batch),
                )
            except BackendError as exc:
                # It broke: the answers it gave before stand (those messages were handed
                # over), the rest were not sent and count as deferred, so they move on.
                rest = len(batch) - len(exc.results)
                answers = exc.results + [SendResult(SendStatus.deferred, None, str(exc))] * rest
            for j, result in enumerate(answers):
                if j not in heard:  # a backend that answers for the batch at once
                    report(j, result)
            deferred = [i for i, r in zip(batch, answers, strict=True) if r.status == "deferred"]
            if not self._failing(answers) or self.current + 1 >= len(self.backends):
                break
            # Only the deferred ones (refused, so not accepted) go through the next backend.
            todo = deferred
            self.current += 1
            try:
                if self.backends[self.current].open():
                    self._opened.add(self.current)
            except BackendError:
                pass  # that one is down too: it answers deferred, and the loop moves on
        return results

    def _failing(self, answers: Sequence[SendResult]) -> bool:
        in_a_row = 0
        for result in answers:
            in_a_row = in_a_row + 1 if result.status == SendStatus.deferred else 0
            if in_a_row >= self.switch_after:
                return True
        return bool(answers) and all(r.status == SendStatus.deferred for r in answers)

    def describe(self) -> str:
        names = [b.describe() for b in self.backends]
        names[self.current] = f"[{names[self.current]}]"
        return "failover: " + " -> ".join(names)


def _mapped(on_handover: Callable[[int], None], batch: list[int], j: int) -> None:
    on_handover(batch[j])
