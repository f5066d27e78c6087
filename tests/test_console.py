"""The editors' console over HTTP: sign-in, sessions, roles, CSRF, and the draft's actions."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, select

from newsletter.backends import memory
from newsletter.config import Settings
from newsletter.operations import accounts, audit
from newsletter.storage import store
from newsletter.storage.models import AuditEvent, ConsoleSession, Subscriber, User
from newsletter.web.app import create_app

NOW = datetime(2026, 11, 24, 9, tzinfo=UTC)
PASSWORD = "correct horse battery staple 42"


class Clock:
    def __init__(self) -> None:
        self.at = NOW

    def __call__(self) -> datetime:
        return self.at


@pytest.fixture
def clock() -> Clock:
    return Clock()


def _user(session: Session, email: str, role: str) -> User:
    user, token = accounts.add_user(session, email=email, role=role, now=NOW)
    accounts.set_password(session, token=token, password=PASSWORD, now=NOW)
    session.commit()
    return user


@pytest.fixture
def client(
    settings: Settings, engine: Engine, seeded: Session, clock: Clock
) -> Iterator[TestClient]:
    with TestClient(
        create_app(settings, engine=engine, clock=clock),
        base_url="https://news.example.com",
        follow_redirects=False,
    ) as c:
        yield c


def sign_in(client: TestClient, email: str, password: str = PASSWORD) -> str:
    """Signs in; the session's CSRF token, read from a console page."""
    answer = client.post("/console/login", data={"email": email, "password": password})
    assert answer.status_code == 303, answer.text
    page = client.get("/console").text
    match = re.search(r'name="csrf" value="([^"]+)"', page)
    assert match, page
    return match.group(1)


def test_every_console_page_needs_a_session(client: TestClient, draft: int) -> None:
    for path in ("/console", f"/console/editions/{draft}"):
        answer = client.get(path)
        assert answer.status_code == 303 and answer.headers["location"] == "/console/login"
    refused = client.post(f"/console/editions/{draft}/approve", data={"csrf": "x"})
    assert refused.status_code == 303 and refused.headers["location"] == "/console/login"


def test_sign_in_sets_a_private_cookie_and_a_wrong_password_says_nothing_more(
    client: TestClient, seeded: Session
) -> None:
    _user(seeded, "ed@example.com", "editor")
    wrong = client.post("/console/login", data={"email": "ed@example.com", "password": "nope"})
    unknown = client.post("/console/login", data={"email": "x@example.com", "password": "nope"})
    assert wrong.status_code == unknown.status_code == 401
    assert "do not match" in wrong.text and "do not match" in unknown.text
    ok = client.post("/console/login", data={"email": "ED@example.com", "password": PASSWORD})
    assert ok.status_code == 303
    cookie = ok.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Secure" in cookie
    assert "Path=/console" in cookie
    token = client.cookies.get("nl_console")
    assert token and seeded.get(ConsoleSession, accounts.token_hash(token)) is not None
    kept = seeded.exec(select(ConsoleSession)).first()
    assert kept is not None and kept.token_hash != token  # only a hash kept


def test_failed_sign_ins_are_throttled_per_account(client: TestClient, seeded: Session) -> None:
    _user(seeded, "ed@example.com", "editor")
    assert isinstance(client.app, FastAPI)
    client.app.state.web.account_failures.limit = 3
    for _ in range(3):
        client.post("/console/login", data={"email": "ed@example.com", "password": "nope"})
    blocked = client.post("/console/login", data={"email": "ed@example.com", "password": PASSWORD})
    assert blocked.status_code == 429  # not even the right password gets in now


def test_sessions_expire_when_idle_and_end_at_sign_out(
    client: TestClient, seeded: Session, clock: Clock
) -> None:
    _user(seeded, "ed@example.com", "editor")
    csrf = sign_in(client, "ed@example.com")
    clock.at += accounts.IDLE + timedelta(minutes=1)
    assert client.get("/console").status_code == 303
    clock.at = NOW
    csrf = sign_in(client, "ed@example.com")
    out = client.post("/console/logout", data={"csrf": csrf})
    assert out.status_code == 303
    assert client.get("/console").status_code == 303


