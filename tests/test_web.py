"""The public web app over HTTP (FastAPI's TestClient, real SQLite, the memory backend)."""

from __future__ import annotations

import quopri
import re
from collections.abc import Callable, Iterator
from email import message_from_bytes
from email.message import Message

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from newsletter import publish
from newsletter.audience import subscriptions
from newsletter.backends import memory
from newsletter.config import Settings
from newsletter.edition.tokens import TokenSigner
from newsletter.storage.models import (
    Edition,
    Newsletter,
    Subscriber,
    Subscription,
    SubscriptionEvent,
)
from newsletter.web.app import create_app

from .conftest import SECRET


@pytest.fixture
def database_url(both_database_url: str) -> str:
    """Every test here runs on SQLite and on PostgreSQL."""
    return both_database_url


@pytest.fixture
def client(settings: Settings, engine: Engine, seeded: Session) -> Iterator[TestClient]:
    memory.reset()
    app = create_app(settings, engine=engine)
    with TestClient(app, base_url="https://news.example.com", follow_redirects=False) as c:
        yield c
    memory.reset()


def _body(message: Message) -> str:
    for part in message.walk():
        if part.get_content_type() == "text/plain":
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            return payload.decode()
    raise AssertionError("no text part")


def confirmation_link() -> str:
    assert len(memory.outbox) == 1, [m.recipient for m in memory.outbox]
    text = _body(message_from_bytes(memory.outbox[0].data))
    match = re.search(r"https://news\.example\.com(/confirm/\S+)", text)
    assert match, text
    return match.group(1)


def subscription_of(session: Session, email: str) -> Subscription | None:
    session.expire_all()
    return session.exec(
        select(Subscription)
        .join(Subscriber, col(Subscriber.id) == Subscription.subscriber_id)
        .where(Subscriber.email_key == email.lower())
    ).first()


def events_of(session: Session, email: str) -> list[tuple[str, str, int | None]]:
    session.expire_all()
    rows = session.exec(
        select(SubscriptionEvent)
        .join(Subscriber, col(Subscriber.id) == SubscriptionEvent.subscriber_id)
        .where(Subscriber.email_key == email.lower())
        .order_by(col(SubscriptionEvent.id))
    ).all()
    return [(e.kind, e.source, e.edition_id) for e in rows]


# --- subscribe and confirm --------------------------------------------------------------------


def test_double_opt_in_activates_only_after_the_confirm_button(
    client: TestClient, seeded: Session
) -> None:
    page = client.post("/subscribe", data={"email": "New@Example.com", "name": "Ada"})
    assert page.status_code == 200 and "Check your inbox" in page.text
    sub = subscription_of(seeded, "new@example.com")
    assert sub is not None and sub.status == "pending"
    link = confirmation_link()
    message = message_from_bytes(memory.outbox[0].data)
    # Not the typed name: anyone can type anything into the form, so it never reaches the
    # inbox of an address that has not agreed to anything yet.
    assert message["To"] == "New@example.com"
    assert "Confirm" in str(message["Subject"]) and "Ada" not in _body(message)

    shown = client.get(link)  # a scanner fetching the link changes nothing
    assert shown.status_code == 200 and "Confirm my subscription" in shown.text
    sub = subscription_of(seeded, "new@example.com")
    assert sub is not None and sub.status == "pending"

    done = client.post(link)
    assert done.status_code == 200 and "You are subscribed" in done.text
    sub = subscription_of(seeded, "new@example.com")
    assert sub is not None and sub.status == "active"
    assert [k for k, _, _ in events_of(seeded, "new@example.com")] == ["subscribed", "confirmed"]
    again = client.post(link)  # idempotent
    assert again.status_code == 200
    assert [k for k, _, _ in events_of(seeded, "new@example.com")] == ["subscribed", "confirmed"]


