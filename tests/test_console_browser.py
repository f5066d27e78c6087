"""The console in real headless Chromium (JavaScript off): an editor signs in, opens the
coming draft, sees the previews, changes the subject, sends a test and approves; a visitor
without a session reaches no console page. Screenshots at 375 and 1280 px go to
``test-artifacts/console/``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import pytest
from playwright.sync_api import Page, sync_playwright
from sqlalchemy import Engine
from sqlmodel import Session, select

from newsletter import publish
from newsletter.backends import memory
from newsletter.clock import fixed_clock
from newsletter.config import Settings
from newsletter.operations import accounts, audit
from newsletter.storage import store
from newsletter.storage.models import ScheduleSkip, Subscriber, User

from .test_browser import ARTIFACTS, CHROMIUM, LAUNCH_ARGS
from .test_web_browser import _serve

SHOTS = ARTIFACTS / "console"
NOW = datetime(2026, 11, 24, 9, tzinfo=UTC)
PASSWORD = "correct horse battery staple 42"


@pytest.fixture
def page() -> Iterator[Page]:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        context = browser.new_context(java_script_enabled=False)
        yield context.new_page()
        browser.close()


def shoot(page: Page, name: str) -> None:
    """Screenshots at phone and desktop width, light and dark (``-dark``)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    schemes: tuple[tuple[Literal["light", "dark"], str], ...] = (("light", ""), ("dark", "-dark"))
    for scheme, suffix in schemes:
        page.emulate_media(color_scheme=scheme)
        for width in (375, 1280):
            page.set_viewport_size({"width": width, "height": 900})
            page.screenshot(path=str(SHOTS / f"{name}-{width}{suffix}.png"), full_page=True)
    page.emulate_media(color_scheme="light")


def test_an_editor_shapes_tests_and_approves_a_draft_in_a_browser(
    settings: Settings, engine: Engine, seeded: Session, draft: int, page: Page
) -> None:
    user, token = accounts.add_user(seeded, email="ed@example.com", role="editor", now=NOW)
    seeded.commit()
    # Links in the email are https (the public base URL); the console's own links are paths,
    # so it works here on http://127.0.0.1 (where Chromium keeps Secure cookies too).
    public = "https://news.example.com"
    with _serve(settings, engine, clock=fixed_clock(NOW), base_url=public) as base:
        page.goto(f"{base}/console/editions/{draft}")
        assert page.url == f"{base}/console/login"  # no session: the login page
        page.goto(f"{base}/console/password/{token}")
        shoot(page, "set-password")
        page.fill("#password", PASSWORD)
        page.click("button[type=submit]")
        assert page.url == f"{base}/console/login"
        page.fill("#email", "ed@example.com")
        page.fill("#password", PASSWORD)
        shoot(page, "login")
        page.click("button[type=submit]")
        assert page.locator("h1").inner_text() == "Editions"
        shoot(page, "editions")
        page.click(f"a[href='/console/editions/{draft}']")
        assert page.locator("iframe.preview").count() == 4
        frame = page.frame_locator("iframe.phone").first
        assert "THE CALL" in frame.locator("body").inner_text().upper()
        shoot(page, "draft")
        for index, name in enumerate(
            ("phone-light", "phone-dark", "desktop-light", "desktop-dark")
        ):
            preview = page.locator("iframe.preview").nth(index)
            preview.scroll_into_view_if_needed()
            preview.screenshot(path=str(SHOTS / f"preview-{name}.png"))
        # Drop one comparison and write an intro: both previews change.
        first_title = page.locator("#items li").first.inner_text().split("\n")[0].strip()
        phone = page.frame_locator("iframe.phone").first.locator("body")
        assert first_title in phone.inner_text()
        page.locator("#items li").first.locator("button:text('Drop')").click()
        assert "dropped" in page.locator("[role=status]").inner_text()
        assert page.locator("#items li").count() == 3
        assert first_title in page.locator("#dropped").inner_text()
        for selector in ("iframe.phone", "iframe.desktop"):
            shown = page.frame_locator(selector).first.locator("body").inner_text()
            assert first_title not in shown and "3 new comparisons" in shown
        # Moving the last one up pins it there: a badge says so, and Unpin undoes it.
        last = page.locator("#items li").last
        last_title = last.inner_text().split("\n")[0].strip()
        last.locator("button:text('Up')").click()
        assert "Moved up." in page.locator("[role=status]").inner_text()
        moved = page.locator("#items li").nth(1)
        assert moved.inner_text().startswith(last_title) and "Pinned" in moved.inner_text()
        assert moved.locator("button:text('Unpin')").count() == 1
        shoot(page, "pinned")
        page.fill("#intro", "A quiet week: three tools, one surprise.")
        page.click("text=Save intro")
        for selector in ("iframe.phone", "iframe.desktop"):
            shown = page.frame_locator(selector).first.locator("body").inner_text()
            assert "A quiet week: three tools, one surprise." in shown
        assert "A quiet week" in page.locator("pre.text").inner_text()
        # A subject too long for a phone fails the preflight, and approval waits for it.
        page.fill("#subject", "Four AI tools and four calls, " * 4)
        page.click("text=Save subject")
        assert page.locator("[role=status]").inner_text() == "Subject saved."
        assert "✗ subject" in page.locator("#preflight").inner_text()
        page.click("button:text('Approve')")
        assert "subject failed" in page.locator("[role=alert]").inner_text()
        shoot(page, "preflight-failed")
        page.fill("#subject", "Four AI tools, four calls")
        page.click("text=Save subject")
        assert "✗" not in page.locator("#preflight").inner_text()
        assert "Four AI tools, four calls" in page.locator(".inbox").inner_text()
        memory.reset()
        page.click("text=Send the test")
        assert "Test sent" in page.locator("[role=status]").inner_text()
        assert [m.recipient for m in memory.outbox] == ["ed@example.com"]
        assert b"Subject: [TEST] Four AI tools, four calls" in memory.outbox[0].data
        page.click("button:text('Approve')")
        assert "Approved" in page.locator("[role=status]").inner_text()
        shoot(page, "approved")
    seeded.expire_all()
    edition = store.get_edition(seeded, edition_id=draft)
    assert (
        edition.approved_by == "ed@example.com" and edition.subject == "Four AI tools, four calls"
    )


