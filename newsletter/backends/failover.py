"""Failover: several backends in order; when one keeps failing transiently, use the next.

``NEWSLETTER_MAIL_BACKEND="smtp://relay-a:25 postmark://TOKEN@"`` (URLs separated by spaces).
Messages go through the first backend that works. When it can't be opened, or answers
``deferred`` (nothing handed over: connection refused, SMTP 4xx, HTTP 429/5xx) for
``switch_after`` messages in a row, the batch's deferred messages are sent again through the
next one, which then stays in use for later batches. Messages the first backend accepted are
never sent again. ``unknown`` answers are never re-sent through
another backend: the first one may have delivered them; nor are messages deferred after they
were handed over (a 4xx to the end of data): they wait for their retry time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Self

from newsletter.backends.base import BackendError, MailBackend, SendResult, SendStatus
from newsletter.message import OutgoingMessage


class FailoverBackend(MailBackend):
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

    def send_messages(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        return self.send_each(messages, lambda _index, _result: None)

    def send_each(
        self,
        messages: Sequence[OutgoingMessage],
        on_result: Callable[[int, SendResult], None],
        on_handover: Callable[[int], None] | None = None,
    ) -> list[SendResult]:
        """Each answer is reported once, as soon as it is final: at once for anything but
        ``deferred`` (the backend's own ``send_each`` timing, so a journal keeps up with SMTP),
        and a ``deferred`` one when no other backend will take that message. A message deferred
        after it was handed over (refused at the end of data) is not moved to the next backend
        in this batch: it is retried later like any deferral."""
        results: list[SendResult] = [SendResult(SendStatus.deferred, None, "not sent")] * len(
            messages
        )
        reported: set[int] = set()
        handed: set[int] = set()

        def handover(index: int) -> None:
            handed.add(index)
            if on_handover is not None:
                on_handover(index)

        def report(index: int, result: SendResult) -> None:
            results[index] = result
            # Deferred after its hand-over (a 4xx to the end of data) is final too: held back,
            # the caller's journal would say "handed over" while the next backend works.
            final = result.status != SendStatus.deferred or index in handed
            if final and index not in reported:
                reported.add(index)
                on_result(index, result)

        todo = list(range(len(messages)))
        while todo:
            batch = list(todo)
            try:
                answers = self.backends[self.current].send_each(
                    [messages[i] for i in batch],
                    partial(_mapped_result, report, batch),
                    partial(_mapped, handover, batch),
                )
            except BackendError as exc:
                # It broke: the answers it gave before stand (those messages were handed
                # over), the rest were not sent and count as deferred, so they move on.
                rest = len(batch) - len(exc.results)
                answers = exc.results + [SendResult(SendStatus.deferred, None, str(exc))] * rest
            for i, result in zip(batch, answers, strict=True):
                report(i, result)
            deferred = [
                i
                for i, r in zip(batch, answers, strict=True)
                if r.status == SendStatus.deferred and i not in handed
            ]
            if not self._failing(answers) or self.current + 1 >= len(self.backends):
                break
            # Only the deferred ones (never handed over) go through the next backend.
            todo = deferred
            self.current += 1
            try:
                if self.backends[self.current].open():
                    self._opened.add(self.current)
            except BackendError:
                pass  # that one is down too: it answers deferred, and the loop moves on
        for index, result in enumerate(results):
            if index not in reported:  # deferred, and no backend left to try
                on_result(index, result)
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


def _mapped_result(
    report: Callable[[int, SendResult], None], batch: list[int], j: int, result: SendResult
) -> None:
    report(batch[j], result)
