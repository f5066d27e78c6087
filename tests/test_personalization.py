"""Personalization and tokens: headers, RFC 8058, MIME shape, per-recipient values, forgery."""

from __future__ import annotations

import dataclasses
import email
import email.policy
from email.message import EmailMessage
from typing import Any

import pytest
from sqlmodel import Session

from newsletter import publish
from newsletter.config import ConfigError, Settings
from newsletter.edition.personalization import MessageTemplate, Recipient, format_address
from newsletter.edition.tokens import BadToken, TokenSigner
from newsletter.storage import store
from tests.conftest import PINNED_DATE


@pytest.fixture
def template(seeded: Session, settings: Settings, draft: int) -> MessageTemplate:
    edition = store.get_edition(seeded, edition_id=draft)
    return publish.prepare(seeded, edition=edition, settings=settings)[1]


def _parse(data: bytes) -> EmailMessage:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def test_message_headers_and_structure(template: MessageTemplate, settings: Settings) -> None:
    signer = publish.signer_for(settings)
    out = template.build(Recipient(7, "ana@example.com", "Ana"), signer, now=PINNED_DATE)
    msg = _parse(out.data)
    to = msg["To"].addresses[0]
    assert (to.display_name, to.addr_spec) == ("Ana", "ana@example.com")
    assert msg["From"] == settings.from_address
    # The lead comparison, no newsletter-name prefix (the From name says it), within 78.
    assert msg["Subject"] == "Patchwright Agent vs LintPilot Reviews (+3 more)"
    assert msg["Date"] == "Mon, 23 Nov 2026 09:00:00 +0000"  # RFC 5322 numeric zone, not GMT
    assert msg["Message-ID"] == out.message_id
    identity = template.identity
    assert msg["Feedback-ID"] == (
        f"{identity.edition_id}:weekly-ai-tool-verdicts:weekly:{identity.instance_tag}"
    )
    assert msg["Reply-To"] is None  # only when NEWSLETTER_REPLY_TO is set
    assert msg["List-Id"] == '"Weekly AI Tool Verdicts" <weekly-ai-tool-verdicts.news.example.com>'
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    url = msg["List-Unsubscribe"].strip("<>")
    assert url.startswith("https://news.example.com/u/")
    claims = signer.verify(url.rsplit("/", 1)[1], purpose="u")
    assert (claims.subscriber_id, claims.edition_id) == (7, template.identity.edition_id)
    assert msg.get_content_type() == "multipart/alternative"
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    text, page = parts[0].get_content(), parts[1].get_content()
    assert "Hi Ana," in text and "Hi Ana," in page
    assert url in text and url in page
    # 7-bit clean, CRLF only, no line over 998 octets (RFC 5322).
    assert out.data.isascii()
    assert b"\n" not in out.data.replace(b"\r\n", b"")
    assert max(len(line) for line in out.data.split(b"\r\n")) <= 998


def test_reply_to_when_configured(template: MessageTemplate, settings: Settings) -> None:
    from dataclasses import replace

    from newsletter.edition.personalization import MessageTemplate as Template

    identity = replace(template.identity, reply_to="Editors <editors@news.example.com>")
    replying = Template(template.rendered, identity)
    out = replying.build(
        Recipient(7, "ana@example.com", None), publish.signer_for(settings), now=PINNED_DATE
    )
    assert _parse(out.data)["Reply-To"] == "Editors <editors@news.example.com>"
    assert out.content is not None and out.content.reply_to == (
        "Editors",
        "editors@news.example.com",
    )


def test_each_recipient_gets_their_own_values(
    template: MessageTemplate, settings: Settings
) -> None:
    signer = publish.signer_for(settings)
    a = template.build(Recipient(1, "a@example.com", None), signer, now=PINNED_DATE)
    b = template.build(Recipient(2, "b@example.com", "José Álvarez"), signer, now=PINNED_DATE)
    ma, mb = _parse(a.data), _parse(b.data)
    assert a.message_id != b.message_id
    assert ma["List-Unsubscribe"] != mb["List-Unsubscribe"]
    assert "Hi there," in next(ma.iter_parts()).get_content()
    assert str(mb["To"]) == "José Álvarez <b@example.com>"
    text_b, html_b = (p.get_content() for p in mb.iter_parts())
    assert "Hi José Álvarez," in text_b
    assert "Hi Jos&#233; &#193;lvarez," in html_b  # non-ASCII as character references


