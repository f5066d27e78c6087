"""Operators' buttons on a send in the console: pause, resume, cancel, retry failures, and the
guards in front of them (a session, the role, the CSRF token, same-site requests, the
confirmation box, the edition's state now). They replaced the HTTP-Basic ``/admin`` page."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session

from newsletter import publish
from newsletter.backends import memory
from newsletter.config import Settings
from newsletter.operations import audit
from newsletter.sending import ledger
from newsletter.storage import store
from newsletter.storage.models import DeliveryStatus, EditionStatus, Subscriber
from newsletter.web.app import create_app

from .test_console import Clock, _user, sign_in


@pytest.fixture
def ops(
    settings: Settings, engine: Engine, seeded: Session, clock: Clock
) -> Iterator[tuple[TestClient, str]]:
    """A console client signed in as an operator, with its CSRF token."""
    _user(seeded, "ops@example.com", "operator")
    with TestClient(
        create_app(settings, engine=engine, clock=clock),
        base_url="https://news.example.com",
        follow_redirects=False,
    ) as c:
        yield c, sign_in(c, "ops@example.com")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sending(
    seeded: Session,
    settings: Settings,
    draft: int,
    add_subscribers: Callable[..., list[Subscriber]],
) -> int:
    """An edition that started sending: 4 pending deliveries."""
    add_subscribers(4, prefix="ops")
    publish.start_edition(seeded, edition_id=draft, settings=settings)
    return draft


def _status(session: Session, edition_id: int) -> str:
    session.expire_all()
    return store.get_edition(session, edition_id=edition_id).status


def _buttons(page: str, edition_id: int) -> list[str]:
    return re.findall(rf'action="/console/editions/{edition_id}/send/([a-z-]+)"', page)


def test_pause_then_resume_from_the_page(
    ops: tuple[TestClient, str], sending: int, seeded: Session
) -> None:
    client, csrf = ops
    page = client.get(f"/console/editions/{sending}").text
    assert 'http-equiv="refresh" content="15"' in page  # a live send reloads itself
    assert _buttons(page, sending) == ["pause", "cancel"]
    done = client.post(f"/console/editions/{sending}/send/pause", data={"csrf": csrf})
    assert done.status_code == 303
    assert done.headers["location"] == f"/console/editions/{sending}?done=pause"
    assert _status(seeded, sending) == EditionStatus.paused
    edition = store.get_edition(seeded, edition_id=sending)
    assert edition.status_reason == "paused by ops@example.com"
    page = client.get(done.headers["location"]).text
    assert "Paused: senders stop within one batch." in page
    assert _buttons(page, sending) == ["resume", "cancel"]
    assert 'http-equiv="refresh"' not in page
    client.post(f"/console/editions/{sending}/send/resume", data={"csrf": csrf})
    assert _status(seeded, sending) == EditionStatus.sending
    history = [(e.action, e.actor) for e in store.edition_events(seeded, edition_id=sending)]
    assert history == [
        ("resumed", "ops@example.com (console)"),
        ("paused", "ops@example.com (console)"),
        ("started", "operator"),  # publish.start_edition called without an actor
    ]
    page = client.get(f"/console/editions/{sending}").text
    assert "resumed" in page and "paused by ops@example.com" in page
    actions = [e.action for e in audit.recent(seeded, target=f"edition {sending}")]
    assert actions == ["edition.resume", "edition.pause"]


def test_cancel_needs_the_confirmation_box(
    ops: tuple[TestClient, str], sending: int, seeded: Session
) -> None:
    client, csrf = ops
    url = f"/console/editions/{sending}/send/cancel"
    refused = client.post(url, data={"csrf": csrf})
    assert refused.status_code == 400 and "Tick the box" in refused.text
    assert _status(seeded, sending) == EditionStatus.sending
    assert client.post(url, data={"csrf": csrf, "confirm": "yes"}).status_code == 303
    assert _status(seeded, sending) == EditionStatus.cancelled


def test_forged_cross_site_or_unsigned_forms_do_nothing(
    ops: tuple[TestClient, str], sending: int, seeded: Session, settings: Settings, engine: Engine
) -> None:
    client, csrf = ops
    url = f"/console/editions/{sending}/send/pause"
    for token in ("", "123.abc", csrf + "0", csrf[:-1]):
        assert client.post(url, data={"csrf": token}).status_code == 403
    cross = client.post(url, data={"csrf": csrf}, headers={"Sec-Fetch-Site": "cross-site"})
    assert cross.status_code == 403
    with TestClient(create_app(settings, engine=engine), follow_redirects=False) as stranger:
        answer = stranger.post(url, data={"csrf": csrf})
        assert answer.status_code == 303 and answer.headers["location"] == "/console/login"
    assert _status(seeded, sending) == EditionStatus.sending
    assert (
        client.post(f"/console/editions/{sending}/send/delete", data={"csrf": csrf}).status_code
        == 404
    )


def test_an_editor_may_not_touch_a_send(
    settings: Settings, engine: Engine, sending: int, seeded: Session
) -> None:
    _user(seeded, "ed@example.com", "editor")
    client = TestClient(
        create_app(settings, engine=engine),
        base_url="https://news.example.com",
        follow_redirects=False,
    )
    csrf = sign_in(client, "ed@example.com")
    assert _buttons(client.get(f"/console/editions/{sending}").text, sending) == []
    refused = client.post(f"/console/editions/{sending}/send/pause", data={"csrf": csrf})
    assert refused.status_code == 403 and "editor may not do this" in refused.text
    assert _status(seeded, sending) == EditionStatus.sending


def test_an_action_the_state_does_not_allow_says_why(
    ops: tuple[TestClient, str], sending: int, seeded: Session
) -> None:
    client, csrf = ops
    answer = client.post(f"/console/editions/{sending}/send/resume", data={"csrf": csrf})
    assert answer.status_code == 409 and "resume is not possible now" in answer.text
    assert "pause" in _buttons(answer.text, sending)  # the page it answers with is current
    assert _status(seeded, sending) == EditionStatus.sending


def test_retry_failed_from_the_page_and_unknown_only_when_ticked(
    ops: tuple[TestClient, str],
    seeded: Session,
    settings: Settings,
    draft: int,
    add_subscribers: Callable[..., list[Subscriber]],
) -> None:
    client, csrf = ops
    people = add_subscribers(3, prefix="retry")
    backend = memory.MemoryBackend(
        reject=frozenset({people[0].email}), lose=frozenset({people[1].email})
    )
    publish.send_edition(
        seeded,
        edition_id=draft,
        settings=settings,
        backend=backend,
        options=publish.SendOptions(wait=True),
    )
    counts = ledger.counts(seeded, edition_id=draft)
    assert counts[DeliveryStatus.failed] == 1 and counts[DeliveryStatus.unknown] == 1
    page = client.get(f"/console/editions/{draft}").text
    assert "Retry failed (1)" in page and "also the 1 unknown" in page
    assert 'id="unknown"' in page and 'id="errors"' in page and people[0].email in page
    done = client.post(f"/console/editions/{draft}/send/retry-failed", data={"csrf": csrf})
    assert done.status_code == 303
    counts = ledger.counts(seeded, edition_id=draft)
    assert counts[DeliveryStatus.pending] == 1 and counts[DeliveryStatus.unknown] == 1
    assert _status(seeded, draft) == EditionStatus.sending  # workers pick it up again
    # Only the unknown one left to retry: the button says so and needs no box.
    publish.send_edition(
        seeded,
        edition_id=draft,
        settings=settings,
        backend=memory.MemoryBackend(lose=frozenset({people[1].email})),
        options=publish.SendOptions(wait=True),
    )
    page = client.get(f"/console/editions/{draft}").text
    assert "Re-send unknown (1)" in page and "Retry failed" not in page
    client.post(
        f"/console/editions/{draft}/send/retry-failed",
        data={"csrf": csrf, "include_unknown": "yes"},
    )
    assert ledger.counts(seeded, edition_id=draft)[DeliveryStatus.pending] == 1


def test_a_form_from_an_earlier_state_does_nothing_now(
    ops: tuple[TestClient, str],
    seeded: Session,
    settings: Settings,
    draft: int,
    add_subscribers: Callable[..., list[Subscriber]],
) -> None:
    """A retry taken while the edition was sending, posted after it was cancelled: refused
    (nothing would ever send what it re-queued)."""
    client, csrf = ops
    people = add_subscribers(2, prefix="late")
    backend = memory.MemoryBackend(reject=frozenset({people[0].email}))
    publish.send_edition(seeded, edition_id=draft, settings=settings, backend=backend)
    assert "retry-failed" in _buttons(client.get(f"/console/editions/{draft}").text, draft)
    publish.retry_failed(seeded, edition_id=draft)  # back to sending
    publish.cancel_edition(seeded, edition_id=draft)
    answer = client.post(f"/console/editions/{draft}/send/retry-failed", data={"csrf": csrf})
    assert answer.status_code == 409 and "retry-failed is not possible now" in answer.text
    assert ledger.counts(seeded, edition_id=draft)[DeliveryStatus.pending] == 1  # unchanged


def test_odd_ids_are_refused_not_crashed_on(ops: tuple[TestClient, str], sending: int) -> None:
    client, csrf = ops
    for edition_id in (2**63, 2**31, 0, -1, "x"):
        answer = client.post(f"/console/editions/{edition_id}/send/pause", data={"csrf": csrf})
        assert 400 <= answer.status_code < 500, edition_id


def test_hostile_subjects_and_errors_are_escaped(
    ops: tuple[TestClient, str], seeded: Session, draft: int
) -> None:
    client, _ = ops
    edition = store.get_edition(seeded, edition_id=draft)
    edition.subject = '<script>alert(1)</script> & "quotes"'
    seeded.commit()
    for path in ("/console", f"/console/editions/{draft}"):
        page = client.get(path).text
        assert "<script>alert(1)</script>" not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp;" in page


def test_the_old_admin_address_leads_to_the_console(ops: tuple[TestClient, str]) -> None:
    client, _ = ops
    moved = client.get("/admin")
    assert moved.status_code == 301 and moved.headers["location"] == "/console"
    assert client.get("/admin/editions/1/pause").status_code == 404
