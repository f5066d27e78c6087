"""What the world reads in DNS about this sender: SPF, DKIM, DMARC, the bounce MX, reverse DNS.

Receivers decide on these records, not on our settings, so the doctor reads them as a receiver
would, through ``NEWSLETTER_DNS_RESOLVER`` (``host[:port]``; empty: the system's resolver),
each query bounded by the doctor's timeout:

* ``spf``: exactly one ``v=spf1`` record at the envelope (MAIL FROM) domain, the domain of
  ``NEWSLETTER_BOUNCE_ADDRESS`` when set, else the From domain; at most 10 DNS lookups in the
  whole tree; and, evaluated (:mod:`newsletter.doctor.spf`), a pass for every IP mail leaves
  from. Those are ``NEWSLETTER_SENDING_IPS``, else the addresses of the ``smtp://`` host (an
  approximation: a smarthost may send from other IPs); a relay on this machine or a private
  network hides the public IP, which is then a warning. An email API sends from its own IPs:
  its include (``include:sendgrid.net``...) must be in the record, except for SES and Resend,
  which use a MAIL FROM subdomain of their own (a warning).
* ``dkim record``: the TXT at ``<selector>._domainkey.<domain>`` publishes each configured
  key (the ``p=`` values compared, the ``k=`` matching).
* ``dmarc``: a record at ``_dmarc.<From domain>``, else at the organizational domain's; and
  ``dmarc alignment``: the envelope domain and the DKIM ``d=`` each share the From domain's
  organizational domain (equal it under ``aspf=s``/``adkim=s``).
* ``bounce mx``: the bounce domain can receive mail (an MX, or an address as implicit MX).
* ``reverse dns``: each sending IP has a PTR whose name resolves back to it.

Nothing is checked for the reserved example domains, nor when the settings don't say that
mail leaves this machine (file://, console://, memory://, or smtp:// to a loopback relay, which
may be a test catcher) unless ``NEWSLETTER_SENDING_IPS`` or ``NEWSLETTER_DNS_RESOLVER`` asks
for it: one ``dns`` line says so. A resolver that does not answer gives one ``dns`` warning and
stops the DNS checks (nothing is known, so nothing is claimed); a SERVFAIL fails the check that
asked, since receivers get the same error.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver
import dns.reversename

from newsletter.config import Settings
from newsletter.doctor import spf
from newsletter.doctor.check import RESERVED_DOMAINS, RESERVED_TLDS, Check
from newsletter.doctor.spf import IPAddress, LookupFailed
from newsletter.edition import dkim

#: The include an email API's SPF record is reached by, per backend scheme.
PROVIDER_SPF = {
    "sendgrid": "sendgrid.net",
    "mailgun": "mailgun.org",
    "postmark": "spf.mtasv.net",
    "ses": "amazonses.com",
    "resend": "amazonses.com",
}
#: Providers that send with a MAIL FROM (return path) subdomain of their own by default.
OWN_MAIL_FROM = frozenset({"ses", "resend"})
LOCAL_SCHEMES = frozenset({"file", "console", "memory"})
SMTP_SCHEMES = frozenset({"smtp", "smtps"})
#: Addresses a receiver never sees: this machine, private networks, carrier-grade NAT, links.
#: (The documentation ranges count as public, so examples and tests can use them.)
LOCAL_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "::/127",
        "fc00::/7",
        "fe80::/10",
    )
)
RESOLVER_FIX = (
    "Check NEWSLETTER_DNS_RESOLVER (host[:port]; empty: the system's resolver) and that this "
    "machine can reach it."
)
DMARC_POLICIES = frozenset({"none", "quarantine", "reject"})


def check_dns(settings: Settings, timeout: float) -> list[Check]:
    """Every DNS check in order (see the module docstring); never raises for DNS trouble."""
    skipped = _skipped(settings)
    if skipped:
        return [skipped]
    try:
        lookup = DnsLookup.from_setting(settings.dns_resolver, timeout)
    except ValueError as exc:  # a bad setting fails; no system resolver: nothing known
        return [
            Check("dns", False if settings.dns_resolver.strip() else None, str(exc), RESOLVER_FIX)
        ]
    checks: list[Check] = []
    senders = Senders()
    try:
        senders = find_senders(settings, lookup)
    except ValueError as exc:
        fix = "Set NEWSLETTER_SENDING_IPS to comma-separated public IPs, e.g. 203.0.113.5."
        checks.append(Check("spf", False, str(exc), fix))
    except LookupFailed as exc:
        checks.append(_unanswered("spf", exc, lookup))
        if exc.down:
            return checks
    envelope = envelope_domain(settings)
    steps: list[tuple[str, Callable[[], list[Check]]]] = [
        ("spf", lambda: spf_checks(envelope, senders, lookup)),
        ("dkim record", lambda: dkim_record_checks(settings, lookup)),
        ("dmarc", lambda: dmarc_checks(settings, lookup)),
        ("bounce mx", lambda: bounce_mx_checks(settings, lookup)),
        ("reverse dns", lambda: reverse_dns_checks(senders, lookup)),
    ]
    for name, step in steps:
        try:
            checks.extend(step())
        except LookupFailed as exc:
            checks.append(_unanswered(name, exc, lookup))
            if exc.down:
                break  # every further query would wait for the same silence
    return checks


def _unanswered(name: str, exc: LookupFailed, lookup: DnsLookup) -> Check:
    """One readable line: the resolver named, the query, what came back."""
    if exc.down:
        summary = f"{lookup.label} did not answer {exc.query} ({exc.reason}): DNS records "
        return Check("dns", None, summary + "not checked", RESOLVER_FIX)
    summary = f"{lookup.label} answered {exc.reason} for {exc.query}: receivers get the same "
    fix = "Check the domain's nameservers and DNSSEC (e.g. `dig +trace`), or the resolver."
    return Check(name, False, summary + "error", fix)


def _skipped(settings: Settings) -> Check | None:
    """A ``dns`` line saying why nothing is checked, or None to check.

    Skipped for a From domain receivers never see (none, or a reserved example domain), and
    when mail does not leave this machine: a file/console/memory backend.
    ``NEWSLETTER_SENDING_IPS`` or ``NEWSLETTER_DNS_RESOLVER`` set means the operator wants the
    DNS checked: then it is. A relay on this machine (a local MTA) is checked: what it sends
    carries this domain's DKIM, DMARC and bounce records whatever its IP."""
    domain = settings.sender().domain.lower()
    if not domain:
        return Check("dns", None, "skipped: NEWSLETTER_FROM has no domain")
    reserved = domain.rpartition(".")[2] in RESERVED_TLDS or any(
        domain == d or domain.endswith("." + d) for d in RESERVED_DOMAINS
    )
    if reserved:
        summary = f"skipped: {domain} is a reserved example domain, not one receivers check"
        return Check("dns", None, summary, "Set NEWSLETTER_FROM to an address at your domain.")
    if settings.sending_ips.strip() or settings.dns_resolver.strip():
        return None
    for url in settings.mail_backend.split():
        try:
            scheme = urlsplit(url).scheme.lower()
        except ValueError:
            return None  # the mail backend check reports it
        if scheme not in LOCAL_SCHEMES:
            # A relay on this machine (a local Postfix) still sends as this domain: DKIM,
            # DMARC and the bounce MX are checked; SPF and PTR need NEWSLETTER_SENDING_IPS.
            return None
    fix = "Set NEWSLETTER_SENDING_IPS to the public IPs mail leaves from to check SPF, DKIM, "
    fix += "DMARC and reverse DNS anyway."
    if settings.mail_backend.split():
        summary = "skipped: NEWSLETTER_MAIL_BACKEND keeps mail on this machine"
        return Check("dns", None, summary, fix)
    return None


