"""A small SPF evaluator (RFC 7208) for ``newsletter doctor``: does a domain's record allow an IP?

Pure: DNS comes through a :class:`Lookup` the caller supplies, so the evaluator has no idea
whether the answers come from a resolver, a cache or a test. It does what a receiver does with
the mechanisms a newsletter's record uses in practice: ``ip4``/``ip6`` with CIDR, ``a`` and
``mx`` with dual CIDR, ``include``, ``redirect=``, ``ptr``, ``exists`` and ``all`` with the
qualifiers ``+ - ~ ?``; at most 10 DNS-querying terms and 2 void lookups (RFC 7208 4.6.4),
so a loop of includes ends as a permerror instead of hanging.

Macros (``%{i}`` and friends, RFC 7208 7) are not expanded: a term whose domain holds one is
listed in :attr:`SpfResult.unverifiable` and treated as not matching, so the caller can say
"could not verify" instead of claiming a fail the receiver might not see. ``exp=`` is ignored:
it only words the rejection.

Besides evaluating for one IP, :func:`survey` walks the whole tree once, IP-independently: how
many lookups the record needs in the worst case and which domains it includes. A record that
needs more than 10 lookups fails for every IP whose match comes late, whichever IP that is,
and an email API's include (``include:sendgrid.net``) is checked there, not by an IP.

A DNS query that gets no usable answer (timeout, SERVFAIL) raises :class:`LookupFailed` from
the lookup, and it is let through: the caller reports the resolver once, not a temperror per
IP and term.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Terms that cost a DNS query; RFC 7208 4.6.4 allows 10 per evaluation.
LOOKUP_TERMS = frozenset({"include", "a", "mx", "ptr", "exists", "redirect"})
MAX_LOOKUPS = 10
#: Queries that found nothing (NXDOMAIN or no record): RFC 7208 4.6.4 suggests at most 2.
MAX_VOID_LOOKUPS = 2
#: Names looked at per ``mx`` or ``ptr`` term (RFC 7208 4.6.4).
MAX_NAMES = 10
RESULTS = {"+": "pass", "-": "fail", "~": "softfail", "?": "neutral"}
MECHANISMS = frozenset({"all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists"})

_MODIFIER = re.compile(r"([A-Za-z][A-Za-z0-9_.-]*)=(.*)")
_A_OR_MX = re.compile(r"(a|mx)(?::([^/]+))?(?:/(\d{1,2}))?(?://(\d{1,3}))?", re.IGNORECASE)


class LookupFailed(Exception):
    """A DNS query without a usable answer: not "no such record". ``query`` says what was asked
    (``TXT example.com``); ``down`` is True when the resolver itself did not answer (timeout,
    unreachable), False when it answered with an error such as SERVFAIL."""

    def __init__(self, query: str, reason: str, *, down: bool) -> None:
        super().__init__(f"{query}: {reason}")
        self.query, self.reason, self.down = query, reason, down


class Lookup(Protocol):
    """The DNS the evaluator needs. Names are lower case without the final dot; an empty
    list means NXDOMAIN or no record of that type; anything else raises :class:`LookupFailed`."""

    def txt(self, name: str) -> list[str]:
        """Each TXT record's strings joined (RFC 7208 3.3)."""
        ...

    def addresses(self, name: str, version: int) -> list[IPAddress]:
        """The A (``version`` 4) or AAAA (6) records of ``name``."""
        ...

    def mx(self, name: str) -> list[tuple[int, str]]:
        """(preference, exchange) pairs; a null MX (RFC 7505) is ``(0, "")``."""
        ...

    def ptr(self, ip: IPAddress) -> list[str]:
        """The names the reverse zone gives for ``ip``."""
        ...


class SpfSyntaxError(ValueError):
    """A record receivers can't parse (a permerror); the message names the term."""