def test_resubmitting_reveals_nothing_and_sends_one_confirmation_per_hour(
    client: TestClient, seeded: Session, add_subscribers: Callable[..., list[Subscriber]]
) -> None:
    add_subscribers(1, prefix="active")
    fresh = client.post("/subscribe", data={"email": "someone@example.com"})
    again = client.post("/subscribe", data={"email": "someone@example.com"})
    active = client.post("/subscribe", data={"email": "active0@example.com"})
    pages = {fresh.text, again.text, active.text}
    assert len(pages) == 1 and fresh.status_code == again.status_code == active.status_code == 200
    assert [m.recipient for m in memory.outbox] == ["someone@example.com"]


def test_a_failed_confirmation_send_lets_the_person_try_again(
    settings: Settings, engine: Engine, seeded: Session
) -> None:
    memory.reset()
    failing = settings.model_copy(update={"mail_backend": "memory://?reject=x@example.com"})
    with TestClient(create_app(failing, engine=engine)) as c:
        c.post("/subscribe", data={"email": "x@example.com"})
        seeded.expire_all()
        person = seeded.exec(
            select(Subscriber).where(Subscriber.email_key == "x@example.com")
        ).one()
        assert person.confirm_sent_at is None  # the hour's throttle was released


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"email": "not-an-address"}, "Email"),
        ({"email": "a" * 300 + "@example.com"}, "Email"),
        ({"email": "x@example.com", "name": "Eve\r\nBcc: victim@example.com"}, "Name"),
        ({"email": "x@example.com", "name": "<script>alert(1)</script>"}, "Name"),
        ({"email": "x@example.com", "name": "n" * 201}, "Name"),
        ({"email": "x@example.com", "name": "Eve \u202egnp.exe"}, "Name"),
        ({"email": "x@example.com", "newsletters": "no-such-list"}, "Newsletters"),
        ({"email": "<b>x</b>@example.com"}, "Email"),
    ],
)
def test_hostile_input_gets_a_clear_error_and_stores_nothing(
    client: TestClient, seeded: Session, data: dict[str, str], field: str
) -> None:
    page = client.post("/subscribe", data=data)
    assert page.status_code == 400
    assert f'id="form-error">{field}:' in page.text
    assert "<script>" not in page.text and "<b>x</b>" not in page.text  # escaped when echoed
    assert seeded.exec(select(Subscriber)).all() == []
    assert memory.outbox == []


def test_the_honeypot_field_stores_nothing_and_looks_the_same(
    client: TestClient, seeded: Session
) -> None:
    page = client.post("/subscribe", data={"email": "bot@example.com", "website": "http://spam"})
    assert page.status_code == 200 and "Check your inbox" in page.text
    assert seeded.exec(select(Subscriber)).all() == []


def test_the_form_is_rate_limited_per_client(
    settings: Settings, engine: Engine, seeded: Session
) -> None:
    memory.reset()
    limited = settings.model_copy(update={"subscribe_limit": 3})
    with TestClient(create_app(limited, engine=engine)) as c:
        codes = [
            c.post("/subscribe", data={"email": f"r{i}@example.com"}).status_code for i in range(5)
        ]
    assert codes == [200, 200, 200, 429, 429]


def test_a_suppressed_address_gets_no_confirmation(
    client: TestClient, seeded: Session, add_subscribers: Callable[..., list[Subscriber]]
) -> None:
    (person,) = add_subscribers(1, prefix="bounced")
    assert person.id is not None
    subscriptions.suppress(seeded, subscriber_id=person.id, reason="bounced", source="bounce")
    seeded.commit()
    page = client.post("/subscribe", data={"email": "bounced0@example.com"})
    assert page.status_code == 200 and "Check your inbox" in page.text
    assert memory.outbox == []


# --- unsubscribe ------------------------------------------------------------------------------


@pytest.fixture
def reader(
    seeded: Session, settings: Settings, add_subscribers: Callable[..., list[Subscriber]]
) -> tuple[int, int]:
    (person,) = add_subscribers(1, prefix="reader")
    newsletter = publish.default_newsletter(seeded, settings)
    assert person.id is not None and newsletter.id is not None
    return person.id, newsletter.id


