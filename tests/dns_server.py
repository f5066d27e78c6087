"""An authoritative DNS server for tests (dnslib), on 127.0.0.1, UDP and TCP on one free port.

Zones are plain Python data, a mapping of names to record types to values::

    {
        "news.example.dev": {
            "TXT": ["v=spf1 ip4:203.0.113.0/24 -all"],
            "MX": ["10 mx.example.dev"],
            "A": ["203.0.113.5"],
        },
        reverse("203.0.113.5"): {"PTR": ["mail.example.dev"]},
    }

A TXT value is a string (split into 255-byte character-strings as a zone file would) or a
tuple of strings (sent as those character-strings, to test that they are joined). CNAME is
followed within the zones. A name that is not there is NXDOMAIN; a name without the type asked
is NOERROR with no answer; a name in :attr:`DnsServer.servfail` answers SERVFAIL.

Like a real server without EDNS, UDP answers longer than 512 bytes are truncated (TC), so
the client must retry over TCP: :attr:`DnsServer.queries` records (protocol, name, type).
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from dnslib import AAAA, CNAME, MX, PTR, QTYPE, RCODE, RR, TXT, A, DNSRecord
from dnslib.server import DNSHandler, DNSLogger, DNSServer

TxtValue = str | tuple[str, ...]
Zones = Mapping[str, Mapping[str, Sequence[TxtValue]]]
UDP_LIMIT = 512
TTL = 60


def reverse(ip: str) -> str:
    """The PTR name of ``ip`` (``5.113.0.203.in-addr.arpa``)."""
    return ipaddress.ip_address(ip).reverse_pointer


def _key(name: str) -> str:
    return name.rstrip(".").lower()


@dataclass
class DnsServer:
    """The running server: ``address`` is ``127.0.0.1:PORT`` for ``NEWSLETTER_DNS_RESOLVER``.

    ``zones`` may be replaced or changed by the test while the server runs (:meth:`load`)."""

    port: int
    zones: dict[str, dict[str, list[TxtValue]]] = field(default_factory=dict)
    servfail: set[str] = field(default_factory=set)
    queries: list[tuple[str, str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def load(self, zones: Zones) -> None:
        """Add (or replace, name by name) the records of ``zones``."""
        with self.lock:
            for name, records in zones.items():
                self.zones[_key(name)] = {t.upper(): list(v) for t, v in records.items()}

    def clear(self) -> None:
        with self.lock:
            self.zones.clear()
            self.servfail.clear()
            self.queries.clear()

    # dnslib's resolver interface -------------------------------------------------------------

    def resolve(self, request: DNSRecord, handler: DNSHandler) -> DNSRecord:
        reply = request.reply()
        qname = _key(str(request.q.qname))
        qtype = QTYPE[request.q.qtype]
        with self.lock:
            self.queries.append((handler.protocol, qname, qtype))
            if qname in self.servfail:
                reply.header.rcode = RCODE.SERVFAIL
                return reply
            if qname not in self.zones:
                reply.header.rcode = RCODE.NXDOMAIN
                return reply
            name, seen = qname, set[str]()
            while "CNAME" in self.zones.get(name, {}) and qtype != "CNAME" and name not in seen:
                seen.add(name)
                target = str(self.zones[name]["CNAME"][0])
                reply.add_answer(RR(name + ".", QTYPE.CNAME, rdata=CNAME(target + "."), ttl=TTL))
                name = _key(target)
            for value in self.zones.get(name, {}).get(qtype, []):
                reply.add_answer(
                    RR(name + ".", getattr(QTYPE, qtype), rdata=_rdata(qtype, value), ttl=TTL)
                )
        return reply


def _rdata(qtype: str, value: TxtValue) -> Any:
    if qtype == "TXT":
        if isinstance(value, tuple):
            return TXT(list(value))
        raw = value.encode()
        return TXT([raw[i : i + 255] for i in range(0, len(raw), 255)] or [b""])
    assert isinstance(value, str)
    if qtype == "A":
        return A(value)
    if qtype == "AAAA":
        return AAAA(value)
    if qtype == "MX":
        preference, _, exchange = value.partition(" ")
        return MX(exchange.rstrip(".") + ".", int(preference))
    if qtype == "PTR":
        return PTR(value.rstrip(".") + ".")
    if qtype == "CNAME":
        return CNAME(value.rstrip(".") + ".")
    raise ValueError(f"the test DNS server does not serve {qtype} records")


class _Handler(DNSHandler):  # type: ignore[misc]  # dnslib has no types
    """Answers over 512 bytes go out over UDP as the question alone with TC set (as real
    servers do; dnslib's own truncation drops the question, which clients refuse), so the
    client retries over TCP."""

    def get_reply(self, data: bytes) -> bytes:
        request = DNSRecord.parse(data)
        reply = self.server.resolver.resolve(request, self)
        packed = bytes(reply.pack())
        if self.protocol == "udp" and len(packed) > UDP_LIMIT:
            truncated = request.reply()
            truncated.header.tc = 1
            packed = bytes(truncated.pack())
        return packed


class _Quiet(DNSLogger):  # type: ignore[misc]  # dnslib has no types
    def __init__(self) -> None:
        super().__init__(log="-request,-reply,-truncated,-error")


@contextmanager
def running(zones: Zones | None = None) -> Iterator[DnsServer]:
    """A server with ``zones``, UDP and TCP on the same free port, in threads; stopped and its
    sockets closed on exit."""
    for _ in range(20):
        udp = DNSServer(None, address="127.0.0.1", port=0, handler=_Handler, logger=_Quiet())
        port = int(udp.server.server_address[1])
        try:
            tcp = DNSServer(
                None, address="127.0.0.1", port=port, tcp=True, handler=_Handler, logger=_Quiet()
            )
        except OSError:  # the TCP port of that number is taken: try another number
            udp.server.server_close()
            continue
        break
    else:
        raise RuntimeError("no free port for both UDP and TCP")
    server = DnsServer(port)
    server.load(zones or {})
    for each in (udp, tcp):
        each.server.resolver = server
        # A short poll interval: stopping waits for it (dnslib's start_thread() uses 0.5s).
        loop = each.server.serve_forever
        threading.Thread(target=loop, kwargs={"poll_interval": 0.02}, daemon=True).start()
    try:
        yield server
    finally:
        for each in (udp, tcp):
            each.stop()
            each.server.server_close()


def ask(server: DnsServer, name: str, qtype: str, *, tcp: bool = False) -> DNSRecord:
    """One raw query to the server (for the server's own tests)."""
    question = DNSRecord.question(name, qtype)
    answer = question.send("127.0.0.1", server.port, tcp=tcp, timeout=2)
    return DNSRecord.parse(answer)
