"""DKIM: every message the engine signs verifies with dkimpy (an independent implementation)
against the published key, RSA-2048 and Ed25519 alike, after a real SMTP hand-over (dot-
stuffing and all) and in the outbox; List-Unsubscribe-Post is covered, and a header added or
a body changed on the way fails. Keys and settings that can't sign fail in one line."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import dkim as dkimpy
import pytest
from sqlmodel import Session

from newsletter import publish
from newsletter.backends.file import FileBackend
from newsletter.backends.smtp import SMTPBackend
from newsletter.config import Settings
from newsletter.edition import dkim
from newsletter.edition.message import OutgoingMessage
from newsletter.edition.personalization import MessageTemplate, Recipient
from newsletter.storage import store

from .conftest import PINNED_DATE

DOMAIN = "news.example.com"


def _keys(tmp_path: Path) -> tuple[str, dict[bytes, bytes]]:
    """Two keys on disk (RSA-2048 and Ed25519) as NEWSLETTER_DKIM_KEYS, and the DNS records
    that publish them, for dkimpy's lookup."""
    records: dict[bytes, bytes] = {}
    entries = []
    for selector, kind in (("r2026", "rsa"), ("e2026", "ed25519")):
        pem, record = dkim.generate(kind)
        path = tmp_path / f"{selector}.pem"
        path.write_bytes(pem)
        entries.append(f"{selector}:{path}")
        records[f"{selector}._domainkey.{DOMAIN}.".encode()] = record.encode()
    return ",".join(entries), records


def _verify(message: bytes, records: dict[bytes, bytes]) -> list[bool]:
    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        return records.get(name if name.endswith(b".") else name + b".")

    def one(index: int) -> bool:
        try:
            return bool(dkimpy.DKIM(message).verify(idx=index, dnsfunc=lookup))
        except dkimpy.ValidationError:  # e.g. "body hash mismatch"
            return False

    return [one(i) for i in range(message.count(b"DKIM-Signature:"))]


@pytest.fixture
def signed(
    seeded: Session, settings: Settings, draft: int, tmp_path: Path
) -> tuple[MessageTemplate, dict[bytes, bytes], Callable[..., list[OutgoingMessage]]]:
    spec, records = _keys(tmp_path)
    configured = settings.model_copy(update={"dkim_keys": spec})
    edition = store.get_edition(seeded, edition_id=draft)
    # A long non-ASCII subject: an encoded header folded over several lines.
    edition.subject = "Wöchentliche Urteile: Claude 4 API oder Hugging Face? " * 3
    _, template, _ = publish.prepare(seeded, edition=edition, settings=configured)
    signer = publish.signer_for(configured)

    def build(recipients: list[Recipient]) -> list[OutgoingMessage]:
        return [template.build(r, signer, now=PINNED_DATE) for r in recipients]

    return template, records, build


PEOPLE = [
    Recipient(1, "ann@example.com", "Ann  Lee"),  # two spaces: a run inside a slot
    Recipient(2, "bo@example.net", None),
    Recipient(3, "zoe@example.org", "Zoë Ünal"),
]


def test_both_signatures_verify_and_cover_one_click_unsubscribe(signed: Any) -> None:
    template, records, build = signed
    for message in build(PEOPLE):
        assert _verify(message.data, records) == [True, True]
        head = message.data.split(b"\r\n\r\n", 1)[0].decode()
        signatures = [
            " ".join(f.split()) for f in head.replace("\r\n\t", " ").split("\r\n") if "DKIM" in f
        ]
        assert "a=rsa-sha256" in signatures[0] and "a=ed25519-sha256" in signatures[1]
        for header in signatures:
            assert "c=relaxed/relaxed" in header and f"d={DOMAIN}" in header
            listed = header.split("h=", 1)[1].split(";", 1)[0].replace(" ", "").split(":")
            for name in ("from", "to", "subject", "date", "message-id", "list-id"):
                assert name in listed
            # Oversigned: one more than present, so neither can be added on the way.
            assert listed.count("list-unsubscribe-post") == 2
            assert listed.count("list-unsubscribe") == 2
        assert "=?utf-8?" in head.lower()  # the folded, encoded subject is signed too
    # The body hash was made from pieces canonicalized once per edition; dkimpy recomputes
    # it from the whole body, so the verifications above also prove the two agree.
    assert template.dkim is not None


