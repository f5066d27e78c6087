"""The admin page's buttons: approve, pause, resume, cancel, retry failures, and the guards in
front of them (password, signed form tokens, cross-site requests, confirmations)."""

from __future__ import annotations

import html
import re
import time
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session

from newsletter import ledger, publish, store
from newsletter.backends import memory
from newsletter.config import Settings
from newsletter.models import DeliveryStatus, EditionStatus, Subscriber
from newsletter.web.app import create_app
from newsletter.web.forms import MAX_AGE, form_token, form_token_ok

from .conftest import SECRET

PASSWORD = "s3cret-admin-password"
AUTH = ("admin", PASSWORD)


@pytest.fixture
def admin(settings: Settings, engine: Engine, seeded: Session) -> Iterator[TestClient]:
    configured = settings.model_copy(update={"admin_password": PASSWORD})
    with TestClient(create_app(configured, engine=engine)) as c:
        yield c


@pytest.fixture
def sending(
    seeded: Session,
    settings: Settings,
    draft: int,
    add_subscribers: Callable[..., list[Subscriber]],
) -> int:
    """An edition that started sending: 4 pending deliveries."""
    add_subscribers(4, prefix="adm")
    publish.start_edition(seeded, edition_id=draft, settings=settings)
    return draft


def _form(page: str, edition_id: int, action: str) -> dict[str, str]:
    """The fields of one button's form, as the page rendered them."""
    match = re.search(
        rf'<form method="post" action="[^"]*/admin/editions/{edition_id}/{action}">\s*'
        r'<input type="hidden" name="token" value="([^"]+)">',
        page,
    )
    assert match, f"no {action} button for edition {edition_id}"
    return {"token": html.unescape(match.group(1))}


def _status(session: Session, edition_id: int) -> str:
    session.expire_all()
    return store.get_edition(session, edition_id=edition_id).status


def test_pause_then_resume_from_the_page(admin: TestClient, sending: int, seeded: Session) -> None:
    page = admin.get("/admin", auth=AUTH).text
    assert f"#{sending} " in page and 'http-equiv="refresh"' in page  # a send is live
    assert "/resume" not in page
    done = admin.post(
        f"/admin/editions/{sending}/pause",
        data=_form(page, sending, "pause"),
        auth=AUTH,
        follow_redirects=False,
    )
    assert done.status_code == 303 and done.headers["location"].endswith(
        f"/admin?done=pause&edition={sending}"
    )
    assert _status(seeded, sending) == EditionStatus.paused
    edition = store.get_edition(seeded, edition_id=sending)
    assert edition.status_reason == "paused by an operator (admin page)"
    page = admin.get(done.headers["location"].split("testserver")[-1], auth=AUTH).text
    assert f"Edition {sending} paused" in page and "/pause" not in page
    admin.post(f"/admin/editions/{sending}/resume", data=_form(page, sending, "resume"), auth=AUTH)
    assert _status(seeded, sending) == EditionStatus.sending
    history = [(e.action, e.actor) for e in store.edition_events(seeded, edition_id=sending)]
    assert history == [
        ("resumed", "admin page"),
        ("paused", "admin page"),
        ("started", "operator"),  # publish.start_edition called without an actor
    ]
    page = admin.get("/admin", auth=AUTH).text
    assert "resumed by admin page" in page and "paused by admin page: paused by an operator" in page


def test_cancel_needs_the_confirmation_box(
    admin: TestClient, sending: int, seeded: Session
) -> None:
    page = admin.get("/admin", auth=AUTH).text
    form = _form(page, sending, "cancel")
    refused = admin.post(f"/admin/editions/{sending}/cancel", data=form, auth=AUTH)
    assert refused.status_code == 400 and "Tick the box" in refused.text
    assert _status(seeded, sending) == EditionStatus.sending
    admin.post(f"/admin/editions/{sending}/cancel", data={**form, "confirm": "yes"}, auth=AUTH)
    assert _status(seeded, sending) == EditionStatus.cancelled