def seen_of(client: TestClient, draft: int) -> str:
    """The draft page's digest of what it shows (the approve form carries it)."""
    found = re.search(
        r'name="seen" value="([0-9a-f]+)"', client.get(f"/console/editions/{draft}").text
    )
    assert found is not None
    return found.group(1)


def test_forms_need_the_session_token_and_same_site(
    client: TestClient, seeded: Session, draft: int
) -> None:
    _user(seeded, "ed@example.com", "editor")
    csrf = sign_in(client, "ed@example.com")
    forged = client.post(f"/console/editions/{draft}/approve", data={"csrf": "forged"})
    cross = client.post(
        f"/console/editions/{draft}/approve",
        data={"csrf": csrf},
        headers={"Sec-Fetch-Site": "cross-site"},
    )
    assert forged.status_code == cross.status_code == 403
    assert store.get_edition(seeded, edition_id=draft).approved_at is None


def test_roles_decide_what_a_person_may_do(client: TestClient, seeded: Session, draft: int) -> None:
    _user(seeded, "ops@example.com", "operator")
    csrf = sign_in(client, "ops@example.com")
    page = client.get(f"/console/editions/{draft}").text
    assert "Approve</button>" not in page and "Send me a test" not in page
    refused = client.post(f"/console/editions/{draft}/approve", data={"csrf": csrf})
    assert refused.status_code == 403 and "operator may not do this" in refused.text


def test_an_editor_sees_the_draft_tests_it_and_approves_it(
    client: TestClient, seeded: Session, draft: int
) -> None:
    _user(seeded, "ed@example.com", "editor")
    csrf = sign_in(client, "ed@example.com")
    listing = client.get("/console").text
    assert f"/console/editions/{draft}" in listing and "2026-W48" in listing
    page = client.get(f"/console/editions/{draft}").text
    assert page.count("<iframe") == 4 and 'sandbox srcdoc="' in page
    assert "@media all" in page  # the dark previews apply the email's own dark rules
    assert "✓ size" in page and "bytes as sent" in page
    memory.reset()
    sent = client.post(
        f"/console/editions/{draft}/test", data={"csrf": csrf, "to": "ed@example.com"}
    )
    assert sent.status_code == 303
    assert [m.recipient for m in memory.outbox] == ["ed@example.com"]
    approved = client.post(
        f"/console/editions/{draft}/approve",
        data={"csrf": csrf, "seen": seen_of(client, draft)},
    )
    assert approved.status_code == 303
    seeded.expire_all()
    edition = store.get_edition(seeded, edition_id=draft)
    assert edition.approved_at is not None and edition.approved_by == "ed@example.com"
    actions = [e.action for e in audit.recent(seeded, target=f"edition {draft}")]
    assert actions == ["edition.approve", "edition.test"]


def test_approval_waits_for_a_failing_check_unless_an_admin_overrides_it(
    settings: Settings, engine: Engine, seeded: Session, draft: int, clock: Clock
) -> None:
    plain = settings.model_copy(update={"base_url": "http://news.example.com"})
    _user(seeded, "ed@example.com", "editor")
    _user(seeded, "boss@example.com", "admin")
    with TestClient(
        create_app(plain, engine=engine, clock=clock),
        base_url="http://news.example.com",
        follow_redirects=False,
    ) as c:
        csrf = sign_in(c, "ed@example.com")
        refused = c.post(
            f"/console/editions/{draft}/approve", data={"csrf": csrf, "seen": seen_of(c, draft)}
        )
        assert refused.status_code == 409 and "links failed" in refused.text
        c.post("/console/logout", data={"csrf": csrf})
        csrf = sign_in(c, "boss@example.com")
        approved = c.post(
            f"/console/editions/{draft}/approve",
            data={
                "csrf": csrf,
                "override": "staging server, links fixed at send",
                "seen": seen_of(c, draft),
            },
        )
        assert approved.status_code == 303
    seeded.expire_all()
    assert store.get_edition(seeded, edition_id=draft).approved_at is not None
    event = seeded.exec(select(AuditEvent).where(AuditEvent.action == "edition.approve")).one()
    assert event.actor == "boss@example.com" and "staging server" in (event.detail or "")