def _sign_in(page: Page, base: str, email: str) -> None:
    page.goto(f"{base}/console/login")
    page.fill("#email", email)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    assert page.locator("h1").inner_text() == "Editions"


def _account(session: Session, email: str, role: str) -> None:
    _, token = accounts.add_user(session, email=email, role=role, now=NOW)
    accounts.set_password(session, token=token, password=PASSWORD, now=NOW)
    session.commit()


def test_an_operator_pauses_and_resumes_a_send_and_skips_a_week_in_a_browser(
    settings: Settings,
    engine: Engine,
    seeded: Session,
    draft: int,
    page: Page,
    tmp_path: Path,
    add_subscribers: Callable[..., list[Subscriber]],
) -> None:
    from .test_scheduler import sync, write_schedule

    add_subscribers(3, prefix="op")
    write_schedule(tmp_path / "schedules", slug="weekly-ai-tool-verdicts")
    sync(seeded, tmp_path / "schedules", settings)
    publish.start_edition(seeded, edition_id=draft, settings=settings, now=NOW)
    _account(seeded, "ops@example.com", "operator")
    with _serve(settings, engine, clock=fixed_clock(NOW)) as base:
        _sign_in(page, base, "ops@example.com")
        page.goto(f"{base}/console/editions/{draft}")
        assert "sending" in page.locator("#send-state").inner_text()
        page.click("button:text('Pause')")
        assert "Paused" in page.locator("[role=status]").inner_text()
        assert store.edition_status(seeded, edition_id=draft) == "paused"
        shoot(page, "send-paused")
        page.click("button:text('Resume')")
        assert "Resumed" in page.locator("[role=status]").inner_text()
        assert store.edition_status(seeded, edition_id=draft) == "sending"
        page.click("button:text('Cancel the send')")  # the box is not ticked
        assert "done=resume" in page.url  # the required box kept the form back
        assert store.edition_status(seeded, edition_id=draft) == "sending"
        page.goto(f"{base}/console/schedules")
        section = page.locator("#schedule-weekly-ai-tool-verdicts")
        week = section.locator("input[name=period]").input_value()
        section.locator("button:text('Skip')").click()
        assert "skipped" in page.locator("[role=status]").inner_text()
        shoot(page, "schedules")
    skipped = seeded.exec(select(ScheduleSkip)).all()
    assert [s.period_key for s in skipped] == [week]
    actions = [e.action for e in audit.recent(seeded)]
    assert actions[:3] == ["schedule.skip", "edition.resume", "edition.pause"]


def test_an_admin_adds_an_editor_and_others_cannot_in_a_browser(
    settings: Settings, engine: Engine, seeded: Session, page: Page
) -> None:
    _account(seeded, "boss@example.com", "admin")
    _account(seeded, "ed@example.com", "editor")
    with _serve(settings, engine, clock=fixed_clock(NOW)) as base:
        _sign_in(page, base, "boss@example.com")
        page.click("a:text('Users')")
        page.fill("#email", "new.editor@example.com")
        page.select_option("#role", "editor")
        page.click("button:text('Add')")
        link = page.locator("#link").inner_text()
        assert link.startswith(f"{base}/console/password/")
        shoot(page, "users")
        page.click("button:text('Sign out')")
        _sign_in(page, base, "ed@example.com")
        assert page.locator("a:text('Users')").count() == 0
        page.goto(f"{base}/console/users")
        assert page.locator("h1").inner_text() == "Not allowed"
    seeded.expire_all()
    added = seeded.exec(select(User).where(User.email == "new.editor@example.com")).one()
    assert added.role == "editor" and added.password_hash is None