def token_for(subscriber_id: int, newsletter_id: int, edition_id: int | None = 7) -> str:
    return TokenSigner([SECRET]).unsubscribe(
        subscriber_id=subscriber_id, newsletter_id=newsletter_id, edition_id=edition_id
    )


@pytest.mark.parametrize("encoding", ["urlencoded", "multipart"])
def test_one_click_post_unsubscribes_at_once_without_redirect_or_cookie(
    client: TestClient, seeded: Session, reader: tuple[int, int], encoding: str
) -> None:
    token = token_for(*reader, edition_id=None)
    if encoding == "urlencoded":
        response = client.post(
            f"/u/{token}",
            content=b"List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    else:
        response = client.post(f"/u/{token}", files={"List-Unsubscribe": (None, "One-Click")})
    assert response.status_code == 200
    assert "set-cookie" not in response.headers and "location" not in response.headers
    sub = subscription_of(seeded, "reader0@example.com")
    assert sub is not None and sub.status == "unsubscribed"
    again = client.post(f"/u/{token}", data={"List-Unsubscribe": "One-Click"})
    assert again.status_code == 200
    assert events_of(seeded, "reader0@example.com")[-1][:2] == ("unsubscribed", "one-click")
    assert [k for k, _, _ in events_of(seeded, "reader0@example.com")].count("unsubscribed") == 1


def test_a_mistyped_mail_backend_never_stops_one_click_unsubscribes(
    settings: Settings, engine: Engine, seeded: Session, reader: tuple[int, int]
) -> None:
    """The web app resolves its mail backend when it first sends a mail, not at start: a
    typo in NEWSLETTER_MAIL_BACKEND stops confirmation mails, never a subscriber leaving."""
    typo = settings.model_copy(update={"mail_backend": "carrierpigeon://coop"})
    with TestClient(create_app(typo, engine=engine)) as web:
        response = web.post(
            f"/u/{token_for(*reader, edition_id=None)}", data={"List-Unsubscribe": "One-Click"}
        )
    assert response.status_code == 200
    sub = subscription_of(seeded, "reader0@example.com")
    assert sub is not None and sub.status == "unsubscribed"


def test_a_get_never_unsubscribes(
    client: TestClient, seeded: Session, reader: tuple[int, int]
) -> None:
    for _ in range(3):
        page = client.get(f"/u/{token_for(*reader)}")
        assert page.status_code == 200 and 'id="unsubscribe"' in page.text
    sub = subscription_of(seeded, "reader0@example.com")
    assert sub is not None and sub.status == "active"


def test_page_unsubscribe_is_attributed_to_the_edition_then_resubscribe(
    client: TestClient, seeded: Session, reader: tuple[int, int]
) -> None:
    token = token_for(*reader, edition_id=None)
    # A real edition id, so the event's foreign key holds.
    edition = seeded.exec(select(Edition)).first()
    edition_id = edition.id if edition else None
    token = token_for(*reader, edition_id=edition_id)
    left = client.post(f"/u/{token}", data={"List-Unsubscribe": "One-Click", "via": "page"})
    assert left.status_code == 200 and 'id="resubscribe"' in left.text
    back = client.post(f"/u/{token}/resubscribe")
    assert back.status_code == 200 and "Welcome back" in back.text
    sub = subscription_of(seeded, "reader0@example.com")
    assert sub is not None and sub.status == "active"
    assert events_of(seeded, "reader0@example.com")[-2:] == [
        ("unsubscribed", "page", edition_id),
        ("resubscribed", "page", edition_id),
    ]


def test_leaving_everything_suppresses_the_address(
    client: TestClient, seeded: Session, settings: Settings, reader: tuple[int, int]
) -> None:
    other = Newsletter(slug="monthly", name="Monthly Deep Dive", site_url="https://x.example")
    seeded.add(other)
    seeded.flush()
    assert other.id is not None
    seeded.add(Subscription(subscriber_id=reader[0], newsletter_id=other.id, status="active"))
    seeded.commit()
    token = token_for(*reader)
    page = client.get(f"/u/{token}")
    assert "Monthly Deep Dive" in page.text and 'id="leave-all"' in page.text
    client.post(f"/u/{token}/all")
    seeded.expire_all()
    person = seeded.get(Subscriber, reader[0])
    assert person is not None and person.suppressed == "unsubscribed_all"
    statuses = {s.status for s in seeded.exec(select(Subscription)).all()}
    assert statuses == {"unsubscribed"}


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-1],  # truncated
        lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),  # tampered signature
        lambda t: "u.1.1.-.forged",  # made up
        lambda t: "",  # nothing
    ],
)
def test_a_bad_token_gets_a_plain_400_that_reveals_nothing(
    client: TestClient, seeded: Session, reader: tuple[int, int], mangle: Callable[[str], str]
) -> None:
    token = mangle(token_for(*reader))
    for response in (client.get(f"/u/{token}"), client.post(f"/u/{token}")):
        assert response.status_code in (400, 404, 405)
        assert "reader0" not in response.text
    sub = subscription_of(seeded, "reader0@example.com")
    assert sub is not None and sub.status == "active"