def _loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --- the resolver ----------------------------------------------------------------------------


class DnsLookup:
    """Cached queries through one resolver (the :class:`spf.Lookup` protocol).

    NXDOMAIN and "no record of that type" are empty answers; a timeout, SERVFAIL or refusal
    raises :class:`LookupFailed`. After the resolver once failed to answer, every further
    query fails at once, so a dead resolver costs one timeout, not one per query."""

    def __init__(self, resolver: dns.resolver.Resolver, label: str) -> None:
        self.resolver = resolver
        self.label = label
        self._answers: dict[tuple[str, str], list[Any]] = {}
        self._down: LookupFailed | None = None

    @classmethod
    def from_setting(cls, spec: str, timeout: float) -> DnsLookup:
        """The resolver ``NEWSLETTER_DNS_RESOLVER`` names (``host``, ``host:port``,
        ``[v6]:port``), or the system's when empty. Raises ValueError naming the setting."""
        spec = spec.strip()
        if spec:
            host, port = _host_port(spec)
            resolver = dns.resolver.Resolver(configure=False)
            resolver.nameservers = [host]
            resolver.port = port
            label = f"the resolver {spec}"
        else:
            try:
                resolver = dns.resolver.Resolver()
            except dns.exception.DNSException as exc:
                raise ValueError(
                    f"no system resolver to ask ({exc}): DNS records not checked"
                ) from None
            names = ", ".join(str(n) for n in resolver.nameservers) or "none"
            label = f"the system resolver ({names})"
        resolver.timeout = resolver.lifetime = timeout
        return cls(resolver, label)

    def txt(self, name: str) -> list[str]:
        return [b"".join(r.strings).decode("utf-8", "replace") for r in self._query(name, "TXT")]

    def addresses(self, name: str, version: int) -> list[IPAddress]:
        rdtype = "A" if version == 4 else "AAAA"
        return [ipaddress.ip_address(r.address) for r in self._query(name, rdtype)]

    def mx(self, name: str) -> list[tuple[int, str]]:
        rows = self._query(name, "MX")
        return sorted(
            (
                r.preference,
                "" if r.exchange == dns.name.root else _text(r.exchange),
            )
            for r in rows
        )

    def ptr(self, ip: IPAddress) -> list[str]:
        reverse = dns.reversename.from_address(str(ip)).to_text(omit_final_dot=True)
        return [_text(r.target) for r in self._query(reverse, "PTR")]

    def _query(self, name: str, rdtype: str) -> list[Any]:
        name = name.rstrip(".").lower()
        key = (name, rdtype)
        if key in self._answers:
            return self._answers[key]
        asked = f"{rdtype} {name}"
        if self._down is not None:
            raise LookupFailed(asked, self._down.reason, down=True)
        try:
            answer = self.resolver.resolve(name + ".", rdtype, search=False)
            rows: list[Any] = list(answer)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.name.NameTooLong):
            rows = []
        except (dns.name.EmptyLabel, dns.name.LabelTooLong):
            rows = []  # not a name anyone can look up: receivers find nothing either
        except dns.resolver.LifetimeTimeout:
            self._down = LookupFailed(asked, f"no answer within {self.timeout:g}s", down=True)
            raise self._down from None
        except dns.resolver.NoNameservers as exc:
            raise self._no_nameservers(asked, exc) from None
        except (dns.exception.DNSException, OSError) as exc:
            self._down = LookupFailed(asked, f"{type(exc).__name__}: {exc}", down=True)
            raise self._down from None
        self._answers[key] = rows
        return rows

    @property
    def timeout(self) -> float:
        return float(self.resolver.lifetime)

    def _no_nameservers(self, asked: str, exc: dns.resolver.NoNameservers) -> LookupFailed:
        """SERVFAIL, REFUSED...: the resolver answered, it is not down. An I/O error (a
        refused connection): it did not answer."""
        errors = exc.kwargs.get("errors") or []
        rcodes = [e[3] for e in errors if len(e) > 3 and isinstance(e[3], str)]
        if rcodes:
            return LookupFailed(asked, rcodes[-1], down=False)
        reason = str(errors[-1][3]) if errors and len(errors[-1]) > 3 else ""
        self._down = LookupFailed(asked, reason or "no usable answer", down=True)
        return self._down