def test_hostile_names_cannot_inject_headers_or_markup(
    template: MessageTemplate, settings: Settings
) -> None:
    signer = publish.signer_for(settings)
    name = 'Eve <script>x</script> "Bcc: all@example.com"\r\nBcc: victim@example.com'
    out = template.build(Recipient(3, "eve@example.com", name), signer, now=PINNED_DATE)
    msg = _parse(out.data)
    assert msg["Bcc"] is None
    assert msg["To"].addresses[0].addr_spec == "eve@example.com"
    page = list(msg.iter_parts())[1].get_content()
    assert "<script>x</script>" not in page and "&lt;script&gt;x&lt;/script&gt;" in page
    with pytest.raises(ValueError, match="unsafe address"):
        format_address("x", "a@example.com\r\nBcc: b@example.com")


def test_preview_matches_what_is_sent(template: MessageTemplate, settings: Settings) -> None:
    signer = publish.signer_for(settings)
    recipient = Recipient(9, "n@example.com", "Nia")
    page, text = template.preview(recipient, signer)
    parts = list(_parse(template.build(recipient, signer, now=PINNED_DATE).data).iter_parts())
    assert parts[0].get_content().replace("\r\n", "\n") == text
    assert parts[1].get_content().replace("\r\n", "\n") == page.replace("\r\n", "\n")


def test_tokens_cannot_be_forged_and_keys_rotate() -> None:
    old, new = TokenSigner(["old-key" * 6]), TokenSigner(["new-key" * 6, "old-key" * 6])
    token = old.unsubscribe(subscriber_id=41, newsletter_id=1, edition_id=3)
    assert new.verify(token, purpose="u").subscriber_id == 41  # rotated key still accepted
    body, _, sig = token.rpartition(".")
    tampered = body.replace(".15.", ".16.") + "." + sig  # 41 is "15" in base 36
    forged = [tampered, token[:-2], token + "x", "u.1.1.1.AAAAAAAAAAAAAAAAAAAAAA", "", "🙂"]
    for bad in forged:
        with pytest.raises(BadToken):
            new.verify(bad, purpose="u")
    with pytest.raises(BadToken):
        new.verify(token.replace("u.", "c.", 1), purpose="c")
    with pytest.raises(BadToken):
        TokenSigner(["unrelated" * 5]).verify(token, purpose="u")


@pytest.mark.parametrize("key", ["", "change-me", "short"])
def test_send_refuses_an_unsafe_secret_key(settings: Settings, key: str) -> None:
    with pytest.raises(ConfigError, match="NEWSLETTER_SECRET_KEY"):
        settings.model_copy(update={"secret_key": key}).require_sending_ready()


def test_personalization_is_a_cheap_splice(template: MessageTemplate, settings: Settings) -> None:
    """Not a timing test (see bench/): the per-recipient path never touches EmailMessage."""
    import email.message as em

    signer = publish.signer_for(settings)
    original = em.EmailMessage.__init__
    calls: list[Any] = []

    def spy(self: Any, *a: Any, **k: Any) -> None:
        calls.append(1)
        original(self, *a, **k)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(em.EmailMessage, "__init__", spy)
        for i in range(50):
            template.build(Recipient(i, f"r{i}@example.com", f"R {i}"), signer, now=PINNED_DATE)
    assert calls == []


@pytest.mark.parametrize("name", ["é" * 200, "Zoë " + "x" * 195, "😀" * 100, "Ana\u2028Smith"])
def test_long_and_unusual_names_keep_crlf_only(
    template: MessageTemplate, settings: Settings, name: str
) -> None:
    out = template.build(
        Recipient(5, "n@example.com", name), publish.signer_for(settings), now=PINNED_DATE
    )
    assert b"\n" not in out.data.replace(b"\r\n", b"")
    assert b"\r" not in out.data.replace(b"\r\n", b"")
    assert _parse(out.data)["To"].addresses[0].addr_spec == "n@example.com"


def test_carriage_returns_in_content_never_reach_the_wire(
    seeded: Session, settings: Settings, draft: int, make_comparison: Any
) -> None:
    item = store.edition_comparisons(seeded, edition_id=draft)[0]
    tools = [item.tools[0].model_copy(update={"entry_price": "Free\rfor teams"}), item.tools[1]]
    store.upsert_comparisons(seeded, records=[item.model_copy(update={"tools": tools})])
    seeded.commit()
    edition = store.get_edition(seeded, edition_id=draft)
    template = publish.prepare(seeded, edition=edition, settings=settings)[1]
    out = template.build(
        Recipient(1, "a@example.com", "A"), publish.signer_for(settings), now=PINNED_DATE
    )
    assert b"\r" not in out.data.replace(b"\r\n", b"")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("base_url", "https://news.example.com\r\nBcc: victim@example.com"),
        ("base_url", "https://news.example.com/?x=1"),
        ("base_url", "javascript:alert(1)"),
        ("base_url", "https://bücher.de"),
        ("site_url", "javascript:alert(1)"),
        ("timezone", "Mars/Olympus"),
        ("newsletter", "Not A Slug"),
    ],
)
def test_settings_refuse_unsafe_values(field: str, value: str) -> None:
    from pydantic import ValidationError

    unsafe: dict[str, Any] = {field: value}
    with pytest.raises(ValidationError, match=field):
        Settings(**unsafe, _env_file=None)