@dataclass(frozen=True, slots=True)
class Term:
    """One directive: ``qualifier`` + ``mechanism``, or a modifier (``redirect``, ``exp``)."""

    text: str
    qualifier: str
    mechanism: str
    domain: str | None = None
    network: IPNetwork | None = None
    cidr4: int = 32
    cidr6: int = 128

    @property
    def has_macro(self) -> bool:
        return self.domain is not None and "%" in self.domain


def is_spf(txt: str) -> bool:
    """True for a ``v=spf1`` record (RFC 7208 4.5: exactly that version, then a space or end)."""
    lowered = txt.strip().lower()
    return lowered == "v=spf1" or lowered.startswith("v=spf1 ")


def parse(record: str) -> tuple[list[Term], Term | None]:
    """The record's mechanisms in order, and its ``redirect=`` modifier if any.

    Raises :class:`SpfSyntaxError` for an unknown mechanism, a bad address or CIDR, or a
    repeated ``redirect=``/``exp=`` (RFC 7208 6: each at most once)."""
    terms: list[Term] = []
    redirect: Term | None = None
    seen: set[str] = set()
    for word in record.split()[1:]:
        modifier = _MODIFIER.fullmatch(word)
        if modifier:
            name, value = modifier.group(1).lower(), modifier.group(2)
            if name in ("redirect", "exp"):
                if name in seen:
                    raise SpfSyntaxError(f"{name}= appears twice")
                seen.add(name)
                if not value:
                    raise SpfSyntaxError(f"{word!r} names no domain")
            if name == "redirect":
                redirect = Term(word, "+", "redirect", _domain(value))
            continue  # exp= and unknown modifiers change nothing here (RFC 7208 6)
        terms.append(_directive(word))
    return terms, redirect


def _directive(word: str) -> Term:
    qualifier = word[0] if word[0] in RESULTS else "+"
    body = word[1:] if word[0] in RESULTS else word
    name, _, value = body.partition(":")
    lowered = name.lower()
    if lowered == "all" and body.lower() == "all":
        return Term(word, qualifier, "all")
    if lowered in ("include", "exists"):
        if not value:
            raise SpfSyntaxError(f"{word!r} names no domain")
        return Term(word, qualifier, lowered, _domain(value))
    if lowered in ("ip4", "ip6"):
        try:
            network = ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise SpfSyntaxError(f"{word!r} is not a valid {lowered} address or range") from None
        if network.version != int(lowered[2]):
            raise SpfSyntaxError(f"{word!r} is not an IPv{lowered[2]} address or range")
        return Term(word, qualifier, lowered, network=network)
    if lowered == "ptr":
        return Term(word, qualifier, "ptr", _domain(value) if value else None)
    a_or_mx = _A_OR_MX.fullmatch(body)
    if a_or_mx:
        cidr4 = int(a_or_mx.group(3) or 32)
        cidr6 = int(a_or_mx.group(4) or 128)
        if cidr4 > 32 or cidr6 > 128:
            raise SpfSyntaxError(f"{word!r} has a prefix length out of range")
        domain = _domain(a_or_mx.group(2)) if a_or_mx.group(2) else None
        return Term(word, qualifier, a_or_mx.group(1).lower(), domain, None, cidr4, cidr6)
    if lowered in MECHANISMS:
        raise SpfSyntaxError(f"{word!r} is malformed")
    raise SpfSyntaxError(f"{word!r} is not an SPF mechanism")


def _domain(value: str) -> str:
    domain = value.strip().rstrip(".").lower()
    if not domain or any(c.isspace() for c in domain):
        raise SpfSyntaxError(f"{value!r} is not a domain")
    return domain


# --- evaluating for one IP --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SpfResult:
    """What a receiver would conclude for ``ip`` at ``domain``.

    ``result`` is one of pass, fail, softfail, neutral, none, permerror. ``matched`` is the
    path to the deciding term (``["include:_spf.example.net", "ip4:203.0.113.0/24"]``; empty
    when nothing matched and the default neutral applies). ``unverifiable`` lists the terms
    skipped because they use macros: when it is not empty, a result other than pass may not be
    the receiver's."""

    ip: IPAddress
    domain: str
    result: str
    record: str | None = None
    matched: tuple[str, ...] = ()
    reason: str = ""
    lookups: int = 0
    unverifiable: tuple[str, ...] = ()