def test_a_visitor_reaches_no_console_page_and_a_cross_site_post_is_refused(
    settings: Settings, engine: Engine, seeded: Session, draft: int, page: Page
) -> None:
    _account(seeded, "ed@example.com", "editor")
    with _serve(settings, engine, clock=fixed_clock(NOW)) as base:
        for path in ("", f"/editions/{draft}", "/schedules", "/users", "/audit"):
            page.goto(f"{base}/console{path}")
            assert page.url == f"{base}/console/login", path
        _sign_in(page, base, "ed@example.com")
        # A page on another site posting to the console: the browser marks it cross-site.
        evil = page.context.new_page()
        evil.route(
            "http://evil.example/",
            lambda route: route.fulfill(
                content_type="text/html",
                body=f'<form method="post" action="{base}/console/editions/{draft}/approve">'
                '<input name="csrf" value="guess"><button>go</button></form>',
            ),
        )
        evil.goto("http://evil.example/")
        evil.click("button")
        assert "Not allowed" in evil.content() or evil.url.endswith("/console/login")
    seeded.expire_all()
    assert store.get_edition(seeded, edition_id=draft).approved_at is None


def test_an_editor_writes_and_accepts_a_suggestion_in_a_browser(
    settings: Settings, engine: Engine, seeded: Session, draft: int, page: Page
) -> None:
    from .model_stubs import CachingMessages, StubServer
    from .test_writers import GROUNDED, MESSAGES

    _account(seeded, "ed@example.com", "editor")
    with StubServer() as stub:
        stub.responders[MESSAGES] = CachingMessages(stub, GROUNDED).reply_for
        with _serve(
            settings,
            engine,
            clock=fixed_clock(NOW),
            writer="claude",
            anthropic_api_key="sk-ant-browser-test",
            anthropic_base_url=stub.url,
        ) as base:
            _sign_in(page, base, "ed@example.com")
            page.goto(f"{base}/console/editions/{draft}")
            page.click("button:text('Write suggestions (claude)')")
            assert "4 written" in page.locator("[role=status]").inner_text()
            assert page.locator("pre.text").count() == 5  # four comparisons, the intro
            shoot(page, "suggestions-written")
            page.click("text=Back to the draft")
            suggestion = page.locator(
                "li .suggestion", has=page.locator("button:text-is('Accept')")
            )
            assert suggestion.count() == 1
            assert "Both ship: Claude 4 API" in suggestion.inner_text()
            suggestion.scroll_into_view_if_needed()
            shoot(page, "suggestion")
            suggestion.locator("summary:text('Edit the words')").click()
            suggestion.locator("input[name=for_0]").fill("the cache discount shows per call")
            shoot(page, "suggestion-editing")
            suggestion.locator("button:text('Accept with these words')").click()
            assert "Suggestion accepted" in page.locator(".ok[role=status]").inner_text()
            phone = page.frame_locator("iframe.phone").first.locator("body").inner_text()
            assert "Both ship: Claude 4 API for agent loops" in phone
            assert "the cache discount shows per call" in phone
            intro = page.locator("#intro-suggestion")
            intro.scroll_into_view_if_needed()
            shoot(page, "intro-suggestion")
            intro.locator("button:text-is('Accept')").click()
            assert "Intro accepted" in page.locator(".ok[role=status]").inner_text()
            assert "refused" in page.locator("#writer-notes").inner_text()
            phone = page.frame_locator("iframe.phone").first.locator("body").inner_text()
            assert "Both ship, for different jobs, and the panel says why." in phone
            shoot(page, "suggestion-accepted")


def test_an_operator_sees_the_reputation_rates_against_the_limits_in_a_browser(
    settings: Settings,
    engine: Engine,
    seeded: Session,
    draft: int,
    page: Page,
    add_subscribers: Callable[..., list[Subscriber]],
) -> None:
    people = add_subscribers(10, prefix="rate")
    # Two of ten refused at send time (550 5.1.1): a 20% hard-bounce rate, over the 10% limit.
    strict = settings.model_copy(update={"bounce_rate_limit": 0.1, "breaker_min_sample": 5})
    backend = memory.MemoryBackend(reject=frozenset({people[0].email, people[1].email}))
    publish.send_edition(
        seeded,
        edition_id=draft,
        settings=strict,
        backend=backend,
        options=publish.SendOptions(clock=fixed_clock(NOW)),
    )
    _account(seeded, "ops@example.com", "operator")
    with _serve(strict, engine, clock=fixed_clock(NOW)) as base:
        _sign_in(page, base, "ops@example.com")
        page.goto(f"{base}/console/stats")
        row = page.locator("#stats tbody tr").first
        cells = row.locator("td").all_inner_texts()
        # Hard bounces 2, soft 0, bounce rate 20.00% marked over the limit; no complaints.
        assert cells[6:10] == ["2 / 0", "20.00% ▲", "0", "0.00%"]
        assert cells[1] == "paused"  # by the breaker; not sent, so no date
        assert row.locator("td.over").count() == 1
        assert "passes 10.00%" in page.locator("#limits").inner_text()
        shoot(page, "stats-rates")