def _host_port(spec: str) -> tuple[str, int]:
    host, port = spec, "53"
    if spec.startswith("["):
        host, _, rest = spec[1:].partition("]")
        port = rest.removeprefix(":") or "53"
    elif spec.count(":") == 1:
        host, port = spec.split(":")
    problem = f"NEWSLETTER_DNS_RESOLVER: {spec!r} is not host[:port]"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(problem)
    try:
        return str(ipaddress.ip_address(host)), int(port)
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
    except (OSError, UnicodeError):
        raise ValueError(f"{problem} (can't resolve {host!r})") from None
    return str(infos[0][4][0]), int(port)


def _text(name: dns.name.Name) -> str:
    return str(name.to_text(omit_final_dot=True)).lower()


# --- where mail leaves from ------------------------------------------------------------------


@dataclass(frozen=True)
class Senders:
    """What SPF and reverse DNS are checked against: public ``ips`` mail leaves from,
    ``providers`` (email API schemes) that send for us, and ``relays`` (local SMTP hosts,
    described) whose public IP is unknown."""

    ips: tuple[IPAddress, ...] = ()
    providers: tuple[str, ...] = ()
    relays: tuple[str, ...] = ()


def find_senders(settings: Settings, lookup: spf.Lookup) -> Senders:
    """``NEWSLETTER_SENDING_IPS`` if set, else the smtp:// hosts' public addresses; plus the
    email APIs of ``NEWSLETTER_MAIL_BACKEND`` (each of a failover list). Raises ValueError for
    an entry of ``NEWSLETTER_SENDING_IPS`` that is not an IP address."""
    ips: list[IPAddress] = []
    providers: list[str] = []
    relays: list[str] = []
    for entry in (e.strip() for e in settings.sending_ips.split(",")):
        if entry:
            try:
                ips.append(ipaddress.ip_address(entry))
            except ValueError:
                raise ValueError(
                    f"NEWSLETTER_SENDING_IPS: {entry!r} is not an IP address"
                ) from None
    for url in settings.mail_backend.split():
        try:
            parts = urlsplit(url)
            scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
        except ValueError:
            continue  # the mail backend check reports an unparseable URL
        if scheme in PROVIDER_SPF:
            providers.append(scheme)
        elif scheme in SMTP_SCHEMES and host and not settings.sending_ips.strip():
            _smtp_host(host, lookup, ips, relays)
    return Senders(tuple(dict.fromkeys(ips)), tuple(dict.fromkeys(providers)), tuple(relays))


