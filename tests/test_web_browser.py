"""The public pages in a real headless Chromium against the app served by uvicorn on 127.0.0.1.

Subscribe -> the confirmation email (memory backend) -> its link -> Confirm -> active; then the
unsubscribe link of a sent edition -> button -> unsubscribed -> resubscribe. JavaScript is
disabled in the browser: no public page may need it. Screenshots at 375 px and 1280 px go to
``test-artifacts/web/``.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from email import message_from_bytes

import pytest
import uvicorn
from playwright.sync_api import Page, sync_playwright
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from newsletter import publish
from newsletter.backends import memory
from newsletter.clock import Clock, system_clock
from newsletter.config import Settings
from newsletter.storage.models import Subscriber, Subscription
from newsletter.web.app import create_app

from .test_browser import ARTIFACTS, CHROMIUM, LAUNCH_ARGS, OVERFLOW_JS

SHOTS = ARTIFACTS / "web"
WIDTHS = {"mobile": 375, "desktop": 1280}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(settings: Settings, engine: Engine, seeded: Session) -> Iterator[str]:
    with _serve(settings, engine) as base:
        yield base


@contextmanager
def _serve(
    settings: Settings, engine: Engine, clock: Clock = system_clock, **overrides: object
) -> Iterator[str]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    served = settings.model_copy(update={"base_url": base, **overrides})
    memory.reset()
    app = create_app(served, engine=engine, clock=clock)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not uv.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield base
    uv.should_exit = True
    thread.join(timeout=10)
    memory.reset()


@pytest.fixture
def page() -> Iterator[Page]:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        context = browser.new_context(java_script_enabled=False)
        yield context.new_page()
        browser.close()


def shoot(page: Page, name: str) -> None:
    """Screenshots at both widths, and no horizontal overflow on the phone."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    for label, width in WIDTHS.items():
        page.set_viewport_size({"width": width, "height": 900})
        page.screenshot(path=str(SHOTS / f"{name}-{width}.png"), full_page=True)
        if label == "mobile":
            scroll = page.evaluate("document.documentElement.scrollWidth")
            assert scroll <= width, f"{name} overflows at {width} px: {scroll} px wide"


def status_of(session: Session, email: str) -> str:
    session.expire_all()
    sub = session.exec(
        select(Subscription)
        .join(Subscriber, col(Subscriber.id) == Subscription.subscriber_id)
        .where(Subscriber.email_key == email)
    ).one()
    return sub.status


def test_subscribe_confirm_in_a_browser(server: str, page: Page, seeded: Session) -> None:
    page.goto(f"{server}/subscribe")
    shoot(page, "subscribe")
    page.fill("#email", "reader@example.com")
    page.fill("#name", "Grace Hopper")
    page.click("button[type=submit]")
    assert page.locator("h1").inner_text() == "Check your inbox"
    shoot(page, "check-inbox")
    assert status_of(seeded, "reader@example.com") == "pending"

    deadline = time.monotonic() + 10  # the email goes out after the response
    while not memory.outbox:
        assert time.monotonic() < deadline, "no confirmation email"
        time.sleep(0.05)
    mail = message_from_bytes(memory.outbox[0].data)
    text = next(
        payload.decode()
        for p in mail.walk()
        if p.get_content_type() == "text/plain"
        and isinstance(payload := p.get_payload(decode=True), bytes)
    )
    link = re.search(rf"{re.escape(server)}/confirm/\S+", text)
    assert link, text
    page.goto(link.group(0))
    shoot(page, "confirm")
    assert status_of(seeded, "reader@example.com") == "pending"  # the visit alone changes nothing
    page.click("button[type=submit]")
    assert page.locator("h1").inner_text() == "You are subscribed"
    shoot(page, "confirmed")
    assert status_of(seeded, "reader@example.com") == "active"


def test_pages_work_where_they_are_served_whatever_the_base_url_says(
    settings: Settings, engine: Engine, seeded: Session, page: Page
) -> None:
    """`serve --port 8001` with NEWSLETTER_BASE_URL on :8000: the form used to post to :8000
    (nothing there; the CSP's form-action 'self' refused it anyway). Forms and links in pages
    are host-relative now, so the page works where it is; emails keep the full base URL."""
    elsewhere = f"http://127.0.0.1:{free_port()}"
    with _serve(settings, engine, base_url=elsewhere) as served:
        page.goto(f"{served}/subscribe")
        assert page.locator("form").get_attribute("action") == "/subscribe"
        page.fill("#email", "moved@example.com")
        page.click("button[type=submit]")
        assert page.locator("h1").inner_text() == "Check your inbox"
        assert page.url == f"{served}/subscribe"
        page.click("footer a:text('Archive')")
        assert page.url == f"{served}/archive"
    assert status_of(seeded, "moved@example.com") == "pending"


def test_hostile_subscribe_input_in_a_browser(server: str, page: Page, seeded: Session) -> None:
    page.goto(f"{server}/subscribe")
    page.fill("#email", "x@example.com")
    page.fill("#name", '<img src=x onerror="alert(1)">')
    page.click("button[type=submit]")
    assert "Name: must not contain < or >" in page.locator("#form-error").inner_text()
    assert page.locator("img").count() == 0  # echoed as text, not markup
    shoot(page, "subscribe-error")
    assert seeded.exec(select(Subscriber)).all() == []


def test_unsubscribe_and_resubscribe_in_a_browser(
    server: str,
    page: Page,
    seeded: Session,
    settings: Settings,
    draft: int,
    add_subscribers: Callable[..., list[Subscriber]],
) -> None:
    add_subscribers(1, prefix="leaver")
    served = settings.model_copy(update={"base_url": server})
    publish.send_edition(seeded, edition_id=draft, settings=served, backend=memory.MemoryBackend())
    sent = memory.outbox[-1]
    unsubscribe = re.search(r"<(http[^>]+/u/[^>]+)>", sent.data.decode())
    assert unsubscribe, "no List-Unsubscribe header"
    page.goto(unsubscribe.group(1))
    shoot(page, "unsubscribe")
    assert status_of(seeded, "leaver0@example.com") == "active"
    page.click("#unsubscribe")
    assert page.locator("h1").inner_text() == "You are unsubscribed"
    shoot(page, "unsubscribed")
    assert status_of(seeded, "leaver0@example.com") == "unsubscribed"
    page.click("#resubscribe")
    assert page.locator("h1").inner_text() == "Welcome back"
    shoot(page, "resubscribed")
    assert status_of(seeded, "leaver0@example.com") == "active"

    page.goto(f"{server}/archive/{draft}")
    shoot(page, "archive-edition")
    page.set_viewport_size({"width": 375, "height": 900})
    overflow = page.evaluate(OVERFLOW_JS, 375)
    assert overflow["offenders"] == [] and overflow["scrollWidth"] <= 375, overflow
    assert page.locator("a[href*='/u/']").count() == 0