def test_another_subscribers_token_cannot_be_made_from_mine(
    client: TestClient, seeded: Session, reader: tuple[int, int]
) -> None:
    mine = token_for(*reader)
    purpose, sub, nl, ed, sig = mine.split(".")
    theirs = ".".join([purpose, format(reader[0] + 1, "x"), nl, ed, sig])
    assert client.post(f"/u/{theirs}").status_code == 400
    key_signed_elsewhere = TokenSigner(["another-key-" + "x" * 40]).unsubscribe(
        subscriber_id=reader[0], newsletter_id=reader[1], edition_id=None
    )
    assert client.post(f"/u/{key_signed_elsewhere}").status_code == 400
    sub_row = subscription_of(seeded, "reader0@example.com")
    assert sub_row is not None and sub_row.status == "active"


def test_a_token_signed_with_a_rotated_key_still_works(
    settings: Settings, engine: Engine, seeded: Session, reader: tuple[int, int]
) -> None:
    old_token = token_for(*reader)  # signed with SECRET
    rotated = settings.model_copy(
        update={
            "secret_key": "1JCAM9GmdZk-r0Wts2PMJnflfBESxNZY2wGtkQjZqTa8zRdtUzZ7IA",
            "old_secret_keys": SECRET,
        }
    )
    with TestClient(create_app(rotated, engine=engine)) as c:
        assert c.post(f"/u/{old_token}").status_code == 200
    sub = subscription_of(seeded, "reader0@example.com")
    assert sub is not None and sub.status == "unsubscribed"


def test_pages_are_not_frameable_and_need_no_javascript(
    client: TestClient, reader: tuple[int, int]
) -> None:
    for path in ("/subscribe", f"/u/{token_for(*reader)}", "/archive"):
        page = client.get(path)
        assert page.status_code == 200
        assert page.headers["x-frame-options"] == "DENY"
        assert "script-src" not in page.headers["content-security-policy"]  # none allowed
        assert "<script" not in page.text


# --- an unsubscribe during a running send -------------------------------------------------------