def _smtp_host(host: str, lookup: spf.Lookup, ips: list[IPAddress], relays: list[str]) -> None:
    try:
        found: list[IPAddress] = [ipaddress.ip_address(host)]
    except ValueError:
        found = [] if host == "localhost" else lookup.addresses(host, 4)
        found += [] if host == "localhost" else lookup.addresses(host, 6)
    public = [ip for ip in found if not is_local(ip)]
    ips.extend(public)
    if not found:
        relays.append(f"the smtp host {host} (no address found)")
    elif not public:
        relays.append(f"the smtp host {host}" + (f" ({found[0]})" if str(found[0]) != host else ""))


def is_local(ip: IPAddress) -> bool:
    """True for an address receivers never see (see :data:`LOCAL_NETWORKS`)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return any(ip.version == net.version and ip in net for net in LOCAL_NETWORKS)


# --- domains ---------------------------------------------------------------------------------


def envelope_domain(settings: Settings) -> str:
    """The MAIL FROM domain SPF is evaluated for: the bounce address's, else the From's."""
    if settings.bounce_address.strip():
        return settings.bounce_address.rpartition("@")[2].strip().lower()
    return settings.sender().domain.lower()


def organizational_domain(domain: str) -> str:
    """The last two labels: right for example.com and its subdomains, wrong under public
    suffixes of two labels (example.co.uk gives co.uk). Good enough for the doctor: the
    exact answer needs the Public Suffix List, a dependency kept out for one warning."""
    return ".".join(domain.rstrip(".").lower().split(".")[-2:])


def aligned(domain: str, from_domain: str, *, strict: bool) -> bool:
    """DMARC identifier alignment (RFC 7489 3.1): equal (strict), or same organization."""
    if strict:
        return domain.lower() == from_domain.lower()
    return organizational_domain(domain) == organizational_domain(from_domain)


def tags(record: str) -> dict[str, str]:
    """``k=v; k=v`` (DKIM, DMARC) as a dict with lower-case keys; values stripped."""
    found: dict[str, str] = {}
    for part in record.split(";"):
        key, sep, value = part.partition("=")
        if sep and key.strip():
            found.setdefault(key.strip().lower(), value.strip())
    return found


# --- SPF -------------------------------------------------------------------------------------


def spf_checks(domain: str, senders: Senders, lookup: spf.Lookup) -> list[Check]:
    """The record at the envelope ``domain``, then one check per IP, provider and relay."""
    found = spf.survey(domain, lookup)
    suggestion = _suggest_spf(senders)
    if not found.records:
        fix = f'Publish a TXT record at {domain}: "{suggestion}".'
        return [Check("spf", False, f"no v=spf1 TXT record at {domain}", fix)]
    if len(found.records) > 1:
        summary = f"{len(found.records)} v=spf1 TXT records at {domain} (RFC 7208: permerror, "
        fix = f'Merge them into one TXT record at {domain}, e.g. "{suggestion}".'
        return [Check("spf", False, summary + "receivers ignore them all)", fix)]
    record = found.records[0]
    if found.error:
        fix = f"Fix the SPF record at {domain}: {record!r}."
        return [Check("spf", False, f"{domain}: {found.error} (RFC 7208 permerror)", fix)]
    if found.lookups > spf.MAX_LOOKUPS:
        summary = f"the SPF record at {domain} needs {found.lookups} DNS lookups, more than "
        summary += f"{spf.MAX_LOOKUPS} (RFC 7208 permerror)"
        fix = "Replace include:, a and mx terms by ip4:/ip6: ranges, or drop includes of "
        return [Check("spf", False, summary, fix + "services no longer used.")]
    checks = [_spf_for_ip(ip, domain, lookup) for ip in senders.ips]
    checks += [_spf_for_provider(p, domain, found) for p in senders.providers]
    for relay in senders.relays:
        summary = f"mail goes through {relay}, a local relay: its public IP is unknown, so "
        summary += f"{domain}'s SPF record was not evaluated"
        fix = "Set NEWSLETTER_SENDING_IPS to the public IPs the relay sends from."
        checks.append(Check("spf", None, summary, fix))
    if not checks:
        summary = f"{domain} publishes {record!r}; no sending IP or email API to test it with"
        fix = "Set NEWSLETTER_SENDING_IPS to the public IPs mail leaves from."
        checks.append(Check("spf", None, summary, fix))
    return checks


def _spf_for_ip(ip: IPAddress, domain: str, lookup: spf.Lookup) -> Check:
    result = spf.check_host(ip, domain, lookup)
    if result.result == "pass":
        return Check("spf", True, f"{domain} allows {ip} (pass via {' > '.join(result.matched)})")
    term = f"ip{ip.version}:{ip}"
    fix = f"Add {term} to the SPF record at {domain}, before its all term."
    if result.result == "permerror":
        return Check("spf", False, f"{domain}: permerror for {ip}: {result.reason}", fix)
    matched = " > ".join(result.matched) or "no term, so the default neutral"
    summary = f"{domain} gives {result.result} for {ip} (matched {matched}): {result.record!r}"
    if result.unverifiable:
        skipped = ", ".join(result.unverifiable)
        summary += f"; {skipped} use macros the doctor does not expand"
        return Check("spf", None, summary, "Check with a test message: " + fix)
    return Check("spf", False, summary, fix)


def _spf_for_provider(provider: str, domain: str, found: spf.SpfSurvey) -> Check:
    include = PROVIDER_SPF[provider]
    if include in found.includes:
        return Check("spf", True, f"{domain} includes {include}, which {provider} sends from")
    if provider in OWN_MAIL_FROM:
        summary = f"{domain} does not include {include}: {provider} sends with a MAIL FROM "
        summary += "subdomain of its own and answers for its SPF"
        fix = f"Set up a custom MAIL FROM subdomain of {organizational_domain(domain)} in "
        fix += f"{provider}, so SPF aligns with the From domain for DMARC."
        return Check("spf", None, summary, fix)
    summary = f"{domain} does not include {include}, which {provider} sends from"
    return Check("spf", False, summary, f"Add include:{include} to the SPF record at {domain}.")


def _suggest_spf(senders: Senders) -> str:
    terms = [f"ip{ip.version}:{ip}" for ip in senders.ips]
    terms += [f"include:{PROVIDER_SPF[p]}" for p in senders.providers]
    return " ".join(["v=spf1", *(terms or ["ip4:<your public sending IP>"]), "~all"])


# --- DKIM ------------------------------------------------------------------------------------


def dkim_record_checks(settings: Settings, lookup: spf.Lookup) -> list[Check]:
    """Each configured key published at ``<selector>._domainkey.<domain>``; no keys, or keys
    that don't load, give nothing here (the ``dkim`` check reports those)."""
    if not settings.dkim_keys.strip():
        return []
    domain = (settings.dkim_domain or settings.sender().domain).lower()
    try:
        signer = dkim.signer_from(settings.dkim_keys, domain=domain)
    except dkim.DkimError:
        return []
    assert signer is not None
    return [_dkim_key(key, domain, lookup) for key in signer.keys]


