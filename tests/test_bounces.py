"""Bounces and complaints end to end: a signed webhook over HTTP -> stored event -> suppression.

The requests are the providers' recorded payloads (tests/fixtures/webhooks), re-addressed to
our subscribers and signed the way the provider signs them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from newsletter import publish
from newsletter.audience import importing
from newsletter.backends import memory
from newsletter.config import Settings
from newsletter.storage.models import (
    Delivery,
    MailEvent,
    Subscriber,
    Subscription,
    SubscriptionEvent,
)
from newsletter.web.app import create_app
from tests.conftest import IMPORTED_AT

from .test_webhooks import (
    TOPIC,
    Fetcher,
    SNSSigner,
    fixture,
    sns_message,
    sns_signer,  # noqa: F401  (fixture)
)

MAILGUN_KEY = "mailgun-signing-key-for-tests"


@pytest.fixture
def hooks(settings: Settings, engine: Engine, seeded: Session) -> Iterator[TestClient]:
    configured = settings.model_copy(
        update={"webhook_mailgun": MAILGUN_KEY, "webhook_ses": TOPIC, "soft_bounce_limit": 3}
    )
    with TestClient(create_app(configured, engine=engine)) as c:
        yield c


def mailgun(
    name: str,
    *,
    recipient: str,
    event_id: str,
    message_id: str | None = None,
    token: str | None = None,
) -> bytes:
    """A signed Mailgun request; each gets a fresh signature token, as Mailgun's do."""
    payload: dict[str, Any] = json.loads(fixture("mailgun", name))
    data = payload["event-data"]
    data["recipient"] = recipient
    data["id"] = event_id
    if message_id is not None:
        data["message"]["headers"]["message-id"] = message_id
    block = payload["signature"]
    block["token"] = token or secrets.token_hex(25)
    block["timestamp"] = str(int(time.time()))
    block["signature"] = hmac.new(
        MAILGUN_KEY.encode(), (block["timestamp"] + block["token"]).encode(), hashlib.sha256
    ).hexdigest()
    return json.dumps(payload).encode()


def post(client: TestClient, provider: str, body: bytes) -> Any:
    return client.post(
        f"/webhooks/{provider}", content=body, headers={"Content-Type": "application/json"}
    )


def state(session: Session, email: str) -> tuple[str | None, set[str]]:
    session.expire_all()
    person = session.exec(select(Subscriber).where(Subscriber.email_key == email)).one()
    subs = session.exec(select(Subscription).where(Subscription.subscriber_id == person.id)).all()
    return person.suppressed, {s.status for s in subs}


def test_a_hard_bounce_suppresses_at_once_and_is_tied_to_the_edition(
    hooks: TestClient,
    seeded: Session,
    settings: Settings,
    draft: int,
    add_subscribers: Callable[..., list[Subscriber]],
) -> None:
    add_subscribers(2, prefix="hb")
    publish.send_edition(
        seeded, edition_id=draft, settings=settings, backend=memory.MemoryBackend()
    )
    # As an email API would have answered the send: its id for the message.
    delivery = seeded.exec(
        select(Delivery)
        .join(Subscriber, col(Subscriber.id) == Delivery.subscriber_id)
        .where(Subscriber.email_key == "hb0@example.com")
    ).one()
    delivery.provider_message_id = "20261125.abc@mg.example.com"
    seeded.commit()

    body = mailgun(
        "failed-permanent.json",
        recipient="hb0@example.com",
        event_id="ev-1",
        message_id="20261125.abc@mg.example.com",
    )
    response = post(hooks, "mailgun", body)
    assert response.status_code == 200, response.text
    assert response.json() == {"received": 1}
    assert state(seeded, "hb0@example.com") == ("bounced", {"unsubscribed"})
    assert state(seeded, "hb1@example.com") == (None, {"active"})
    event = seeded.exec(select(MailEvent)).one()
    assert (event.kind, event.edition_id, event.delivery_id) == ("bounced_hard", draft, delivery.id)
    unsub = seeded.exec(
        select(SubscriptionEvent).where(SubscriptionEvent.kind == "unsubscribed")
    ).one()
    assert (unsub.source, unsub.edition_id) == ("bounce", draft)

    # The provider retries the same event (a new signature): nothing new happens.
    again = mailgun(
        "failed-permanent.json",
        recipient="hb0@example.com",
        event_id="ev-1",
        message_id="20261125.abc@mg.example.com",
    )
    assert post(hooks, "mailgun", again).status_code == 200
    assert len(seeded.exec(select(MailEvent)).all()) == 1


def test_suppressed_addresses_are_never_re_added_by_an_import(
    hooks: TestClient,
    seeded: Session,
    settings: Settings,
    tmp_path: Any,
    add_subscribers: Callable[..., list[Subscriber]],
) -> None:
    add_subscribers(1, prefix="cx")
    body = mailgun("complained.json", recipient="cx0@example.com", event_id="ev-c")
    assert post(hooks, "mailgun", body).status_code == 200
    assert state(seeded, "cx0@example.com")[0] == "complained"
    csv = tmp_path / "again.csv"
    csv.write_text("email\ncx0@example.com\n")
    importing.import_subscribers(
        seeded, now=IMPORTED_AT, path=csv, default_newsletter=settings.newsletter
    )
    seeded.commit()
    assert state(seeded, "cx0@example.com") == ("complained", {"unsubscribed"})


