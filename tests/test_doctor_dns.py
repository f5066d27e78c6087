"""`newsletter doctor`'s DNS checks (SPF, DKIM, DMARC, bounce MX, reverse DNS) against a real
authoritative DNS server on 127.0.0.1 (tests/dns_server.py), with right and wrong records, and
a resolver port nobody listens on."""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from newsletter.config import Settings
from newsletter.doctor import Check, render, spf
from newsletter.doctor.dns_checks import DnsLookup, check_dns, organizational_domain
from newsletter.edition import dkim
from tests.conftest import SECRET, SMTPSink
from tests.dns_server import DnsServer, ask, reverse, running

FROM = "news.verdicts.dev"
IP = "203.0.113.5"
TIMEOUT = 2.0
DMARC = "v=DMARC1; p=quarantine; rua=mailto:dmarc@verdicts.dev"
#: A sender whose DNS is right: SPF allows IP, DMARC at the organizational domain, the PTR of
#: IP names a host whose A record is IP, and the From domain receives mail.
GOOD: dict[str, Any] = {
    FROM: {"TXT": ["v=spf1 ip4:203.0.113.0/24 -all"], "MX": ["10 mx.verdicts.dev"]},
    "_dmarc.verdicts.dev": {"TXT": [DMARC]},
    "mx.verdicts.dev": {"A": ["203.0.113.25"]},
    "mail.verdicts.dev": {"A": [IP]},
    reverse(IP): {"PTR": ["mail.verdicts.dev"]},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def dns() -> Iterator[DnsServer]:
    with running(GOOD) as server:
        yield server


@pytest.fixture
def sender(settings: Settings, dns: DnsServer) -> Settings:
    """Mail from news@news.verdicts.dev leaving from IP, DNS asked of the test server."""
    return settings.model_copy(
        update={
            "from_address": f"Verdicts <news@{FROM}>",
            "mail_backend": "smtp://127.0.0.1:2525",
            "sending_ips": IP,
            "dns_resolver": dns.address,
        }
    )


def run_dns(settings: Settings, **changes: Any) -> list[Check]:
    return check_dns(settings.model_copy(update=changes), TIMEOUT)


def named(checks: list[Check], name: str) -> list[Check]:
    found = [c for c in checks if c.name == name]
    assert found, [c.name for c in checks]
    return found


def one(checks: list[Check], name: str) -> Check:
    found = named(checks, name)
    assert len(found) == 1, found
    return found[0]


def keys(tmp_path: Path, *kinds: tuple[str, str]) -> tuple[str, dict[str, str]]:
    """Keys on disk as NEWSLETTER_DKIM_KEYS, and the record each selector should publish."""
    entries, records = [], {}
    for selector, kind in kinds:
        pem, record = dkim.generate(kind)
        path = tmp_path / f"{selector}.pem"
        path.write_bytes(pem)
        entries.append(f"{selector}:{path}")
        records[selector] = record
    return ",".join(entries), records


# --- the whole setup -------------------------------------------------------------------------


def test_a_right_setup_passes_every_dns_check(sender: Settings) -> None:
    checks = run_dns(sender, bounce_address=f"bounces@{FROM}")

    assert [c.name for c in checks] == [
        "spf",
        "dmarc",
        "dmarc alignment",
        "bounce mx",
        "reverse dns",
    ]
    assert all(c.ok is True for c in checks), checks
    assert one(checks, "spf").summary == f"{FROM} allows {IP} (pass via ip4:203.0.113.0/24)"
    assert one(checks, "dmarc").summary == "_dmarc.verdicts.dev: p=quarantine"
    assert (
        one(checks, "reverse dns").summary
        == f"{IP} is mail.verdicts.dev, which resolves back to it"
    )
    assert "mx.verdicts.dev" in one(checks, "bounce mx").summary


# --- SPF -------------------------------------------------------------------------------------


def test_spf_passes_through_an_include_chain(sender: Settings, dns: DnsServer) -> None:
    dns.load(
        {
            FROM: {"TXT": [("v=spf1 include:_spf.verd", "icts.dev -all")]},  # two strings
            "_spf.verdicts.dev": {
                "TXT": ["v=spf1 ip4:198.51.100.0/24 include:_spf.relay.net ~all"]
            },
            "_spf.relay.net": {"TXT": ["v=spf1 a:out.relay.net/28 -all"]},
            "out.relay.net": {"A": ["203.0.113.1"]},
        }
    )

    found = one(run_dns(sender), "spf")

    assert found.ok is True
    assert found.summary == (
        f"{FROM} allows {IP} (pass via include:_spf.verdicts.dev > include:_spf.relay.net"
        " > a:out.relay.net/28)"
    )


def test_spf_softfail_names_the_ip_the_record_and_the_fix(sender: Settings, dns: DnsServer) -> None:
    dns.load({FROM: {"TXT": ["v=spf1 ip4:198.51.100.0/24 ~all", "google-site-verification=x"]}})

    found = one(run_dns(sender), "spf")

    assert found.ok is False
    assert found.summary == (
        f"{FROM} gives softfail for {IP} (matched ~all): 'v=spf1 ip4:198.51.100.0/24 ~all'"
    )
    assert found.fix == f"Add ip4:{IP} to the SPF record at {FROM}, before its all term."


def test_missing_spf_record_fails_with_a_record_to_publish(
    sender: Settings, dns: DnsServer
) -> None:
    dns.load({FROM: {"TXT": ["some other TXT"], "MX": ["10 mx.verdicts.dev"]}})

    found = one(run_dns(sender), "spf")

    assert found.ok is False and found.summary == f"no v=spf1 TXT record at {FROM}"
    assert found.fix == f'Publish a TXT record at {FROM}: "v=spf1 ip4:{IP} ~all".'


def test_two_spf_records_are_a_permerror(sender: Settings, dns: DnsServer) -> None:
    dns.load({FROM: {"TXT": [f"v=spf1 ip4:{IP} -all", "v=spf1 include:sendgrid.net -all"]}})

    found = one(run_dns(sender), "spf")

    assert found.ok is False
    assert found.summary.startswith(f"2 v=spf1 TXT records at {FROM} (RFC 7208: permerror")
    assert found.fix is not None and "Merge them" in found.fix


def test_more_than_ten_lookups_fail_even_when_the_ip_comes_first(
    sender: Settings, dns: DnsServer
) -> None:
    hosts = " ".join(f"a:h{n}.verdicts.dev" for n in range(4))
    dns.load(
        {
            FROM: {"TXT": [f"v=spf1 ip4:{IP} {hosts} include:_spf.verdicts.dev -all"]},
            "_spf.verdicts.dev": {"TXT": ["v=spf1 mx a ptr include:_more.verdicts.dev -all"]},
            "_more.verdicts.dev": {"TXT": ["v=spf1 exists:x.verdicts.dev a mx -all"]},
        }
    )

    found = one(run_dns(sender), "spf")

    assert found.ok is False
    assert found.summary == (
        f"the SPF record at {FROM} needs 12 DNS lookups, more than 10 (RFC 7208 permerror)"
    )


def test_an_include_loop_is_a_permerror_not_a_hang(sender: Settings, dns: DnsServer) -> None:
    dns.load(
        {
            FROM: {"TXT": ["v=spf1 include:a.loop.dev -all"]},
            "a.loop.dev": {"TXT": ["v=spf1 include:b.loop.dev -all"]},
            "b.loop.dev": {"TXT": ["v=spf1 include:a.loop.dev -all"]},
        }
    )
    lookup = DnsLookup.from_setting(dns.address, TIMEOUT)

    found = one(run_dns(sender), "spf")
    evaluated = spf.check_host(ipaddress.ip_address(IP), FROM, lookup)

    assert found.ok is False and "loops back to a.loop.dev" in found.summary
    assert evaluated.result == "permerror" and "loops back" in evaluated.reason


@pytest.mark.parametrize(
    ("record", "ip", "result", "matched"),
    [
        ("v=spf1 mx -all", IP, "pass", ("mx",)),
        ("v=spf1 a:out.verdicts.dev/24 -all", IP, "pass", ("a:out.verdicts.dev/24",)),
        ("v=spf1 a:out.verdicts.dev -all", IP, "fail", ("-all",)),
        ("v=spf1 ip6:2001:db8::/32 -all", "2001:db8::5", "pass", ("ip6:2001:db8::/32",)),
        ("v=spf1 ip6:2001:db8::/32 -all", IP, "fail", ("-all",)),
        ("v=spf1 ip4:203.0.113.5 -all", f"::ffff:{IP}", "pass", ("ip4:203.0.113.5",)),
        ("v=spf1 redirect=_spf.verdicts.dev", IP, "pass", ("redirect=_spf.verdicts.dev", "+all")),
        ("v=spf1 -all redirect=_spf.verdicts.dev", IP, "fail", ("-all",)),
        ("v=spf1 ?all", IP, "neutral", ("?all",)),
        ("v=spf1 ip4:198.51.100.1", IP, "neutral", ()),
        ("v=spf1 exists:on.verdicts.dev -all", IP, "pass", ("exists:on.verdicts.dev",)),
        ("v=spf1 ip4:300.1.1.1 -all", IP, "permerror", ()),
        ("v=spf1 nonsense -all", IP, "permerror", ()),
        ("v=spf1 include:nothing.verdicts.dev -all", IP, "permerror", ()),
        ("v=spf1 a:n1.none.dev a:n2.none.dev a:n3.none.dev -all", IP, "permerror", ()),
    ],
)
def test_spf_evaluator(
    dns: DnsServer, record: str, ip: str, result: str, matched: tuple[str, ...]
) -> None:
    dns.load(
        {
            FROM: {"TXT": [record], "MX": ["10 mx.verdicts.dev", "20 mail.verdicts.dev"]},
            "out.verdicts.dev": {"A": ["203.0.113.77"]},
            "_spf.verdicts.dev": {"TXT": ["v=spf1 +all"]},
            "on.verdicts.dev": {"A": ["127.0.0.2"]},
            "nothing.verdicts.dev": {"A": ["203.0.113.9"]},
        }
    )

    found = spf.check_host(ipaddress.ip_address(ip), FROM, DnsLookup.from_setting(dns.address, 2))

    assert (found.result, found.matched) == (result, matched), found
    assert found.record == record


def test_a_macro_is_reported_as_unverifiable_not_as_a_fail(
    sender: Settings, dns: DnsServer
) -> None:
    dns.load({FROM: {"TXT": ["v=spf1 exists:%{i}._spf.verdicts.dev -all"]}})

    found = one(run_dns(sender), "spf")

    assert found.ok is None
    assert "exists:%{i}._spf.verdicts.dev use macros the doctor does not expand" in found.summary


def test_the_bounce_domain_is_the_one_spf_is_evaluated_for(
    sender: Settings, dns: DnsServer
) -> None:
    dns.load({"bounces.verdicts.dev": {"TXT": ["v=spf1 ip4:198.51.100.7 -all"], "A": [IP]}})

    checks = run_dns(sender, bounce_address="bounces@bounces.verdicts.dev")

    spf_check = one(checks, "spf")
    assert spf_check.ok is False
    assert spf_check.summary.startswith(f"bounces.verdicts.dev gives fail for {IP}")
    assert one(checks, "dmarc alignment").ok is True  # a subdomain of verdicts.dev: relaxed


def test_the_smtp_hosts_public_address_is_the_sending_ip(sender: Settings, dns: DnsServer) -> None:
    checks = run_dns(sender, sending_ips="", mail_backend="smtp://mail.verdicts.dev:587")

    assert one(checks, "spf").summary == f"{FROM} allows {IP} (pass via ip4:203.0.113.0/24)"
    assert one(checks, "reverse dns").ok is True


@pytest.mark.parametrize("relay", ["127.0.0.1", "localhost", "relay.verdicts.dev"])
def test_a_local_relay_warns_that_the_public_ip_is_unknown(
    sender: Settings, dns: DnsServer, relay: str
) -> None:
    dns.load({"relay.verdicts.dev": {"A": ["10.1.2.3"]}})

    checks = run_dns(sender, sending_ips="", mail_backend=f"smtp://{relay}:25")

    found = one(checks, "spf")
    assert found.ok is None
    assert f"mail goes through the smtp host {relay}" in found.summary
    assert "a local relay: its public IP is unknown" in found.summary
    assert found.fix is not None and "NEWSLETTER_SENDING_IPS" in found.fix
    assert not [c for c in checks if c.name == "reverse dns"]


@pytest.mark.parametrize(
    ("backend", "include", "ok"),
    [
        ("sendgrid://SG.key@", "sendgrid.net", True),
        ("mailgun://key@mg.verdicts.dev", "mailgun.org", True),
        ("postmark://token@", "spf.mtasv.net", True),
        ("sendgrid://SG.key@", None, False),
        ("postmark://token@", None, False),
        ("ses://id:secret@eu-west-1", "amazonses.com", True),
        ("resend://re_key@", None, None),
        ("ses://id:secret@eu-west-1", None, None),
    ],
)
def test_an_email_api_needs_its_include(
    sender: Settings, dns: DnsServer, backend: str, include: str | None, ok: bool | None
) -> None:
    record = f"v=spf1 include:{include} ~all" if include else "v=spf1 ip4:198.51.100.0/24 ~all"
    dns.load({FROM: {"TXT": [record]}, include or "unused.dev": {"TXT": ["v=spf1 -all"]}})

    found = one(run_dns(sender, sending_ips="", mail_backend=backend), "spf")

    assert found.ok is ok, found
    provider = backend.partition(":")[0]
    if ok:
        assert found.summary == f"{FROM} includes {include}, which {provider} sends from"
    elif ok is False:
        assert "does not include" in found.summary
        assert found.fix is not None and "Add include:" in found.fix
    else:
        assert f"{provider} sends with a MAIL FROM subdomain of its own" in found.summary


def test_txt_answers_too_big_for_udp_are_read_over_tcp(sender: Settings, dns: DnsServer) -> None:
    verifications = [f"site-verification-{n}={'x' * 90}" for n in range(5)]
    dns.load({FROM: {"TXT": [*verifications, "v=spf1 ip4:203.0.113.0/24 -all"]}})

    found = one(run_dns(sender), "spf")

    assert found.ok is True
    assert ("tcp", FROM, "TXT") in dns.queries
    assert ask(dns, FROM, "TXT").header.tc == 1  # the UDP answer itself: truncated


# --- DKIM ------------------------------------------------------------------------------------


def test_dkim_records_matching_the_configured_keys(
    sender: Settings, dns: DnsServer, tmp_path: Path
) -> None:
    spec, records = keys(tmp_path, ("r1", "rsa"), ("e1", "ed25519"))
    rsa = records["r1"]
    # As DNS consoles publish a long record: in strings of up to 255 characters, joined
    # without a space (one split inside k=rsa), and a space inside p= (ignored).
    split = (rsa[:12], rsa[12:100], rsa[100:255] + " ", rsa[255:])
    assert split[0] == "v=DKIM1; k=r"
    dns.load(
        {
            f"r1._domainkey.{FROM}": {"TXT": [split]},
            f"e1._domainkey.{FROM}": {"TXT": [records["e1"]]},
        }
    )

    found = named(run_dns(sender, dkim_keys=spec), "dkim record")

    assert [c.ok for c in found] == [True, True]
    assert found[0].summary == f"r1._domainkey.{FROM} publishes the configured rsa-sha256 key"
    assert found[1].summary == f"e1._domainkey.{FROM} publishes the configured ed25519-sha256 key"


def test_dkim_wrong_key_missing_key_and_wrong_kind(
    sender: Settings, dns: DnsServer, tmp_path: Path
) -> None:
    spec, records = keys(tmp_path, ("r1", "rsa"), ("r2", "rsa"), ("e1", "ed25519"))
    _, other = dkim.generate("rsa")
    dns.load(
        {
            f"r1._domainkey.{FROM}": {"TXT": [other]},
            f"e1._domainkey.{FROM}": {"TXT": [records["r2"]]},
        }
    )

    wrong, missing, kind = named(run_dns(sender, dkim_keys=spec), "dkim record")

    assert wrong.ok is False
    assert (
        wrong.summary == f"the published key at r1._domainkey.{FROM} is not the configured one (r1)"
    )
    assert wrong.fix is not None and records["r1"] in wrong.fix
    assert missing.ok is False and missing.summary == f"no DKIM key at r2._domainkey.{FROM}"
    assert missing.fix == f"Publish a TXT record at r2._domainkey.{FROM}: {records['r2']}"
    assert kind.ok is False
    assert kind.summary == (
        f"e1._domainkey.{FROM} publishes a k=rsa key, the configured one is ed25519-sha256"
    )


def test_no_dkim_keys_no_dkim_dns_check(sender: Settings) -> None:
    assert not [c for c in run_dns(sender, dkim_keys="") if c.name == "dkim record"]


# --- DMARC -----------------------------------------------------------------------------------


def test_dmarc_at_the_from_domain_and_p_none(sender: Settings, dns: DnsServer) -> None:
    dns.load({f"_dmarc.{FROM}": {"TXT": ["v=DMARC1; p=none; rua=mailto:d@verdicts.dev"]}})

    found = one(run_dns(sender), "dmarc")

    assert found.ok is True
    assert found.summary == (
        f"_dmarc.{FROM}: p=none, monitoring only (receivers report failures and still deliver them)"
    )


def test_dmarc_subdomain_policy_applies_from_the_organizational_domain(
    sender: Settings, dns: DnsServer
) -> None:
    dns.load({"_dmarc.verdicts.dev": {"TXT": ["v=DMARC1; p=reject; sp=quarantine"]}})

    assert one(run_dns(sender), "dmarc").summary == "_dmarc.verdicts.dev: sp=quarantine"


def test_missing_dmarc_fails(sender: Settings, dns: DnsServer) -> None:
    dns.zones.pop("_dmarc.verdicts.dev")

    found = one(run_dns(sender), "dmarc")

    assert found.ok is False
    assert found.summary == (
        f"no DMARC record at _dmarc.{FROM} or _dmarc.verdicts.dev (Gmail and Yahoo require one "
        "from bulk senders since 2024)"
    )
    assert found.fix is not None and '"v=DMARC1; p=none;' in found.fix


def test_a_bounce_domain_of_another_organization_is_misaligned(
    sender: Settings, dns: DnsServer
) -> None:
    dns.load({"bounce-mail.net": {"TXT": [f"v=spf1 ip4:{IP} -all"], "MX": ["10 mx.verdicts.dev"]}})

    checks = run_dns(sender, bounce_address="bounces@bounce-mail.net")

    found = one(checks, "dmarc alignment")
    assert found.ok is False
    assert found.summary == (
        f"the envelope (SPF) domain bounce-mail.net does not align with the From domain {FROM} "
        "(relaxed alignment needs a domain under verdicts.dev)"
    )
    assert (
        found.fix
        == "Set NEWSLETTER_BOUNCE_ADDRESS to an address at verdicts.dev or a subdomain of it."
    )
    assert one(checks, "spf").ok is True  # SPF passes, for a domain DMARC does not count


def test_strict_alignment_needs_the_same_domain(
    sender: Settings, dns: DnsServer, tmp_path: Path
) -> None:
    spec, records = keys(tmp_path, ("e1", "ed25519"))
    dns.load(
        {
            "_dmarc.verdicts.dev": {"TXT": ["v=DMARC1; p=reject; aspf=s; adkim=s"]},
            "bounces.verdicts.dev": {
                "TXT": [f"v=spf1 ip4:{IP} -all"],
                "MX": ["10 mx.verdicts.dev"],
            },
            "e1._domainkey.verdicts.dev": {"TXT": [records["e1"]]},
        }
    )

    checks = run_dns(
        sender,
        bounce_address="bounces@bounces.verdicts.dev",
        dkim_keys=spec,
        dkim_domain="verdicts.dev",
    )

    spf_side, dkim_side = named(checks, "dmarc alignment")
    assert spf_side.ok is False and "bounces.verdicts.dev" in spf_side.summary
    assert "(strict alignment needs the same domain)" in spf_side.summary
    assert dkim_side.ok is False
    assert dkim_side.summary.startswith(
        f"the DKIM d= domain verdicts.dev does not align with the From domain {FROM}"
    )
    assert dkim_side.fix == f"Set NEWSLETTER_DKIM_DOMAIN to {FROM}."
    assert one(checks, "dkim record").ok is True


def test_organizational_domain_is_the_last_two_labels() -> None:
    assert organizational_domain("a.b.news.verdicts.dev.") == "verdicts.dev"
    assert organizational_domain("verdicts.dev") == "verdicts.dev"


# --- bounces, reverse DNS --------------------------------------------------------------------


def test_bounce_domain_mx(sender: Settings, dns: DnsServer) -> None:
    spf_ok = {"TXT": [f"v=spf1 ip4:{IP} -all"]}
    dns.load(
        {
            "implicit.verdicts.dev": {**spf_ok, "A": ["203.0.113.30"]},
            "nowhere.verdicts.dev": spf_ok,
            "null.verdicts.dev": {**spf_ok, "MX": ["0 ."]},
        }
    )

    def bounce_mx(domain: str) -> Check:
        return one(run_dns(sender, bounce_address=f"bounces@{domain}"), "bounce mx")

    assert bounce_mx(FROM).summary == f"{FROM} (bounces) receives mail at mx.verdicts.dev"
    implicit = bounce_mx("implicit.verdicts.dev")
    assert (
        implicit.ok is True and "no MX; mail goes to its address 203.0.113.30" in implicit.summary
    )
    nowhere = bounce_mx("nowhere.verdicts.dev")
    assert nowhere.ok is None and "no MX and no address" in nowhere.summary
    null = bounce_mx("null.verdicts.dev")
    assert null.ok is False and "null MX" in null.summary
    assert not [c for c in run_dns(sender) if c.name == "bounce mx"]  # no bounce address


def test_reverse_dns_mismatched_and_missing(sender: Settings, dns: DnsServer) -> None:
    other = "198.51.100.20"
    dns.load(
        {
            FROM: {"TXT": [f"v=spf1 ip4:{IP} ip4:{other} ip4:198.51.100.21 -all"]},
            reverse(other): {"PTR": ["mail.verdicts.dev"]},  # whose A record is IP, not other
        }
    )

    found = named(run_dns(sender, sending_ips=f"{IP}, {other}, 198.51.100.21"), "reverse dns")

    assert [c.ok for c in found] == [True, False, False]
    assert (
        found[1].summary
        == f"{other} is mail.verdicts.dev, which does not resolve back to it ({IP})"
    )
    assert found[2].summary == "198.51.100.21 has no PTR record"
    assert found[2].fix is not None and "Gmail" in found[2].fix


def test_ipv6_sending_ip(sender: Settings, dns: DnsServer) -> None:
    v6 = "2001:db8::25"
    dns.load(
        {
            FROM: {"TXT": ["v=spf1 ip6:2001:db8::/64 -all"]},
            "mail6.verdicts.dev": {"AAAA": [v6]},
            reverse(v6): {"PTR": ["mail6.verdicts.dev"]},
        }
    )

    checks = run_dns(sender, sending_ips=v6)

    assert one(checks, "spf").summary == f"{FROM} allows {v6} (pass via ip6:2001:db8::/64)"
    assert one(checks, "reverse dns").ok is True


# --- DNS trouble, skips, settings ------------------------------------------------------------


def test_a_resolver_that_does_not_answer_gives_one_line(sender: Settings) -> None:
    port = free_port()
    started = time.monotonic()

    checks = check_dns(sender.model_copy(update={"dns_resolver": f"127.0.0.1:{port}"}), 0.5)

    assert time.monotonic() - started < 3  # one timeout, not one per query
    assert len(checks) == 1
    (found,) = checks
    assert found.name == "dns" and found.ok is None
    assert found.summary.startswith(f"the resolver 127.0.0.1:{port} did not answer TXT {FROM}")
    assert found.summary.endswith("DNS records not checked")
    assert found.fix is not None and "NEWSLETTER_DNS_RESOLVER" in found.fix
    assert len(render(checks).splitlines()) == 3  # the line, its fix, the counts


def test_servfail_fails_the_check_that_asked_and_the_others_go_on(
    sender: Settings, dns: DnsServer
) -> None:
    dns.servfail.add("_dmarc.news.verdicts.dev")

    checks = run_dns(sender)

    found = one(checks, "dmarc")
    assert found.ok is False
    assert found.summary == (
        f"the resolver {dns.address} answered SERVFAIL for TXT _dmarc.{FROM}: receivers get "
        "the same error"
    )
    assert one(checks, "spf").ok is True and one(checks, "reverse dns").ok is True


def test_when_nothing_is_checked(sender: Settings) -> None:
    unasked = {"sending_ips": "", "dns_resolver": ""}
    local = run_dns(sender, mail_backend="file:///tmp/outbox", **unasked)
    example = run_dns(sender, from_address="V <v@news.example.com>")
    tld = run_dns(sender, from_address="V <v@verdicts.test>")

    assert [(c.name, c.ok) for c in local + example + tld] == [("dns", None)] * 3
    assert local[0].summary == "skipped: NEWSLETTER_MAIL_BACKEND keeps mail on this machine"
    assert "news.example.com is a reserved example domain" in example[0].summary
    assert "verdicts.test is a reserved example domain" in tld[0].summary


def test_a_relay_on_this_machine_still_gets_its_domain_records_checked(sender: Settings) -> None:
    # A local Postfix sends as this domain: DKIM, DMARC and the bounce MX don't depend on
    # its public IP; SPF and reverse DNS do, and say what to set.
    relay = run_dns(sender, mail_backend="smtp://127.0.0.1:1025", sending_ips="")

    spf_line = one(relay, "spf")
    assert spf_line.ok is None and "127.0.0.1" in spf_line.summary
    assert spf_line.fix is not None and "NEWSLETTER_SENDING_IPS" in spf_line.fix
    assert one(relay, "dmarc").ok is True and one(relay, "dmarc alignment").ok is True
    assert not [c for c in relay if c.name == "reverse dns"]


def test_bad_settings_are_named(sender: Settings) -> None:
    bad_ip = run_dns(sender, sending_ips="203.0.113.5, mail.verdicts.dev")
    bad_resolver = run_dns(sender, dns_resolver="127.0.0.1:99999")

    assert bad_ip[0].ok is False
    assert bad_ip[0].summary == "NEWSLETTER_SENDING_IPS: 'mail.verdicts.dev' is not an IP address"
    assert [(c.name, c.ok) for c in bad_resolver] == [("dns", False)]
    assert (
        "NEWSLETTER_DNS_RESOLVER: '127.0.0.1:99999' is not host[:port]" in bad_resolver[0].summary
    )


# --- the command -----------------------------------------------------------------------------


def test_newsletter_doctor_prints_the_dns_lines(
    settings: Settings, engine: Engine, smtp_server: SMTPSink, dns: DnsServer, tmp_path: Path
) -> None:
    dns.load({"_dmarc.verdicts.dev": {"TXT": ["v=DMARC1; p=none"]}, reverse(IP): {"PTR": []}})
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env.update(
        NEWSLETTER_DATABASE_URL=settings.database_url,
        NEWSLETTER_MAIL_BACKEND=smtp_server.url,
        NEWSLETTER_SECRET_KEY=SECRET,
        NEWSLETTER_BASE_URL="https://news.verdicts.dev",
        NEWSLETTER_FROM=f"Verdicts <news@{FROM}>",
        NEWSLETTER_BOUNCE_ADDRESS=f"bounces@{FROM}",
        NEWSLETTER_SENDING_IPS=IP,
        NEWSLETTER_DNS_RESOLVER=dns.address,
        NEWSLETTER_JOURNAL_DIR=str(tmp_path / "journal"),
    )

    done = subprocess.run(
        [sys.executable, "-m", "newsletter.cli", "doctor"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )

    lines = done.stdout.splitlines()
    assert f"ok    spf: {FROM} allows {IP} (pass via ip4:203.0.113.0/24)" in lines
    assert (
        "ok    dmarc: _dmarc.verdicts.dev: p=none, monitoring only (receivers report failures "
        "and still deliver them)"
    ) in lines
    assert f"ok    dmarc alignment: SPF {FROM} aligns with the From domain {FROM}" in lines
    assert f"ok    bounce mx: {FROM} (bounces) receives mail at mx.verdicts.dev" in lines
    failed = lines.index(f"FAIL  reverse dns: {IP} has no PTR record")
    assert lines[failed + 1].startswith(f"      fix: Ask whoever runs {IP}")
    assert done.returncode == 1, done.stdout + done.stderr
    assert not [line for line in lines if line.startswith("FAIL") and "reverse dns" not in line]