def test_a_set_password_link_works_once_and_refuses_weak_passwords(
    client: TestClient, seeded: Session
) -> None:
    _, token = accounts.add_user(seeded, email="new@example.com", role="editor", now=NOW)
    seeded.commit()
    assert "new@example.com" in client.get(f"/console/password/{token}").text
    weak = client.post(f"/console/password/{token}", data={"password": "password123"})
    assert weak.status_code == 400 and "common" in weak.text
    ok = client.post(f"/console/password/{token}", data={"password": PASSWORD})
    assert ok.status_code == 303
    again = client.post(f"/console/password/{token}", data={"password": PASSWORD + "x"})
    assert again.status_code == 400 and "not valid any more" in again.text
    sign_in(client, "new@example.com")


def test_subscriber_tokens_open_no_console_page(
    client: TestClient, seeded: Session, settings: Settings
) -> None:
    """An unsubscribe token (a genuine one) set as the console cookie opens nothing."""
    from newsletter import publish

    genuine = publish.signer_for(settings).unsubscribe(
        subscriber_id=1, newsletter_id=1, edition_id=None
    )
    client.cookies.set("nl_console", genuine)
    assert client.get("/console").status_code == 303


def test_an_operator_finds_a_subscriber_exports_and_erases_them(
    client: TestClient,
    seeded: Session,
    add_subscribers: Callable[..., list[Subscriber]],
) -> None:
    (person,) = add_subscribers(1, prefix="kim")
    _user(seeded, "ops@example.com", "operator")
    csrf = sign_in(client, "ops@example.com")
    found = client.get("/console/subscribers", params={"q": "KIM0"}).text
    assert f"/console/subscribers/{person.id}" in found
    # % and _ are what a person typed, not wildcards: "k_m" is not "kim".
    for literal in ("k_m", "k%0"):
        page = client.get("/console/subscribers", params={"q": literal}).text
        assert f"/console/subscribers/{person.id}" not in page
    page = client.get(f"/console/subscribers/{person.id}").text
    assert "kim0@example.com" in page and "active" in page
    exported = client.get(f"/console/subscribers/{person.id}/export.json")
    assert exported.status_code == 200 and exported.json()["subscriber"]["email"] == (
        "kim0@example.com"
    )
    listing = client.get("/console/newsletters/weekly-ai-tool-verdicts/export.csv")
    assert listing.text.splitlines() == ["email,name,timezone", "kim0@example.com,,"]
    unticked = client.post(f"/console/subscribers/{person.id}/erase", data={"csrf": csrf})
    assert unticked.status_code == 400
    erased = client.post(
        f"/console/subscribers/{person.id}/erase", data={"csrf": csrf, "confirm": "yes"}
    )
    assert erased.status_code == 303
    seeded.expire_all()
    assert seeded.get_one(Subscriber, person.id).email != "kim0@example.com"
    actions = [e.action for e in audit.recent(seeded, target=f"subscriber {person.id}")]
    assert actions == ["subscriber.erase", "subscriber.export"]


def test_editors_see_no_subscriber_data(client: TestClient, seeded: Session) -> None:
    _user(seeded, "ed@example.com", "editor")
    sign_in(client, "ed@example.com")
    assert client.get("/console/subscribers", params={"q": "a"}).status_code == 403
    assert client.get("/console/newsletters/weekly-ai-tool-verdicts/export.csv").status_code == 403