def test_an_unsubscribe_mid_send_stops_mail_to_that_person(
    client: TestClient,
    seeded: Session,
    settings: Settings,
    draft: int,
    add_subscribers: Callable[..., list[Subscriber]],
) -> None:
    people = add_subscribers(30, prefix="mid")
    small = settings.model_copy(update={"batch_size": 5})
    last = people[-1]
    assert last.id is not None
    newsletter = publish.default_newsletter(seeded, settings)
    token = TokenSigner([SECRET]).unsubscribe(
        subscriber_id=last.id, newsletter_id=newsletter.id or 0, edition_id=draft
    )
    batches = []

    def after_batch(n: int) -> None:
        batches.append(n)
        if len(batches) == 1:  # the send is running: the person clicks one-click now
            assert client.post(f"/u/{token}", data={"List-Unsubscribe": "One-Click"}).is_success

    memory.reset()
    publish.send_edition(
        seeded,
        edition_id=draft,
        settings=small,
        backend=memory.MemoryBackend(),
        options=publish.SendOptions(on_batch=after_batch),
    )
    recipients = {m.recipient for m in memory.outbox}
    assert len(batches) > 1
    assert "mid29@example.com" not in recipients
    assert "mid0@example.com" in recipients
    assert events_of(seeded, "mid29@example.com")[-1] == ("unsubscribed", "one-click", draft)


# --- archive ---------------------------------------------------------------------------------