def test_old_keys_still_verify_links_already_sent(settings: Settings) -> None:
    old = publish.signer_for(settings).unsubscribe(subscriber_id=1, newsletter_id=1, edition_id=1)
    rotated = settings.model_copy(
        update={
            "secret_key": "Hq7nVx2LpR9cWm4ZtY-kB8sJ1dFgU0eA_oIiN3uKl6M",
            "old_secret_keys": settings.secret_key,
        }
    )
    assert publish.signer_for(rotated).verify(old, purpose="u").subscriber_id == 1
    fresh = publish.signer_for(rotated).unsubscribe(subscriber_id=1, newsletter_id=1, edition_id=1)
    assert fresh != old


def _stuffed(data: bytes) -> bytes:
    """RFC 5321 4.5.2 the slow, obvious way: every line that starts with a dot gets another."""
    lines = data.split(b"\r\n")
    body = b"\r\n".join(b"." + line if line.startswith(b".") else line for line in lines)
    return body + (b".\r\n" if body.endswith(b"\r\n") else b"\r\n.\r\n")


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "dkim"])
def test_the_wire_form_is_the_message_dot_stuffed(
    seeded: Session, settings: Settings, draft: int, signed: bool, tmp_path: Any
) -> None:
    """The constant pieces are stuffed once per edition and only the slots per recipient:
    whatever the content and the names, the result must be exactly the message stuffed line
    by line (a line-leading dot left single would be eaten by the server)."""
    from newsletter.edition import dkim

    if signed:
        pem, _ = dkim.generate("ed25519")
        (tmp_path / "k.pem").write_bytes(pem)
        settings = settings.model_copy(update={"dkim_keys": f"s1:{tmp_path / 'k.pem'}"})
    edition = store.get_edition(seeded, edition_id=draft)
    template = publish.prepare(seeded, edition=edition, settings=settings)[1]
    signer = publish.signer_for(settings)
    names = [None, "Ann", ".Dot", "." * 90, "y" * 70 + ".z" * 20, "Zoë .dot"]
    for i, name in enumerate(names):
        message = template.build(
            Recipient(i + 1, f"r{i}@example.com", name), signer, now=PINNED_DATE
        )
        assert message.wire == _stuffed(message.data), name
    # Dots at line starts in the constant pieces, right after a slot and inside one.
    rendered = template.rendered
    token = rendered.slot_token
    dotted_edition = dataclasses.replace(
        rendered,
        text=f".first\n..second\n{token('greeting_name')}\n.after {token('unsubscribe_url')}\n",
        html=f"<p>\n.{token('greeting_name')}</p>\n.x {token('unsubscribe_url')}\n",
    )
    dotted = MessageTemplate(dotted_edition, template.identity, template.dkim)
    for i, name in enumerate(names):
        message = dotted.build(Recipient(i + 1, f"r{i}@example.com", name), signer, now=PINNED_DATE)
        assert message.wire == _stuffed(message.data), name
    assert message.wire is not None and b"\r\n..first\r\n...second\r\n" in message.wire
    # New bytes (a test send's own Message-ID): the stuffed form of the old ones is not used.
    changed = dataclasses.replace(message, raw=message.data.replace(b"Message-ID", b"Message-Id"))
    assert changed.wire is None and changed.stuffed is message.stuffed
    # The wire form is pieces: the constant ones are the same objects in every message, so a
    # message in flight holds no second copy of the body.
    one, two = (
        template.build(Recipient(i, f"r{i}@example.com", "R"), signer, now=PINNED_DATE)
        for i in (1, 2)
    )
    assert one.wire_parts is not None and two.wire_parts is not None
    shared = {id(p) for p in one.wire_parts} & {id(p) for p in two.wire_parts}
    own = sum(len(p) for p in two.wire_parts if id(p) not in shared)
    assert own < len(two.data) / 10, (own, len(two.data))
    # So is the message itself, until a backend reads ``data`` (SMTP never does).
    assert isinstance(one.raw, tuple) and isinstance(two.raw, tuple)
    assert two.size == len(two.data) == len(b"".join(two.raw))
    kept = {id(p) for p in one.raw} & {id(p) for p in two.raw}
    assert sum(len(p) for p in two.raw if id(p) not in kept) < two.size / 10
