"""The inbound listener an MTA forwards bounce mail to: ``newsletter bounces serve``.

An SMTP or LMTP server (aiosmtpd) that takes mail for the bounce address and its VERP
variants (plus any address given with ``--accept``, such as a feedback-loop address), refuses
every other recipient at RCPT time, and hands each message to
:func:`newsletter.service.bounce_intake.take`. It answers 250 only after the reports are
committed; a database that fails gets 451, so the MTA keeps the message and tries again (nothing is
lost, and a report that arrives twice counts once).

LMTP (RFC 2033) answers DATA once per recipient: Postfix's ``lmtp:`` transport and Exim's
``lmtp`` driver expect that. Over SMTP a single answer covers them all.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, Envelope
from aiosmtpd.smtp import Session as SMTPSession

from newsletter.edition.verp import ReturnPaths
from newsletter.service.bounce_intake import Intake

log = logging.getLogger(__name__)

#: Bigger than any bounce (a DSN returns the headers or the ~100 KB original): refused above.
MAX_MESSAGE_BYTES = 10 * 1024 * 1024

Take = Callable[[bytes, list[str]], Intake]


class BounceHandler:
    """aiosmtpd handler: the recipient check and the hand-over to ``take``."""

    def __init__(
        self, take: Take, paths: ReturnPaths, *, accept: Sequence[str] = (), lmtp: bool = False
    ) -> None:
        self._take = take
        self._paths = paths
        self._accept = {a.strip().lower() for a in accept if a.strip()}
        self._lmtp = lmtp

    def accepts(self, address: str) -> bool:
        """The bounce address, any ``+tag`` of it, or an address given with ``--accept``."""
        addr = address.strip().strip("<>").lower()
        if addr in self._accept:
            return True
        local, _, domain = addr.rpartition("@")
        return domain == self._paths.domain and local.partition("+")[0] == self._paths.local

    async def handle_RCPT(
        self,
        server: SMTP,
        session: SMTPSession,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if not self.accepts(address):
            return "550 5.1.1 not a bounce address of this server"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: SMTPSession, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        if isinstance(envelope.content, bytes) and not raw:
            raw = envelope.content
        rcpts = list(envelope.rcpt_tos)
        try:
            intake = await asyncio.to_thread(self._take, bytes(raw), rcpts)
        except Exception as exc:  # the MTA keeps the message and retries
            log.warning("bounce report not stored (%s); answered 451", type(exc).__name__)
            reply = "451 4.3.0 could not store the report now, try again later"
        else:
            log.info("bounce report from %s: %s", envelope.mail_from, intake.describe())
            reply = "250 2.0.0 OK: report taken"
        # LMTP: one reply per accepted recipient (RFC 2033 4.2), each on its own line.
        return "\r\n".join([reply] * len(rcpts)) if self._lmtp and rcpts else reply


class BounceServer(Controller):
    """The listener in a background thread (``start()`` / ``stop()``), SMTP or LMTP."""

    def __init__(self, handler: BounceHandler, *, host: str, port: int, lmtp: bool = False) -> None:
        super().__init__(
            handler,
            hostname=host,
            port=port,
            ready_timeout=10,
            data_size_limit=MAX_MESSAGE_BYTES,
            decode_data=False,
        )
        self._lmtp = lmtp

    def factory(self) -> Any:
        cls = LMTP if self._lmtp else SMTP
        return cls(self.handler, **self.SMTP_kwargs)