class _PermError(Exception):
    pass


def check_host(ip: IPAddress, domain: str, lookup: Lookup) -> SpfResult:
    """RFC 7208's check_host() for the envelope ``domain`` and the connecting ``ip``."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped  # RFC 7208 5: an IPv4-mapped address is evaluated as IPv4
    domain = domain.rstrip(".").lower()
    evaluation = _Evaluation(ip, lookup)
    try:
        result, path = evaluation.check(domain, ())
    except _PermError as exc:
        return SpfResult(
            ip,
            domain,
            "permerror",
            evaluation.top_record,
            reason=str(exc),
            lookups=evaluation.lookups,
            unverifiable=tuple(evaluation.unverifiable),
        )
    return SpfResult(
        ip,
        domain,
        result,
        evaluation.top_record,
        tuple(path),
        lookups=evaluation.lookups,
        unverifiable=tuple(evaluation.unverifiable),
    )


def spf_records(domain: str, lookup: Lookup) -> list[str]:
    """Every ``v=spf1`` TXT record at ``domain`` (more than one is a permerror)."""
    return [txt for txt in lookup.txt(domain) if is_spf(txt)]


@dataclass
class _Evaluation:
    ip: IPAddress
    lookup: Lookup
    lookups: int = 0
    voids: int = 0
    top_record: str | None = None
    unverifiable: list[str] = field(default_factory=list)

    def check(self, domain: str, stack: tuple[str, ...]) -> tuple[str, list[str]]:
        records = spf_records(domain, self.lookup)
        if not stack:
            self.top_record = records[0] if len(records) == 1 else None
        if not records:
            return "none", []
        if len(records) > 1:
            raise _PermError(f"{len(records)} v=spf1 records at {domain}")
        try:
            terms, redirect = parse(records[0])
        except SpfSyntaxError as exc:
            raise _PermError(f"{domain}: {exc}") from None
        inside = (*stack, domain)
        for term in terms:
            if term.mechanism in LOOKUP_TERMS:
                self._count(term)
            path = self._matches(term, domain, inside)
            if path is not None:
                return RESULTS[term.qualifier], [term.text, *path]
        if redirect is not None and not any(t.mechanism == "all" for t in terms):
            self._count(redirect)
            assert redirect.domain is not None
            if redirect.has_macro:
                self.unverifiable.append(redirect.text)
                return "neutral", []
            if redirect.domain in inside:
                raise _PermError(f"{redirect.text} loops back to {redirect.domain}")
            result, path = self.check(redirect.domain, inside)
            if result == "none":
                raise _PermError(f"{redirect.text}: no SPF record at {redirect.domain}")
            return result, [redirect.text, *path]
        return "neutral", []

    def _count(self, term: Term) -> None:
        self.lookups += 1
        if self.lookups > MAX_LOOKUPS:
            raise _PermError(f"more than {MAX_LOOKUPS} DNS lookups (reached at {term.text})")

    def _void(self, found: Sequence[object], term: Term) -> None:
        if not found:
            self.voids += 1
            if self.voids > MAX_VOID_LOOKUPS:
                raise _PermError(
                    f"more than {MAX_VOID_LOOKUPS} lookups found nothing (at {term.text})"
                )

    def _matches(self, term: Term, domain: str, inside: tuple[str, ...]) -> list[str] | None:
        """None when ``term`` does not match; else the path below it (empty for a leaf)."""
        if term.has_macro:
            self.unverifiable.append(term.text)
            return None
        target = term.domain or domain
        ip = self.ip
        if term.mechanism == "all":
            return []
        if term.mechanism in ("ip4", "ip6"):
            return [] if term.network is not None and ip in term.network else None
        if term.mechanism == "include":
            if target in inside:
                raise _PermError(f"{term.text} loops back to {target}")
            result, path = self.check(target, inside)
            if result == "none":
                raise _PermError(f"{term.text}: no SPF record at {target}")
            return path if result == "pass" else None
        if term.mechanism == "a":
            found = self.lookup.addresses(target, ip.version)
            self._void(found, term)
            return [] if self._within(found, term) else None
        if term.mechanism == "mx":
            exchanges = [name for _, name in self.lookup.mx(target)]
            self._void(exchanges, term)
            if len(exchanges) > MAX_NAMES:
                raise _PermError(f"{term.text}: more than {MAX_NAMES} MX names")
            for exchange in filter(None, exchanges):
                if self._within(self.lookup.addresses(exchange, ip.version), term):
                    return []
            return None
        if term.mechanism == "exists":
            found = self.lookup.addresses(target, 4)
            self._void(found, term)
            return [] if found else None
        if term.mechanism == "ptr":
            names = self.lookup.ptr(ip)
            self._void(names, term)
            for name in names[:MAX_NAMES]:
                if (name == target or name.endswith("." + target)) and ip in (
                    self.lookup.addresses(name, ip.version)
                ):
                    return []
            return None
        raise _PermError(f"{term.text}: unsupported")  # parse() lets nothing else through

    def _within(self, addresses: list[IPAddress], term: Term) -> bool:
        prefix = term.cidr4 if self.ip.version == 4 else term.cidr6
        return any(
            self.ip in ipaddress.ip_network(f"{address}/{prefix}", strict=False)
            for address in addresses
            if address.version == self.ip.version
        )


# --- the whole tree, for every IP ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SpfSurvey:
    """The record at ``domain`` and everything it reaches, whatever the IP.

    ``records`` are the ``v=spf1`` records found at the domain itself (one is right).
    ``lookups`` counts every DNS-querying term of the tree, following includes and the
    redirect: the most a receiver may need (walking stops once past the limit).
    ``includes`` are the include/redirect targets reached. ``error`` is a permerror found
    on the way (a syntax error, an include with no record, a loop), else None."""

    domain: str
    records: tuple[str, ...]
    lookups: int
    includes: frozenset[str]
    error: str | None


def survey(domain: str, lookup: Lookup) -> SpfSurvey:
    """Walk the record at ``domain`` (see :class:`SpfSurvey`)."""
    domain = domain.rstrip(".").lower()
    records = spf_records(domain, lookup)
    walk = _Walk(lookup)
    if len(records) == 1:
        try:
            walk.terms(domain, records[0], ())
        except _PermError as exc:
            walk.error = str(exc)
    elif len(records) > 1:
        walk.error = f"{len(records)} v=spf1 records at {domain}"
    return SpfSurvey(domain, tuple(records), walk.lookups, frozenset(walk.includes), walk.error)


@dataclass
class _Walk:
    lookup: Lookup
    lookups: int = 0
    includes: set[str] = field(default_factory=set)
    error: str | None = None

    def terms(self, domain: str, record: str, stack: tuple[str, ...]) -> None:
        try:
            terms, redirect = parse(record)
        except SpfSyntaxError as exc:
            raise _PermError(f"{domain}: {exc}") from None
        followed = [t for t in terms if t.mechanism == "include"]
        if redirect is not None and not any(t.mechanism == "all" for t in terms):
            followed.append(redirect)
        self.lookups += sum(1 for t in terms if t.mechanism in LOOKUP_TERMS)
        if redirect is not None and redirect in followed:
            self.lookups += 1
        inside = (*stack, domain)
        for term in followed:
            if self.lookups > MAX_LOOKUPS:
                return  # already too many: the rest can't change the verdict
            if term.domain is None or term.has_macro:
                continue
            if term.domain in inside:
                raise _PermError(f"{term.text} loops back to {term.domain}")
            self.includes.add(term.domain)
            found = spf_records(term.domain, self.lookup)
            if len(found) != 1:
                many = f"{len(found)} v=spf1 records" if found else "no SPF record"
                raise _PermError(f"{term.text}: {many} at {term.domain}")
            self.terms(term.domain, found[0], inside)
