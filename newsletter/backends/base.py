"""The mail backend contract, after Django's mail backends and django-anymail.

A backend is opened (maybe), given batches of ready messages, and closed. ``open()`` returns
True only if it opened a connection, and only the opener closes it, so a caller can reuse one
connection across many batches. ``send_messages`` never raises for a per-recipient problem: it
returns one :class:`SendResult` per message, in order, with a status from a closed list.
``probe()`` checks what it can (credentials, reachability) without sending anything, so
``newsletter doctor`` can judge any backend, a plugin's too, through this contract alone.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Self
from urllib.parse import unquote, urlsplit

from newsletter.edition.message import OutgoingMessage
from newsletter.errors import NewsletterError


class SendStatus(enum.StrEnum):
    """What the backend knows about one message (django-anymail's list, plus ``deferred``)."""

    sent = "sent"  # accepted by the next hop (SMTP 250)
    queued = "queued"  # accepted by an email API for later delivery
    deferred = "deferred"  # transient failure (SMTP 4xx, connection lost): retry later
    rejected = "rejected"  # permanent refusal of this recipient (SMTP 5xx)
    invalid = "invalid"  # the message or address is malformed
    failed = "failed"  # permanent failure of another kind
    unknown = "unknown"  # handed over, answer lost: may or may not have been delivered

    @property
    def delivered(self) -> bool:
        return self in (SendStatus.sent, SendStatus.queued)

    @property
    def transient(self) -> bool:
        return self in (SendStatus.deferred, SendStatus.unknown)


@dataclass(frozen=True, slots=True)
class SendResult:
    status: SendStatus
    code: int | None = None  # SMTP reply code or HTTP status
    detail: str = ""  # server text, for operators; never contains credentials
    provider_id: str | None = None  # the backend's own message id, if it returns one
    #: Seconds the provider asked us to wait (HTTP Retry-After) before trying again.
    retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """What :meth:`MailBackend.probe` found, in the doctor's three states.

    ``ok`` is True (works as far as can be told without sending), None (can't tell, or works
    with a caveat: a warning) or False (broken). ``summary`` is one line saying what was found
    and ``hint`` what the operator does next; neither may contain a credential.
    """

    ok: bool | None
    summary: str
    hint: str | None = None


class BackendError(NewsletterError, RuntimeError):
    """The backend can't work at all (bad URL, can't connect, credentials refused).

    ``results`` holds the answers for the messages of the batch handed over before it broke
    (in order, a prefix of the batch), so the caller records them instead of sending them
    again; the rest of the batch was not handed over.
    """

    def __init__(self, *args: object, transient: bool = False, code: int | None = None) -> None:
        super().__init__(*args)
        self.results: list[SendResult] = []
        #: A connection-level failure worth retrying later (SMTP 421 "too busy", a refused
        #: or timed-out connection): the caller defers the messages like a 4xx and counts them
        #: toward the error budget instead of pausing the edition at once.
        self.transient = transient
        #: The server's reply code, when it gave one.
        self.code = code
        #: What the operator does next, added by the caller that knows (the edition paused).
        self.hint: str | None = None

    def __str__(self) -> str:
        text = super().__str__()
        return f"{text}; {self.hint}" if self.hint else text


class HandoverError(NewsletterError, RuntimeError):
    """The caller's ``on_handover`` raised (its journal could not be written, say).

    Not an ``OSError``: a backend must not take it for a lost connection and record the
    message ``unknown`` for the wrong reason; it stops the send. ``sent`` says whether the
    message had left when the callback ran (HTTP: yes, so it is ``unknown``; SMTP calls it
    before the final write: no, so it goes back to the queue)."""

    def __init__(self, *args: object, sent: bool = True) -> None:
        super().__init__(*args)
        self.sent = sent


class MailBackend(ABC):
    """Base class for every backend. Subclasses implement :meth:`send_messages`."""

    #: URL schemes this class accepts (the entry-point names point at the class).
    schemes: tuple[str, ...] = ()

    #: True when what the backend does is only visible inside this process (the memory
    #: outbox): a send then keeps its senders in threads instead of forking processes.
    in_process_only: bool = False

    def __init__(self) -> None:
        # One entry per `with` level: whether that level opened the connection. Nested
        # `with backend:` blocks (a caller's around dispatch's own) close only at the level
        # that opened.
        self._opened_by_context: list[bool] = []

    @classmethod
    @abstractmethod
    def from_url(cls, url: str) -> Self:
        """Build the backend from its URL; raise :class:`BackendError` naming a bad part."""

    def open(self) -> bool:
        """Open a connection if the backend uses one; True only if this call opened it."""
        return False

    def close(self) -> None:
        """Close what :meth:`open` opened. Safe to call twice."""
        return None

    @abstractmethod
    def send_messages(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        """Send each message; one result per message, in the same order."""

    def send_each(
        self,
        messages: Sequence[OutgoingMessage],
        on_result: Callable[[int, SendResult], None],
        on_handover: Callable[[int], None] | None = None,
    ) -> list[SendResult]:
        """Like :meth:`send_messages`, and call ``on_result(index, result)`` for each answer.

        A backend that hands messages over one at a time (SMTP, the email APIs) overrides this
        to report each answer the moment it arrives, so the caller can write it down before the
        next message goes out; this default answers for the whole batch at once. An index may
        be reported again when another backend takes the message over (failover after a
        deferral); the last report is its answer.

        ``on_handover(index)``, where a backend can tell, is called at the moment the server
        may start counting the message and before its answer is read (for SMTP: right before
        the write that carries the end-of-data dot, so nothing but that one system call lies
        between them; HTTP: when the request is written in full). A caller that writes this
        down knows, after a crash, which messages the server may have accepted without telling
        us. This default can't tell, so it never calls it.
        """
        results = self.send_messages(messages)
        for index, result in enumerate(results):
            on_result(index, result)
        return results

    def describe(self) -> str:
        """A human description, safe to log (no passwords)."""
        return type(self).__name__

    def probe(self, timeout: float = 5.0) -> ProbeResult:
        """Check credentials and reachability without sending anything; never raises for
        what it finds (a refused login is a result, not an exception).

        ``timeout`` bounds each network wait, in seconds. A backend that can check nothing
        keeps this default, which is a warning, not a failure: the doctor calls it for every
        backend, a plugin's included, and reads nothing else of it.
        """
        return ProbeResult(None, f"{self.describe()}: no probe for this backend")

    def __enter__(self) -> Self:
        self._opened_by_context.append(self.open())
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._opened_by_context.pop():
            self.close()


class ReportingBackend(MailBackend):
    """A backend whose real work is :meth:`send_each` (it reports message by message);
    :meth:`send_messages` is that, with nobody listening."""

    def send_messages(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        return self.send_each(messages, _nobody_listens)

    @abstractmethod
    def send_each(
        self,
        messages: Sequence[OutgoingMessage],
        on_result: Callable[[int, SendResult], None],
        on_handover: Callable[[int], None] | None = None,
    ) -> list[SendResult]:
        """See :meth:`MailBackend.send_each`."""


def _nobody_listens(_index: int, _result: SendResult) -> None:
    return None


def query_options(url: str) -> dict[str, str]:
    """The query string of a backend URL as single values (last one wins).

    Percent-escapes are decoded but "+" stays a plus: it is common in email addresses
    (``?reject=user+tag@example.com``) and these URLs are typed by people, not forms.
    """
    options: dict[str, str] = {}
    for pair in urlsplit(url).query.split("&"):
        if pair:
            key, _, value = pair.partition("=")
            options[unquote(key)] = unquote(value)
    return options


def flag(options: dict[str, str], name: str, default: bool) -> bool:
    value = options.get(name)
    if value is None:
        return default
    if value.lower() in ("1", "true", "yes", "on", ""):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise BackendError(f"backend option {name}={value!r}: expected 1 or 0")