def _dkim_key(key: dkim.DkimKey, domain: str, lookup: spf.Lookup) -> Check:
    name = f"{key.selector}._domainkey.{domain}".lower()
    expected = dkim.txt_record(key)
    want = tags(expected)
    publish = f"Publish a TXT record at {name}: {expected}"
    published = [t for t in (tags(txt) for txt in lookup.txt(name)) if "p" in t]
    if not published:
        return Check("dkim record", False, f"no DKIM key at {name}", publish)
    if len(published) > 1:
        summary = f"{len(published)} DKIM key records at {name}: receivers may use any"
        return Check("dkim record", False, summary, f"Keep only one. {publish}")
    found = published[0]
    p = "".join(found["p"].split())
    if not p:
        return Check("dkim record", False, f"the key at {name} is revoked (empty p=)", publish)
    kind = found.get("k", "rsa").lower()
    if kind != want["k"]:
        summary = f"{name} publishes a k={kind} key, the configured one is {key.algorithm}"
        return Check("dkim record", False, summary, publish)
    if p != want["p"]:
        summary = f"the published key at {name} is not the configured one ({key.selector})"
        fix = publish + " (or set NEWSLETTER_DKIM_KEYS to the private key that matches)."
        return Check("dkim record", False, summary, fix)
    return Check("dkim record", True, f"{name} publishes the configured {key.algorithm} key")