def test_an_operator_sends_a_draft_now(
    client: TestClient,
    seeded: Session,
    draft: int,
    add_subscribers: Callable[..., list[Subscriber]],
) -> None:
    add_subscribers(2, prefix="now")
    _user(seeded, "ops@example.com", "operator")
    csrf = sign_in(client, "ops@example.com")
    assert "Send now" in client.get(f"/console/editions/{draft}").text
    started = client.post(f"/console/editions/{draft}/start", data={"csrf": csrf})
    assert started.status_code == 303
    assert store.edition_status(seeded, edition_id=draft) == "sending"
    event = audit.recent(seeded, target=f"edition {draft}")[0]
    assert event.action == "edition.start" and '"recipients": 2' in (event.detail or "")


def test_an_operator_adds_subscribers_by_csv_with_the_cli_report(
    client: TestClient, seeded: Session
) -> None:
    _user(seeded, "ops@example.com", "operator")
    csrf = sign_in(client, "ops@example.com")
    assert client.get("/console/subscribers/import").status_code == 200
    upload = "email,name\nnew1@example.com,New One\nnot-an-address,Bad\n"
    answer = client.post(
        "/console/subscribers/import",
        data={"csrf": csrf, "newsletter": "weekly-ai-tool-verdicts"},
        files={"file": ("people.csv", upload.encode(), "text/csv")},
    )
    assert answer.status_code == 200
    assert "people.csv: 1 new" in answer.text and "1 line(s) rejected" in answer.text
    assert "line 3" in answer.text  # the rejected line, named as the CLI names it
    one = client.post(
        "/console/subscribers/import",
        data={"csrf": csrf, "email": "typed@example.com", "name": "Typed In"},
    )
    assert "typed in: 1 new" in one.text
    seeded.expire_all()
    emails = {s.email for s in seeded.exec(select(Subscriber)).all()}
    assert {"new1@example.com", "typed@example.com"} <= emails
    assert audit.recent(seeded, action="subscribers.import")[0].actor == "ops@example.com"


def test_refreshing_a_draft_says_what_changed(
    client: TestClient, seeded: Session, draft: int, make_comparison: Callable[..., Any]
) -> None:
    _user(seeded, "ed@example.com", "editor")
    csrf = sign_in(client, "ed@example.com")
    late = make_comparison(
        "late-arrival", title="Late Arrival vs Early Bird", published_at="2026-11-26T10:00:00+00:00"
    )
    store.upsert_comparisons(seeded, records=[late])
    seeded.commit()
    answer = client.post(f"/console/editions/{draft}/refresh", data={"csrf": csrf})
    assert answer.status_code == 200
    assert "Refreshed from the store: 1 added (Late Arrival vs Early Bird)." in answer.text
    again = client.post(f"/console/editions/{draft}/refresh", data={"csrf": csrf})
    assert "Refreshed from the store: no change." in again.text
    event = audit.recent(seeded, action="edition.refresh", target=f"edition {draft}")[-1]
    assert "Late Arrival" in (event.detail or "")


def test_the_numbers_page_has_the_table_and_a_phone_sized_chart(
    client: TestClient, seeded: Session
) -> None:
    assert client.get("/console/chart.svg").status_code == 303  # behind the session too
    _user(seeded, "ed@example.com", "editor")
    sign_in(client, "ed@example.com")
    page = client.get("/console/stats").text
    assert 'id="stats"' in page and "No edition has been sent yet." in page
    assert 'media="(max-width: 600px)" srcset="/console/chart.svg?narrow=true"' in page
    wide = client.get("/console/chart.svg")
    narrow = client.get("/console/chart.svg", params={"narrow": "true"})
    assert wide.headers["content-type"] == "image/svg+xml"
    assert 'width="576pt"' in wide.text and 'width="288pt"' in narrow.text  # 8 in, 4 in