def test_soft_bounces_suppress_only_after_the_limit_in_a_row(
    hooks: TestClient, seeded: Session, add_subscribers: Callable[..., list[Subscriber]]
) -> None:
    add_subscribers(1, prefix="sb")

    def soft(n: int) -> None:
        body = mailgun("failed-temporary.json", recipient="sb0@example.com", event_id=f"s{n}")
        assert post(hooks, "mailgun", body).status_code == 200

    soft(1)
    soft(2)
    delivered = mailgun("delivered.json", recipient="sb0@example.com", event_id="d1")
    assert post(hooks, "mailgun", delivered).json() == {"received": 1}  # resets the count
    soft(3)
    soft(4)
    assert state(seeded, "sb0@example.com") == (None, {"active"})
    soft(5)  # third in a row
    assert state(seeded, "sb0@example.com") == ("bounced", {"unsubscribed"})


def test_forged_or_unconfigured_webhooks_change_nothing(
    hooks: TestClient, seeded: Session, add_subscribers: Callable[..., list[Subscriber]]
) -> None:
    add_subscribers(1, prefix="fg")
    genuine = mailgun("failed-permanent.json", recipient="fg0@example.com", event_id="f1")
    forged = genuine.replace(b'"signature": "', b'"signature": "00', 1)
    assert post(hooks, "mailgun", forged).status_code == 401
    stale: dict[str, Any] = json.loads(genuine)
    stale["signature"]["timestamp"] = str(int(time.time()) - 3600)
    assert post(hooks, "mailgun", json.dumps(stale).encode()).status_code == 401
    assert post(hooks, "postmark", genuine).status_code == 404  # no secret configured
    assert post(hooks, "nosuch", genuine).status_code == 404
    assert seeded.exec(select(MailEvent)).all() == []
    assert state(seeded, "fg0@example.com") == (None, {"active"})


def test_ses_subscription_request_is_confirmed_and_notifications_apply(
    settings: Settings,
    engine: Engine,
    seeded: Session,
    sns_signer: SNSSigner,  # noqa: F811
    add_subscribers: Callable[..., list[Subscriber]],
) -> None:
    add_subscribers(1, prefix="ses")
    fetched = Fetcher(sns_signer.pem)
    configured = settings.model_copy(update={"webhook_ses": TOPIC})
    with TestClient(create_app(configured, engine=engine, sns_get=fetched)) as client:
        confirm = sns_message("subscription-confirmation.json")
        assert post(client, "ses", sns_signer.sign(confirm)).status_code == 200
        assert confirm["SubscribeURL"] in fetched.urls  # the subscription was confirmed

        note = sns_message("bounce-permanent.json")
        event = json.loads(note["Message"])
        event["bounce"]["bouncedRecipients"] = [{"emailAddress": "ses0@example.com"}]
        note["Message"] = json.dumps(event)
        assert post(client, "ses", sns_signer.sign(note)).json() == {"received": 1}

        other_topic = dict(note, TopicArn=TOPIC + "-other", MessageId="x")
        assert post(client, "ses", sns_signer.sign(other_topic)).status_code == 401
    assert state(seeded, "ses0@example.com") == ("bounced", {"unsubscribed"})


def test_a_captured_mailgun_request_cannot_be_replayed_with_other_events(
    hooks: TestClient,
    seeded: Session,
    add_subscribers: Callable[..., list[Subscriber]],
) -> None:
    """Mailgun signs timestamp + token only. Before, a captured genuine request re-posted within
    its 10 minutes with attacker event-data (a complaint for anyone, a new id) got 200 and
    suppressed that person for good."""
    add_subscribers(2, prefix="rp")
    genuine = mailgun(
        "delivered.json", recipient="rp0@example.com", event_id="ev-g", token="t" * 50
    )
    assert post(hooks, "mailgun", genuine).status_code == 200
    forged = json.loads(
        mailgun("complained.json", recipient="rp1@example.com", event_id="ev-x", token="t" * 50)
    )
    forged["signature"] = json.loads(genuine)["signature"]  # the captured signature block
    answer = post(hooks, "mailgun", json.dumps(forged).encode())
    assert answer.status_code == 401 and "replayed" in answer.text
    assert state(seeded, "rp1@example.com") == (None, {"active"})
    assert len(seeded.exec(select(MailEvent)).all()) == 1


def test_the_answer_does_not_say_whether_an_address_is_on_the_list(
    hooks: TestClient, seeded: Session, add_subscribers: Callable[..., list[Subscriber]]
) -> None:
    add_subscribers(1, prefix="known")
    on_list = post(
        hooks, "mailgun", mailgun("complained.json", recipient="known0@example.com", event_id="a")
    )
    stranger = post(
        hooks, "mailgun", mailgun("complained.json", recipient="nobody@example.com", event_id="b")
    )
    assert on_list.status_code == stranger.status_code == 200
    assert on_list.json() == stranger.json() == {"received": 1}