def test_confirming_sends_one_welcome_with_the_latest_edition(
    client: TestClient,
    seeded: Session,
    settings: Settings,
    draft: int,
    add_subscribers: Callable[..., list[Subscriber]],
) -> None:
    add_subscribers(1, prefix="early")
    publish.send_edition(
        seeded, edition_id=draft, settings=settings, backend=memory.MemoryBackend()
    )
    memory.reset()
    client.post("/subscribe", data={"email": "newcomer@example.com"})
    link = confirmation_link()
    memory.reset()
    client.post(link)
    client.post(link)  # confirming twice welcomes once
    assert [m.recipient for m in memory.outbox] == ["newcomer@example.com"]
    welcome = message_from_bytes(memory.outbox[0].data)
    assert welcome["Subject"] == "Welcome to Weekly AI Tool Verdicts"
    body = _body(welcome)
    assert f"https://news.example.com/archive/{draft}" in body
    manage = welcome["List-Unsubscribe"].strip("<>")
    assert manage.startswith("https://news.example.com/u/") and manage in body
    assert welcome["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert client.get(manage.split("news.example.com")[1]).status_code == 200


def test_the_archive_shows_sent_editions_without_personal_links(
    client: TestClient,
    seeded: Session,
    settings: Settings,
    draft: int,
    add_subscribers: Callable[..., list[Subscriber]],
) -> None:
    assert client.get(f"/archive/{draft}").status_code == 404  # a draft is not public
    add_subscribers(2, prefix="arch")
    publish.send_edition(
        seeded, edition_id=draft, settings=settings, backend=memory.MemoryBackend()
    )
    listing = client.get("/archive")
    assert f'/archive/{draft}"' in listing.text
    page = client.get(f"/archive/{draft}")
    assert page.status_code == 200
    assert "/u/" not in page.text and "arch0" not in page.text and "Reader" not in page.text
    # No greeting, no link to itself, no "you are receiving this": a visitor reads it here.
    assert "Hi " not in page.text and f'href="https://news.example.com/archive/{draft}"' not in (
        page.text
    )
    assert "You are receiving this" not in page.text and "View in browser" not in page.text
    # A visitor can subscribe from it and find the other editions.
    assert 'action="https://news.example.com/subscribe"' in page.text
    assert 'name="newsletters" value="weekly-ai-tool-verdicts"' in page.text
    assert 'href="https://news.example.com/archive"' in page.text
    edition = seeded.get(Edition, draft)
    assert edition is not None and edition.subject.split()[0] in page.text
    # The email's "view in browser" link points here.
    sent = memory.outbox[0].data
    assert f"https://news.example.com/archive/{draft}".encode() in quopri.decodestring(sent)


# --- numbers in the console -----------------------------------------------------------------


def test_the_numbers_page_counts_a_sent_edition_behind_a_session(
    settings: Settings,
    engine: Engine,
    seeded: Session,
    draft: int,
    add_subscribers: Callable[..., list[Subscriber]],
) -> None:
    """What the HTTP-Basic admin page showed, now in the console: per-edition numbers, never
    cached, and nothing without a session."""
    from tests.test_console import _user, sign_in

    add_subscribers(3, prefix="num")
    publish.send_edition(
        seeded, edition_id=draft, settings=settings, backend=memory.MemoryBackend()
    )
    _user(seeded, "ops@example.com", "operator")
    with TestClient(
        create_app(settings, engine=engine),
        base_url="https://news.example.com",
        follow_redirects=False,
    ) as c:
        assert c.get("/console/stats").status_code == 303
        sign_in(c, "ops@example.com")
        page = c.get("/console/stats")
        assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
        row = re.search(
            rf"<tr><td><a href=\"/console/editions/{draft}\">#{draft}</a> .*?</tr>", page.text
        )
        assert row and "<td>3</td>" in row.group(0)  # three recipients


def test_over_long_values_get_a_plain_page_that_echoes_nothing(
    client: TestClient, seeded: Session
) -> None:
    page = client.post("/subscribe", data={"email": "x" * 5000 + "@example.com"})
    assert page.status_code == 400 and page.headers["content-type"].startswith("text/html")
    assert "xxxxxxxxxx" not in page.text
    assert seeded.exec(select(Subscriber)).all() == []
    assert client.get("/archive/99999999999999999999999").status_code == 400


def test_one_click_with_an_odd_body_still_unsubscribes(
    client: TestClient, seeded: Session, reader: tuple[int, int]
) -> None:
    response = client.post(f"/u/{token_for(*reader)}", data={"List-Unsubscribe": "x" * 500})
    assert response.status_code == 200
    sub = subscription_of(seeded, "reader0@example.com")
    assert sub is not None and sub.status == "unsubscribed"


def test_a_stranger_cannot_make_us_mail_an_address_that_left_everything(
    client: TestClient, seeded: Session, reader: tuple[int, int]
) -> None:
    client.post(f"/u/{token_for(*reader)}/all")
    page = client.post("/subscribe", data={"email": "reader0@example.com"})
    assert page.status_code == 200 and "Check your inbox" in page.text
    assert memory.outbox == []
    # The person themselves comes back with their own link, and that is recorded.
    client.post(f"/u/{token_for(*reader)}/resubscribe")
    kinds = [k for k, _, _ in events_of(seeded, "reader0@example.com")]
    assert kinds[-3:] == ["suppressed", "unsuppressed", "resubscribed"]


def test_an_expired_confirmation_link_is_refused(client: TestClient, seeded: Session) -> None:
    from datetime import timedelta

    from newsletter.audience.confirmation import CONFIRM_TTL, confirm_token
    from newsletter.storage.models import utcnow

    client.post("/subscribe", data={"email": "late@example.com"})
    person = seeded.exec(select(Subscriber).where(Subscriber.email_key == "late@example.com")).one()
    assert person.id is not None
    signer = TokenSigner([SECRET])
    old = confirm_token(signer, person.id, now=utcnow() - CONFIRM_TTL - timedelta(minutes=1))
    assert client.post(f"/confirm/{old}").status_code == 400
    fresh = confirm_token(signer, person.id)
    assert client.post(f"/confirm/{fresh}").status_code == 200
    sub = subscription_of(seeded, "late@example.com")
    assert sub is not None and sub.status == "active"


def test_concurrent_signups_for_one_address_make_one_subscriber_and_one_email(
    settings: Settings, engine: Engine, seeded: Session
) -> None:
    import threading

    memory.reset()
    app = create_app(settings, engine=engine)
    barrier = threading.Barrier(4)
    codes: list[int] = []

    def post() -> None:
        with TestClient(app) as c:
            barrier.wait()
            codes.append(c.post("/subscribe", data={"email": "race@example.com"}).status_code)

    threads = [threading.Thread(target=post) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert codes == [200] * 4
    assert len(seeded.exec(select(Subscriber)).all()) == 1
    assert [m.recipient for m in memory.outbox] == ["race@example.com"]