def test_a_header_added_or_a_body_changed_on_the_way_fails(signed: Any) -> None:
    _, records, build = signed
    (message,) = build(PEOPLE[:1])
    data = message.data
    added = data.replace(b"MIME-Version:", b"List-Unsubscribe-Post: nope\r\nMIME-Version:", 1)
    assert _verify(added, records) == [False, False]
    changed = data[:-40] + data[-40:].replace(b"--", b"-x", 1)
    assert _verify(changed, records) == [False, False]
    refolded = data.replace(b"\r\nMIME-Version: 1.0", b"\r\nMIME-Version:   1.0", 1)
    assert _verify(refolded, records) == [True, True]  # relaxed: a relay's spacing is fine


def test_signatures_survive_a_real_smtp_hand_over_and_the_outbox(
    signed: Any, smtp_server: Any, tmp_path: Path
) -> None:
    _, records, build = signed
    messages = build(PEOPLE)
    # Lines that start with a dot are dot-stuffed on the wire and unstuffed by the server.
    dotted = messages[0].data.replace(b"\r\n\r\n", b"\r\n\r\n.leading dot\r\n..two\r\n", 1)
    resigned = dkim.signer_from(
        ",".join(f"{s}:{tmp_path / (s + '.pem')}" for s in ("r2026", "e2026")), domain=DOMAIN
    )
    assert resigned is not None
    unsigned = dotted[dotted.index(b"From:") :]  # without the signatures made before
    # A changed message drops the stuffed form built with the old one (the backend stuffs it).
    messages[0] = replace(messages[0], raw=resigned.sign(unsigned, now=int(PINNED_DATE)))
    with SMTPBackend.from_url(smtp_server.url) as backend:
        backend.send_messages(messages)
    assert len(smtp_server.received) == 3
    for envelope in smtp_server.received:
        content = envelope.original_content or envelope.content
        assert _verify(content.replace(b"\n", b"\r\n").replace(b"\r\r\n", b"\r\n"), records) == [
            True,
            True,
        ]
    assert b"\r\n.leading dot\r\n..two\r\n" in smtp_server.received[0].content.replace(
        b"\n", b"\r\n"
    ).replace(b"\r\r\n", b"\r\n")
    outbox = tmp_path / "outbox"
    with FileBackend.from_url(f"file://{outbox}") as backend:
        backend.send_messages(messages)
    for path in sorted(outbox.glob("*.eml")):
        assert _verify(path.read_bytes(), records) == [True, True]


