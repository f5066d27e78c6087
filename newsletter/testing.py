"""The mail backend contract as a pytest suite, shipped so a plugin backend's tests run it too.

The contract is the one :mod:`newsletter.backends.base` states; the built-in backends' own
tests run this same class. A backend's tests subclass :class:`BackendContract`, say how to
build the backend and how to read back what it delivered, and inherit every ``test_contract_*``::

    import pytest
    from newsletter.testing import BackendContract

    class TestOutboxContract(BackendContract):
        secrets = ("s3cret",)                      # must never show in describe() or errors
        bad_urls = {"outbox://": "folder"}         # from_url must name the bad part

        @pytest.fixture(autouse=True)
        def _folder(self, tmp_path):               # any fixture the backend needs
            self.folder = tmp_path

        def make_backend(self):
            return OutboxBackend.from_url(f"outbox://{self.folder}")

        def delivered(self):
            return [line.encode() for line in (self.folder / "outbox.jsonl").open()]

Pytest collects a ``Test*`` subclass once per module that defines it; a fresh instance runs each
test, so state kept on ``self`` by an autouse fixture belongs to one test.

Importing this module imports pytest; nothing in the engine imports it, so a production process
never loads pytest.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from email.headerregistry import Address
from typing import ClassVar

import pytest

from newsletter.backends.base import (
    BackendError,
    MailBackend,
    ProbeResult,
    SendResult,
    SendStatus,
)
from newsletter.edition.message import OutgoingMessage
from newsletter.edition.personalization import EditionIdentity, MessageTemplate, Recipient
from newsletter.edition.rendering import RenderedEdition
from newsletter.edition.tokens import TokenSigner

__all__ = ["BackendContract", "sample_messages"]

#: 2026-01-05 09:00 UTC: messages carry a fixed Date so runs compare byte for byte.
SAMPLE_TIME = 1_767_603_600.0
_MARKER = "\x00slot\x00"
#: A recipient line crafted to add a header if a backend pasted it into a message unescaped.
HOSTILE_RECIPIENT = "victim@example.com\r\nBcc: evil@example.net"


def sample_messages(count: int = 3, *, edition_id: int = 1) -> list[OutgoingMessage]:
    """``count`` real messages as the engine builds them (MIME bytes, the JSON-API fields,
    a signed unsubscribe link per recipient), to distinct addresses, one name non-ASCII."""
    slot = f"{_MARKER}{{}}{_MARKER}".format
    rendered = RenderedEdition(
        subject="Contract check: ✓ one result per message",
        preheader="",
        html=f'<p>Hello {slot("greeting_name")}</p><p><a href="{slot("unsubscribe_url")}">'
        "Unsubscribe</a></p>",
        text=f"Hello {slot('greeting_name')}\n\nUnsubscribe: {slot('unsubscribe_url')}\n",
        marker=_MARKER,
    )
    identity = EditionIdentity(
        edition_id=edition_id,
        newsletter_id=1,
        newsletter_slug="contract",
        newsletter_name="Contract Weekly",
        sender=Address("Contract Weekly", "news", "example.com"),
        base_url="https://news.example.com",
        instance_tag="contract01",
    )
    template = MessageTemplate(rendered, identity)
    signer = TokenSigner(["contract-suite-signing-key-not-a-secret-0123456789"])
    names = ["Ada Lovelace", None, "Zoë Ångström"]
    return [
        template.build(
            Recipient(i + 1, f"r{i + 1}@example.com", names[i % len(names)]),
            signer,
            now=SAMPLE_TIME,
        )
        for i in range(count)
    ]


class BackendContract(ABC):
    """Every ``test_contract_*`` here holds for any :class:`MailBackend`.

    A subclass provides :meth:`make_backend` and :meth:`delivered`, and may set
    :attr:`secrets`, :attr:`bad_urls` and override :meth:`idempotency_keys` and
    :meth:`matches`. The backend must accept the three :func:`sample_messages`
    (``status.delivered``) where it is pointed by the subclass.
    """

    #: Credentials in the backend's URL: never in ``describe()``, a probe or an error.
    secrets: ClassVar[tuple[str, ...]] = ()
    #: Bad URLs and a word each one's :class:`BackendError` must contain (the bad part).
    bad_urls: ClassVar[Mapping[str, str]] = {}

    @abstractmethod
    def make_backend(self) -> MailBackend:
        """A new backend pointed at this test's destination (folder, stub server...)."""

    @abstractmethod
    def delivered(self) -> list[bytes]:
        """What reached the destination so far, one item per message, in arrival order
        (the MIME bytes, or the request body an email API received)."""

    def idempotency_keys(self) -> list[str] | None:
        """The idempotency key the destination saw with each delivered message, in order,
        or None when the backend's provider takes none (the check is then skipped)."""
        return None

    def matches(self, arrived: bytes, message: OutgoingMessage) -> bool:
        """Whether ``arrived`` is ``message`` (by default: it carries its Message-ID)."""
        return message.message_id.encode() in arrived

    # --- fixtures ---------------------------------------------------------------------------

    @pytest.fixture
    def backend(self) -> Iterator[MailBackend]:
        backend = self.make_backend()
        yield backend
        backend.close()

    @pytest.fixture
    def messages(self) -> list[OutgoingMessage]:
        return sample_messages(3)

    # --- the contract -----------------------------------------------------------------------

    def test_contract_one_result_per_message_in_order(
        self, backend: MailBackend, messages: list[OutgoingMessage]
    ) -> None:
        with backend:
            results = backend.send_messages(messages)
        assert len(results) == len(messages)
        assert all(isinstance(r, SendResult) and isinstance(r.status, SendStatus) for r in results)
        assert all(r.status.delivered for r in results), [r.status for r in results]
        arrived = self.delivered()
        assert len(arrived) == len(messages)
        for got, message in zip(arrived, messages, strict=True):
            assert self.matches(got, message), f"{message.recipient} arrived out of order"

    def test_contract_empty_batch_sends_nothing(self, backend: MailBackend) -> None:
        with backend:
            assert backend.send_messages([]) == []
            assert backend.send_each([], _never) == []
        assert self.delivered() == []

    def test_contract_send_each_reports_each_result_in_order(
        self, backend: MailBackend, messages: list[OutgoingMessage]
    ) -> None:
        reported: list[tuple[int, SendResult]] = []
        handed: list[int] = []
        with backend:
            results = backend.send_each(
                messages, lambda i, r: reported.append((i, r)), handed.append
            )
        assert len(results) == len(messages)
        first_seen = list(dict.fromkeys(i for i, _ in reported))
        assert first_seen == list(range(len(messages))), "each index reported, in order"
        last = dict(reported)  # an index reported again: the last report is its answer
        assert [last[i] for i in range(len(messages))] == results
        assert handed == sorted(handed) and set(handed) <= set(range(len(messages)))

    def test_contract_open_close_and_context_manager(
        self, backend: MailBackend, messages: list[OutgoingMessage]
    ) -> None:
        opened = backend.open()
        assert isinstance(opened, bool), "open() says whether it opened a connection"
        with backend as entered:
            assert entered is backend
            with backend:  # nested: only the level that opened closes
                backend.send_messages(messages[:1])
            backend.send_messages(messages[1:2])
        backend.send_messages(messages[2:])  # the caller's connection (if any) still works
        if opened:
            backend.close()
        backend.close()  # safe twice
        assert len(self.delivered()) == len(messages)

    def test_contract_sends_without_context_manager(
        self, backend: MailBackend, messages: list[OutgoingMessage]
    ) -> None:
        first = backend.send_messages(messages[:1])
        rest = backend.send_messages(messages[1:])
        assert all(r.status.delivered for r in first + rest)
        assert len(self.delivered()) == len(messages)

    def test_contract_idempotency_key_is_passed(
        self, backend: MailBackend, messages: list[OutgoingMessage]
    ) -> None:
        if self.idempotency_keys() is None:
            pytest.skip("this backend's provider takes no idempotency key")
        with backend:
            backend.send_messages(messages)
        assert self.idempotency_keys() == [m.key for m in messages]

    def test_contract_a_recipient_cannot_inject_headers(
        self, backend: MailBackend, messages: list[OutgoingMessage]
    ) -> None:
        """A CR/LF in an address is refused (``invalid``) or passed on escaped: no extra
        header line reaches the destination."""
        message = messages[0]
        hostile = dataclasses.replace(
            message,
            recipient=HOSTILE_RECIPIENT,
            content=dataclasses.replace(message.content, to_email=HOSTILE_RECIPIENT)
            if message.content is not None
            else None,
        )
        with backend:
            results = backend.send_messages([hostile])
        assert len(results) == 1 and isinstance(results[0].status, SendStatus)
        for arrived in self.delivered():
            assert b"\nBcc: evil@" not in arrived, "the recipient added a header line"

    def test_contract_describe_never_leaks_secrets(self, backend: MailBackend) -> None:
        description = backend.describe()
        assert isinstance(description, str) and description
        for secret in self.secrets:
            assert secret not in description

    def test_contract_from_url_errors_name_the_bad_part(self, backend: MailBackend) -> None:
        if not self.bad_urls:
            pytest.skip("no bad_urls given")
        for url, part in self.bad_urls.items():
            with pytest.raises(BackendError) as caught:
                type(backend).from_url(url)
            message = str(caught.value)
            assert part in message, f"{url!r}: {message!r} does not name {part!r}"
            for secret in self.secrets:
                assert secret not in message

    def test_contract_probe_sends_nothing_and_leaks_nothing(self, backend: MailBackend) -> None:
        found = backend.probe(timeout=5.0)
        assert isinstance(found, ProbeResult) and found.ok in (True, None, False)
        assert found.summary and "\n" not in found.summary, "one line"
        for secret in self.secrets:
            assert secret not in found.summary and secret not in (found.hint or "")
        assert self.delivered() == [], "a probe never sends"


def _never(_index: int, _result: SendResult) -> None:
    raise AssertionError("on_result called for an empty batch")