# --- DMARC -----------------------------------------------------------------------------------


def dmarc_checks(settings: Settings, lookup: spf.Lookup) -> list[Check]:
    """The policy that applies to the From domain, then identifier alignment."""
    sender = settings.sender().domain.lower()
    org = organizational_domain(sender)
    where, records = f"_dmarc.{sender}", _dmarc_records(f"_dmarc.{sender}", lookup)
    if not records and org != sender:
        where, records = f"_dmarc.{org}", _dmarc_records(f"_dmarc.{org}", lookup)
    checks = [_dmarc_policy(sender, org, where, records)]
    found = tags(records[0]) if len(records) == 1 else {}
    return checks + _alignment(settings, sender, found)


def _dmarc_records(name: str, lookup: spf.Lookup) -> list[str]:
    return [t for t in lookup.txt(name) if tags(t).get("v", "").upper() == "DMARC1"]


def _dmarc_policy(sender: str, org: str, where: str, records: list[str]) -> Check:
    if not records:
        places = f"_dmarc.{sender}" + (f" or _dmarc.{org}" if org != sender else "")
        fix = f'Publish a TXT record at _dmarc.{org}: "v=DMARC1; p=none; rua=mailto:'
        fix += f'dmarc-reports@{org}", then tighten p= once the reports look right.'
        summary = f"no DMARC record at {places} (Gmail and Yahoo require one from bulk "
        return Check("dmarc", False, summary + "senders since 2024)", fix)
    if len(records) > 1:
        summary = f"{len(records)} DMARC records at {where}: receivers apply none (RFC 7489)"
        return Check("dmarc", False, summary, f"Keep one DMARC TXT record at {where}.")
    found = tags(records[0])
    policy = found.get("p", "").lower()
    if policy not in DMARC_POLICIES:
        summary = f"{where}: {records[0]!r} has no valid p= (none, quarantine or reject)"
        return Check("dmarc", False, summary, f"Fix the record at {where}: start with p=none.")
    applies = "p"
    if where != f"_dmarc.{sender}" and found.get("sp", "").lower() in DMARC_POLICIES:
        policy, applies = found["sp"].lower(), "sp"  # a subdomain's policy at the org domain
    if policy == "none":
        summary = f"{where}: {applies}=none, monitoring only (receivers report failures and "
        return Check("dmarc", True, summary + "still deliver them)")
    return Check("dmarc", True, f"{where}: {applies}={policy}")