def test_keys_that_cannot_sign_fail_in_one_line(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    short = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    (tmp_path / "short.pem").write_bytes(
        short.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    curve = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "ec.pem").write_bytes(
        curve.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (tmp_path / "junk.pem").write_text("not a key")
    for spec, problem in (
        (f"s1:{tmp_path / 'short.pem'}", "an RSA key of 1024 bits; at least 2048"),
        (f"s1:{tmp_path / 'ec.pem'}", "an RSA or Ed25519 key is needed"),
        (f"s1:{tmp_path / 'junk.pem'}", "not an unencrypted PEM private key"),
        (f"s1:{tmp_path / 'missing.pem'}", "can't read the DKIM key"),
        ("no-colon-here", "is not selector:/path/to/key.pem"),
        ("bad selector:/x.pem", "is not selector:/path/to/key.pem"),
    ):
        with pytest.raises(dkim.DkimError, match=problem):
            dkim.signer_from(spec, domain=DOMAIN)
    assert dkim.signer_from(" , ", domain=DOMAIN) is None


def test_keygen_writes_a_private_key_and_prints_the_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from newsletter.cli import app

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NEWSLETTER_FROM", f"News <news@{DOMAIN}>")
    runner = CliRunner()
    made = runner.invoke(app, ["dkim", "keygen", "--selector", "s1", "--type", "ed25519"])
    assert made.exit_code == 0, made.output
    path = tmp_path / "dkim-s1.pem"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert f"s1._domainkey.{DOMAIN}" in made.output and "v=DKIM1; k=ed25519; p=" in made.output
    record = made.output.split("v=DKIM1", 1)[1].split("\n", 1)[0]
    key = dkim.load_key(path, domain=DOMAIN, selector="s1")
    assert dkim.txt_record(key) == "v=DKIM1" + record
    again = runner.invoke(app, ["dkim", "keygen", "--selector", "s1"])
    assert again.exit_code == 1 and "exists; it is never overwritten" in again.output
    assert "Traceback" not in again.output


def test_the_canonical_body_from_pieces_matches_the_whole() -> None:
    body = b"<p>  indented\t\tline </p>\r\nplain\r\n\r\n\r\n"
    for straddling in ([b"<p> ", b" x"], [b"<p>\t", b"\tx"], [b"x ", b"\r\n"], [b"x \r", b"\n"]):
        done = [dkim.relaxed_run(p) for p in straddling]
        assert dkim.relaxed_join(done) is None, straddling
    safe = [b"<p>  indented\t\tline </p>\r\n", b"plain", b"\r\n\r\n\r\n"]
    assert dkim.relaxed_join([dkim.relaxed_run(p) for p in safe]) == dkim.relaxed_body(body)
    assert dkim.relaxed_body(body) == b"<p> indented line </p>\r\nplain\r\n"
    assert dkim.relaxed_body(b"\r\n\r\n") == b""


def test_doctor_loads_the_keys_and_names_what_to_publish(
    settings: Settings, tmp_path: Path
) -> None:
    from newsletter.doctor.dkim_checks import check_dkim

    spec, records = _keys(tmp_path)
    sender = f"News <news@{DOMAIN}>"
    checks = check_dkim(settings.model_copy(update={"dkim_keys": spec, "from_address": sender}), 1)
    assert [c.ok for c in checks] == [True, True]
    assert f"publish at r2026._domainkey.{DOMAIN}" in checks[0].summary
    assert "ed25519-sha256" in checks[1].summary
    # A d= domain that does not align with From: a warning naming both.
    other = settings.model_copy(
        update={"dkim_keys": spec, "from_address": sender, "dkim_domain": "elsewhere.example"}
    )
    assert check_dkim(other, 1)[-1].ok is None
    assert "does not align with the From domain" in check_dkim(other, 1)[-1].summary
    broken = settings.model_copy(update={"dkim_keys": "s1:/nowhere.pem"})
    (failed,) = check_dkim(broken, 1)
    assert failed.ok is False and "can't read the DKIM key" in failed.summary
    assert check_dkim(settings, 1)[0].ok is None  # none set: a warning, not a failure
    assert records


def test_a_test_send_is_signed_as_sent_with_its_own_message_id(
    seeded: Session, settings: Settings, draft: int, tmp_path: Path
) -> None:
    from newsletter.backends import memory

    spec, records = _keys(tmp_path)
    memory.outbox.clear()
    publish.send_test(
        seeded,
        edition_id=draft,
        settings=settings.model_copy(update={"dkim_keys": spec}),
        to=["editor@example.com"],
        backend=memory.MemoryBackend(),
        now=PINNED_DATE,
    )
    (sent,) = memory.outbox
    assert sent.message_id.startswith("<test.") and sent.message_id.encode() in sent.data
    assert _verify(sent.data, records) == [True, True]
    assert sent.data.count(b"DKIM-Signature:") == 2  # signed once, after the change
