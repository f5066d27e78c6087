"""VERP return paths: each message's envelope sender names its delivery, signed.

With ``NEWSLETTER_BOUNCE_ADDRESS=bounces@example.com`` the message to subscriber 3 of edition 7
goes out with ``MAIL FROM:<bounces+7-3-<signature>@example.com>``. A bounce is addressed to that
return path (RFC 5321 4.4), so whatever the bouncing server writes in its report, the address
it was sent to says which delivery failed.

The signature (an HMAC of the two ids, 80 bits, lower-case base32) makes the address
unforgeable: without it anyone could mail ``bounces+7-3@...`` and suppress subscriber 3.
Everything is lower case and made of letters, digits and hyphens, because some servers fold
the local part's case and some refuse other characters. Verification accepts every signing key
(``NEWSLETTER_OLD_SECRET_KEYS``), so a rotation does not orphan bounces still in flight.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from newsletter.edition.tokens import b36

SIGNATURE_CHARS = 16  # 80 bits of base32

_TOKEN = re.compile(r"([0-9a-z]{1,13})-([0-9a-z]{1,13})-([a-z2-7]{16})")


@dataclass(frozen=True, slots=True)
class DeliveryRef:
    """The (edition, subscriber) pair that identifies one delivery (its unique key)."""

    edition_id: int
    subscriber_id: int


def return_paths(bounce_address: str, keys: Sequence[str]) -> ReturnPaths | None:
    """The return paths of ``bounce_address`` signed with ``keys``; None when VERP is off
    (no bounce address, or no secret key to sign with)."""
    if not bounce_address or not keys or not keys[0]:
        return None
    return ReturnPaths(bounce_address, keys)


class ReturnPaths:
    """Builds and reads the return paths of one bounce address (``local@domain``)."""

    def __init__(self, bounce_address: str, keys: Sequence[str]) -> None:
        local, at, domain = bounce_address.strip().rpartition("@")
        if not at or not local or not domain or not bounce_address.isascii():
            raise ValueError(
                f"NEWSLETTER_BOUNCE_ADDRESS: expected an ASCII address like bounces@example.com, "
                f"got {bounce_address!r}"
            )
        if "+" in local or any(c in bounce_address for c in '\r\n<>" ,;'):
            raise ValueError(
                f"NEWSLETTER_BOUNCE_ADDRESS: {bounce_address!r} may not contain '+', spaces or "
                "brackets (the engine adds +<token> itself)"
            )
        if not keys or not keys[0]:
            raise ValueError("at least one non-empty secret key is required")
        self.local = local.lower()
        self.domain = domain.lower()
        self._macs = [
            hmac.new(
                hashlib.sha256(b"newsletter-verp-v1\x00" + k.encode()).digest(),
                digestmod=hashlib.sha256,
            )
            for k in keys
        ]

    @property
    def address(self) -> str:
        """The bare bounce address (what an MTA forwards, what the mailbox is)."""
        return f"{self.local}@{self.domain}"

    def _signature(self, mac: hmac.HMAC, body: str) -> str:
        m = mac.copy()
        m.update(body.encode("ascii"))
        return base64.b32encode(m.digest()[:10]).decode("ascii").lower()

    def for_delivery(self, edition_id: int, subscriber_id: int) -> str:
        """``local+<edition>-<subscriber>-<signature>@domain`` (ids in base 36)."""
        body = f"{b36(edition_id)}-{b36(subscriber_id)}"
        return f"{self.local}+{body}-{self._signature(self._macs[0], body)}@{self.domain}"

    def read(self, address: str) -> DeliveryRef | None:
        """The delivery a return path names, or None if it is not a genuine one of ours.

        Case and surrounding angle brackets do not matter; a wrong domain, base or signature
        gives None (never an exception: bounce intake sees all kinds of addresses)."""
        addr = address.strip().strip("<>").lower()
        local, _, domain = addr.rpartition("@")
        base, plus, token = local.partition("+")
        if not plus or base != self.local or domain != self.domain:
            return None
        match = _TOKEN.fullmatch(token)
        if match is None:
            return None
        edition, subscriber, signature = match.groups()
        body = f"{edition}-{subscriber}"
        if not any(hmac.compare_digest(self._signature(m, body), signature) for m in self._macs):
            return None
        return DeliveryRef(int(edition, 36), int(subscriber, 36))

    def first(self, addresses: Iterable[str]) -> DeliveryRef | None:
        """The delivery named by the first genuine return path among ``addresses``."""
        for address in addresses:
            ref = self.read(address)
            if ref is not None:
                return ref
        return None