def _alignment(settings: Settings, sender: str, found: dict[str, str]) -> list[Check]:
    """The envelope domain and the DKIM d= against the From domain (relaxed unless the record
    says ``aspf=s``/``adkim=s``); checked even without a record, with the default relaxed."""
    identifiers = [("SPF", "aspf", envelope_domain(settings))]
    if settings.dkim_keys.strip():
        identifiers.append(("DKIM", "adkim", (settings.dkim_domain or sender).lower()))
    checks: list[Check] = []
    for kind, tag, domain in identifiers:
        strict = found.get(tag, "r").lower() == "s"
        mode = "strict" if strict else "relaxed"
        if aligned(domain, sender, strict=strict):
            continue
        what = "envelope (SPF) domain" if kind == "SPF" else "DKIM d= domain"
        needs = "the same domain" if strict else f"a domain under {organizational_domain(sender)}"
        summary = f"the {what} {domain} does not align with the From domain {sender} "
        summary += f"({mode} alignment needs {needs})"
        setting = "NEWSLETTER_BOUNCE_ADDRESS" if kind == "SPF" else "NEWSLETTER_DKIM_DOMAIN"
        where = sender if strict else f"{organizational_domain(sender)} or a subdomain of it"
        fix = f"Set {setting} to {'an address at ' if kind == 'SPF' else ''}{where}."
        checks.append(Check("dmarc alignment", False, summary, fix))
    if checks:
        return checks
    named = " and ".join(f"{kind} {domain}" for kind, _, domain in identifiers)
    verb = "align" if len(identifiers) > 1 else "aligns"
    return [Check("dmarc alignment", True, f"{named} {verb} with the From domain {sender}")]


# --- bounces, reverse DNS --------------------------------------------------------------------


def bounce_mx_checks(settings: Settings, lookup: spf.Lookup) -> list[Check]:
    """The bounce domain can receive mail: an MX, or an address (RFC 5321 5.1 implicit MX)."""
    if not settings.bounce_address.strip():
        return []
    domain = envelope_domain(settings)
    exchanges = [name for _, name in lookup.mx(domain)]
    if exchanges and not any(exchanges):
        summary = f"{domain} publishes a null MX (RFC 7505): it accepts no mail, so bounces "
        fix = f"Replace it by an MX for the server that receives {settings.bounce_address}."
        return [Check("bounce mx", False, summary + "can't arrive", fix)]
    if exchanges:
        hosts = ", ".join(e for e in exchanges if e)
        return [Check("bounce mx", True, f"{domain} (bounces) receives mail at {hosts}")]
    addresses = lookup.addresses(domain, 4) + lookup.addresses(domain, 6)
    if addresses:
        summary = f"{domain} (bounces) has no MX; mail goes to its address {addresses[0]}"
        return [Check("bounce mx", True, summary)]
    summary = f"{domain} has no MX and no address: bounces to {settings.bounce_address} can't "
    fix = f"Publish an MX record for {domain} naming the server that receives the bounces."
    return [Check("bounce mx", None, summary + "arrive", fix)]


def reverse_dns_checks(senders: Senders, lookup: spf.Lookup) -> list[Check]:
    """Each sending IP has a PTR whose name resolves back to it (forward-confirmed)."""
    return [_reverse(ip, lookup) for ip in senders.ips]


def _reverse(ip: IPAddress, lookup: spf.Lookup) -> Check:
    fix = f"Ask whoever runs {ip} (host or ISP) to set its PTR to a name whose A/AAAA record "
    fix += "is that IP, e.g. the server's HELO name: Gmail refuses mail without one."
    names = lookup.ptr(ip)
    if not names:
        return Check("reverse dns", False, f"{ip} has no PTR record", fix)
    seen: list[IPAddress] = []
    for name in names:
        found = lookup.addresses(name, ip.version)
        if ip in found:
            return Check("reverse dns", True, f"{ip} is {name}, which resolves back to it")
        seen += found
    back = ", ".join(str(a) for a in _unique(seen)) or "no address"
    summary = f"{ip} is {names[0]}, which does not resolve back to it ({back})"
    return Check("reverse dns", False, summary, fix)


def _unique(items: Sequence[IPAddress]) -> list[IPAddress]:
    return list(dict.fromkeys(items))