def test_forged_expired_or_cross_site_forms_do_nothing(
    admin: TestClient, sending: int, seeded: Session
) -> None:
    page = admin.get("/admin", auth=AUTH).text
    good = _form(page, sending, "pause")
    url = f"/admin/editions/{sending}/pause"
    other_key = form_token("another-secret", action="pause", target=sending, now=time.time())
    for_cancel = form_token(SECRET, action="cancel", target=sending, now=time.time())
    for_other_edition = form_token(SECRET, action="pause", target=sending + 1, now=time.time())
    stale = form_token(SECRET, action="pause", target=sending, now=time.time() - MAX_AGE - 5)
    for token in ("", "123.abc", other_key, for_cancel, for_other_edition, stale):
        answer = admin.post(url, data={"token": token}, auth=AUTH)
        assert answer.status_code == 403 and "nothing was done" in answer.text
    cross = admin.post(url, data=good, auth=AUTH, headers={"Sec-Fetch-Site": "cross-site"})
    assert cross.status_code == 403 and "another site" in cross.text
    assert admin.post(url, data=good).status_code == 401  # no password, no action
    assert _status(seeded, sending) == EditionStatus.sending
    assert admin.post(f"/admin/editions/{sending}/delete", data=good, auth=AUTH).status_code == 404


def test_an_action_the_state_does_not_allow_says_why(
    admin: TestClient, sending: int, seeded: Session
) -> None:
    resume = {"token": form_token(SECRET, action="resume", target=sending, now=time.time())}
    answer = admin.post(f"/admin/editions/{sending}/resume", data=resume, auth=AUTH)
    assert answer.status_code == 409 and "resume is not possible now" in answer.text
    assert _form(answer.text, sending, "pause")  # the page it answers with has the right button
    assert _status(seeded, sending) == EditionStatus.sending


def test_approve_a_draft(admin: TestClient, draft: int, seeded: Session) -> None:
    page = admin.get("/admin", auth=AUTH).text
    assert 'http-equiv="refresh"' not in page  # nothing is sending
    admin.post(f"/admin/editions/{draft}/approve", data=_form(page, draft, "approve"), auth=AUTH)
    seeded.expire_all()
    edition = store.get_edition(seeded, edition_id=draft)
    assert edition.approved_at is not None and edition.approved_by == "admin page"
    page = admin.get("/admin", auth=AUTH).text
    assert f"/admin/editions/{draft}/approve" not in page and "approved by admin page" in page


def test_retry_failed_from_the_page_and_unknown_only_when_ticked(
    admin: TestClient,
    seeded: Session,
    settings: Settings,
    draft: int,
    add_subscribers: Callable[..., list[Subscriber]],
) -> None:
    people = add_subscribers(3, prefix="retry")
    backend = memory.MemoryBackend(
        reject=frozenset({people[0].email}), lose=frozenset({people[1].email})
    )
    publish.send_edition(seeded, edition_id=draft, settings=settings, backend=backend, wait=True)
    counts = ledger.counts(seeded, edition_id=draft)
    assert counts[DeliveryStatus.failed] == 1 and counts[DeliveryStatus.unknown] == 1
    page = admin.get("/admin", auth=AUTH).text
    assert "Retry failed (1)" in page and "also the 1 unknown" in page
    done = admin.post(
        f"/admin/editions/{draft}/retry-failed",
        data=_form(page, draft, "retry-failed"),
        auth=AUTH,
        follow_redirects=False,
    )
    page = admin.get(done.headers["location"].split("news.example.com")[-1], auth=AUTH).text
    counts = ledger.counts(seeded, edition_id=draft)
    assert counts[DeliveryStatus.pending] == 1 and counts[DeliveryStatus.unknown] == 1
    assert _status(seeded, draft) == EditionStatus.sending  # workers pick it up again
    assert f"Edition {draft} re-queued 1 delivery;" in page
    # Only the unknown one left to retry: the button says so and needs no box.
    publish.send_edition(
        seeded,
        edition_id=draft,
        settings=settings,
        backend=memory.MemoryBackend(lose=frozenset({people[1].email})),
        wait=True,
    )
    page = admin.get("/admin", auth=AUTH).text
    assert "Re-send unknown (1)" in page and "Retry failed" not in page
    admin.post(
        f"/admin/editions/{draft}/retry-failed",
        data={**_form(page, draft, "retry-failed"), "include_unknown": "yes"},
        auth=AUTH,
    )
    assert ledger.counts(seeded, edition_id=draft)[DeliveryStatus.pending] == 1