def test_approval_covers_what_the_editor_saw(
    client: TestClient, seeded: Session, draft: int
) -> None:
    """A comparison edited in the store while the page was open: the approval is refused, and
    the page names the edited comparison."""
    _user(seeded, "ed@example.com", "editor")
    csrf = sign_in(client, "ed@example.com")
    seen = seen_of(client, draft)
    lead = store.edition_comparisons(seeded, edition_id=draft)[0]
    store.upsert_comparisons(seeded, records=[lead.model_copy(update={"title": "Renamed lead"})])
    seeded.commit()
    refused = client.post(f"/console/editions/{draft}/approve", data={"csrf": csrf, "seen": seen})
    assert refused.status_code == 409 and "changed since you opened it" in refused.text
    assert 'id="edited"' in refused.text and "Renamed lead" in refused.text
    seeded.expire_all()
    assert store.get_edition(seeded, edition_id=draft).approved_at is None
    # Refreshing takes the edit as seen and says so; then the approval goes through.
    refreshed = client.post(f"/console/editions/{draft}/refresh", data={"csrf": csrf})
    assert "1 edited (Renamed lead)" in refreshed.text and 'id="edited"' not in refreshed.text
    approved = client.post(
        f"/console/editions/{draft}/approve", data={"csrf": csrf, "seen": seen_of(client, draft)}
    )
    assert approved.status_code == 303


def test_an_editor_pins_an_item(client: TestClient, seeded: Session, draft: int) -> None:
    _user(seeded, "ed@example.com", "editor")
    csrf = sign_in(client, "ed@example.com")
    second = store.edition_comparisons(seeded, edition_id=draft)[1]
    pinned = client.post(f"/console/editions/{draft}/items/{second.id}/pin", data={"csrf": csrf})
    assert pinned.status_code == 303
    page = client.get(pinned.headers["location"]).text
    assert "Pinned: a refresh keeps it" in page and page.count('class="badge"') == 1
    assert f"Unpin: {second.title}" in page
    actions = [e.action for e in audit.recent(seeded, target=f"edition {draft}")]
    assert actions == ["edition.pin"]


def test_an_operator_moves_the_send_time(
    settings: Settings, engine: Engine, seeded: Session, tmp_path: Any, clock: Clock
) -> None:
    """On a scheduled newsletter's draft: the new time shows, in the newsletter's zone, and
    is audited; a past time is refused with the reason."""
    from newsletter import publish

    from .test_scheduler import SLUG, publish_daily, sync, write_schedule

    write_schedule(tmp_path / "s")
    sync(seeded, tmp_path / "s", settings)
    publish_daily(seeded, datetime(2026, 11, 23, tzinfo=UTC), 3)
    outcome = publish.draft_edition(seeded, settings=settings, newsletter_slug=SLUG, at=NOW)
    draft = outcome.edition.id
    _user(seeded, "ops@example.com", "operator")
    with TestClient(
        create_app(settings, engine=engine, clock=clock),
        base_url="https://news.example.com",
        follow_redirects=False,
    ) as c:
        csrf = sign_in(c, "ops@example.com")
        page = c.get(f"/console/editions/{draft}").text
        assert "Sends Mon 30 Nov 2026, 09:00 (Europe/Berlin)" in page
        moved = c.post(
            f"/console/editions/{draft}/reschedule",
            data={"csrf": csrf, "send_at": "2026-11-27T15:30"},
        )
        assert moved.status_code == 303, moved.text
        page = c.get(moved.headers["location"]).text
        assert "Sends Fri 27 Nov 2026, 15:30 (Europe/Berlin)" in page
        past = c.post(
            f"/console/editions/{draft}/reschedule",
            data={"csrf": csrf, "send_at": "2026-11-20T15:30"},
        )
        assert past.status_code == 400 and "has passed" in past.text
        junk = c.post(
            f"/console/editions/{draft}/reschedule", data={"csrf": csrf, "send_at": "soon"}
        )
        assert junk.status_code == 400 and "give a date and a time" in junk.text
    seeded.expire_all()
    assert store.get_edition(seeded, edition_id=draft or 0).scheduled_for == datetime(
        2026, 11, 27, 14, 30, tzinfo=UTC
    )
    event = seeded.exec(select(AuditEvent).where(AuditEvent.action == "edition.reschedule")).one()
    assert event.actor == "ops@example.com" and "2026-11-27T14:30" in (event.detail or "")