def test_a_form_from_an_earlier_state_does_nothing_now(
    admin: TestClient,
    seeded: Session,
    settings: Settings,
    draft: int,
    add_subscribers: Callable[..., list[Subscriber]],
) -> None:
    """A retry taken while the edition was sending, posted after it was cancelled: refused
    (nothing would ever send what it re-queued)."""
    people = add_subscribers(2, prefix="late")
    backend = memory.MemoryBackend(reject=frozenset({people[0].email}))
    publish.send_edition(seeded, edition_id=draft, settings=settings, backend=backend)
    page = admin.get("/admin", auth=AUTH).text
    retry = _form(page, draft, "retry-failed")
    publish.retry_failed(seeded, edition_id=draft)  # back to sending
    publish.cancel_edition(seeded, edition_id=draft)
    answer = admin.post(f"/admin/editions/{draft}/retry-failed", data=retry, auth=AUTH)
    assert answer.status_code == 409 and "retry-failed is not possible now" in answer.text
    assert ledger.counts(seeded, edition_id=draft)[DeliveryStatus.pending] == 1  # unchanged
    with pytest.raises(publish.EditionStateError, match="nothing to retry"):
        publish.retry_failed(seeded, edition_id=draft)  # the CLI's way in says no too


def test_odd_tokens_and_ids_are_refused_not_crashed_on(admin: TestClient, sending: int) -> None:
    for token in ("\u00b2.", "\u0661\u0662.abc", "-1.abc", " 1.abc"):
        answer = admin.post(f"/admin/editions/{sending}/pause", data={"token": token}, auth=AUTH)
        assert answer.status_code == 403, token
    huge = 2**63
    token = form_token(SECRET, action="pause", target=huge, now=time.time())
    for edition_id in (huge, 2**31, 0, -1):
        answer = admin.post(f"/admin/editions/{edition_id}/pause", data={"token": token}, auth=AUTH)
        assert 400 <= answer.status_code < 500, edition_id


def test_a_refused_page_refreshes_to_the_admin_page_not_to_the_post(
    admin: TestClient, sending: int
) -> None:
    resume = {"token": form_token(SECRET, action="resume", target=sending, now=time.time())}
    answer = admin.post(f"/admin/editions/{sending}/resume", data=resume, auth=AUTH)
    assert answer.status_code == 409
    refresh = re.search(r'http-equiv="refresh" content="15;url=([^"]+)"', answer.text)
    assert refresh and refresh.group(1).endswith("/admin")


def test_hostile_subjects_and_errors_are_escaped(
    admin: TestClient, seeded: Session, draft: int
) -> None:
    edition = store.get_edition(seeded, edition_id=draft)
    edition.subject = '<script>alert(1)</script> & "quotes"'
    seeded.commit()
    page = admin.get("/admin", auth=AUTH).text
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp;" in page


def test_form_tokens() -> None:
    now = 1_800_000_000.0
    token = form_token("k" * 40, action="pause", target=7, now=now)
    assert form_token_ok("k" * 40, token, action="pause", target=7, now=now + 60)
    assert not form_token_ok("k" * 40, token, action="pause", target=7, now=now + MAX_AGE + 1)
    assert form_token_ok("k" * 40, token, action="pause", target=7, now=now - 10)  # clock skew
    assert not form_token_ok("k" * 40, token, action="pause", target=7, now=now - 600)  # future
    assert not form_token_ok("k" * 40, token, action="resume", target=7, now=now)
    assert not form_token_ok("k" * 40, token, action="pause", target=8, now=now)
    assert not form_token_ok("j" * 40, token, action="pause", target=7, now=now)
    assert not form_token_ok("k" * 40, token + "0", action="pause", target=7, now=now)
    assert not form_token_ok("k" * 40, "9" * 40 + "." + token, action="pause", target=7, now=now)
