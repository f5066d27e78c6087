"""The rendered email in a real headless Chromium: responsive layout, hostile content, no remote
resources. The HTML is loaded with ``page.set_content`` (no server, no network); screenshots go
to ``test-artifacts/`` (gitignored) as evidence.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import sync_playwright
from sqlmodel import Session

from newsletter import publish
from newsletter.config import Settings
from newsletter.edition.content import ComparisonData
from newsletter.storage import store

from .conftest import comparison_dict

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
MOBILE = {"width": 375, "height": 800}
DESKTOP = {"width": 600, "height": 800}

SCRIPT = "<script>alert(1)</script>"
QUOTES = "\"quotes\" and 'apostrophes' onload=x"
ARABIC = "أداة الذكاء الاصطناعي"
LONG_NAME = "Supercalifragilistic" * 15  # 300 characters, no spaces

# Everything that sticks out to the right of the viewport, for assertion messages.
OVERFLOW_JS = """
(limit) => {
  const out = [];
  for (const el of document.body.querySelectorAll('*')) {
    const r = el.getBoundingClientRect();
    if (r.width === 0 && r.height === 0) continue;
    if (r.right > limit + 0.5 || el.scrollWidth > Math.max(el.clientWidth, limit)) {
      out.push({
        tag: el.tagName.toLowerCase(),
        cls: el.className && el.className.baseVal === undefined ? el.className : '',
        right: Math.round(r.right),
        width: Math.round(r.width),
        scrollWidth: el.scrollWidth,
        text: (el.innerText || '').slice(0, 40),
      });
    }
  }
  return {
    scrollWidth: document.documentElement.scrollWidth,
    bodyScrollWidth: document.body.scrollWidth,
    offenders: out.slice(-8),  // the innermost offenders come last in document order
  };
}
"""

TOOL_BOXES_JS = """
() => Array.from(document.querySelectorAll('div.tool')).slice(0, 2).map(el => {
  const r = el.getBoundingClientRect();
  return {top: r.top, bottom: r.bottom, left: r.left, right: r.right, width: r.width,
          text: el.innerText.slice(0, 40)};
})
"""


# --- browser fixtures ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():  # pragma: no cover - environment problem
        pytest.fail(f"Chromium not found at {CHROMIUM}")
    with sync_playwright() as pw:
        instance = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        try:
            yield instance
        finally:
            instance.close()


class Loaded:
    """A page with the email loaded, plus what happened while loading it."""

    def __init__(self, page: Any, dialogs: list[str], requests: list[str]) -> None:
        self.page = page
        self.dialogs = dialogs
        self.requests = requests

    def overflow(self, limit: int) -> dict[str, Any]:
        return dict(self.page.evaluate(OVERFLOW_JS, limit))

    def tool_boxes(self) -> list[dict[str, Any]]:
        return list(self.page.evaluate(TOOL_BOXES_JS))

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / name
        self.page.screenshot(path=str(path), full_page=True)
        assert path.stat().st_size > 0
        return path


@pytest.fixture
def load(browser: Any) -> Iterator[Callable[[str, dict[str, int]], Loaded]]:
    """``load(html, viewport)`` -> a fresh page (own context) with the HTML set as content."""
    contexts: list[Any] = []

    def _load(html: str, viewport: dict[str, int]) -> Loaded:
        context = browser.new_context(viewport=viewport, java_script_enabled=True)
        contexts.append(context)
        page = context.new_page()
        dialogs: list[str] = []
        requests: list[str] = []

        def on_dialog(dialog: Any) -> None:
            dialogs.append(f"{dialog.type}: {dialog.message}")
            dialog.dismiss()

        page.on("dialog", on_dialog)
        page.on("request", lambda request: requests.append(request.url))
        # Nothing may leave the machine: refuse every request that is not the page itself.
        page.route(
            "**/*",
            lambda route: (
                route.abort()
                if route.request.url.startswith(("http:", "https:"))
                else route.continue_()
            ),
        )
        page.set_content(html, wait_until="load")
        page.wait_for_timeout(100)  # let any (unexpected) timers or handlers run
        return Loaded(page, dialogs, requests)

    yield _load
    for context in contexts:
        context.close()


# --- content fixtures ------------------------------------------------------------------------


@pytest.fixture
def example_html(draft: int, seeded: Session, settings: Settings) -> str:
    html, _text, _rendered = publish.preview_edition(seeded, edition_id=draft, settings=settings)
    assert html.count('class="mj-outlook-group-fix mj-column-per-50 tool"') == 8  # 4 x 2 tools
    return html


def _hostile_records(make_comparison: Callable[..., ComparisonData]) -> list[ComparisonData]:
    base = comparison_dict()
    long_tool = {**base["tools"][0], "name": LONG_NAME, "tagline": f"Tagline {SCRIPT}"}
    quote_tool = {**base["tools"][1], "name": "Quote 🚀 Tool", "tagline": QUOTES}
    arabic_tool = {
        **base["tools"][0],
        "name": ARABIC,
        "tagline": f"{ARABIC} — أفضل أداة 🤖",
        "description": ARABIC,
        "category": "ذكاء اصطناعي",
    }
    emoji_tool = {**base["tools"][1], "name": "Emoji 😀🎉👩‍💻 Bot", "tagline": "🔥" * 60}
    return [
        make_comparison(
            "hostile-long",
            title=f"{LONG_NAME} vs Quote {SCRIPT}",
            question=f"Which one? {SCRIPT}",
            tools=[long_tool, quote_tool],
        ),
        make_comparison(
            "hostile-rtl",
            title=f"{ARABIC} vs Emoji 😀 {QUOTES}",
            tools=[arabic_tool, emoji_tool],
        ),
    ]


@pytest.fixture
def hostile_html(
    session: Session, settings: Settings, make_comparison: Callable[..., ComparisonData]
) -> str:
    """A whole edition drafted from hostile comparisons through the store, then previewed."""
    publish.default_newsletter(session, settings)
    report = store.upsert_comparisons(session, records=_hostile_records(make_comparison))
    assert report.created == 2
    session.commit()
    outcome = publish.draft_edition(
        session,
        settings=settings,
        newsletter_slug=None,
        at=datetime(2026, 11, 25, 12, tzinfo=UTC),
    )
    assert outcome.edition.id is not None
    assert len(outcome.selection.items) == 2
    html, _text, _rendered = publish.preview_edition(
        session, edition_id=outcome.edition.id, settings=settings
    )
    assert "<script>" not in html  # escaped in the source already; the browser check follows
    return html


# --- tests -----------------------------------------------------------------------------------


def test_example_edition_fits_375px_and_stacks_tools(
    example_html: str, load: Callable[..., Loaded]
) -> None:
    loaded = load(example_html, MOBILE)
    measured = loaded.overflow(MOBILE["width"])
    loaded.screenshot("example-375.png")
    assert measured["scrollWidth"] <= MOBILE["width"], f"horizontal overflow at 375px: {measured}"

    first, second = loaded.tool_boxes()
    assert second["top"] >= first["bottom"] - 0.5, f"tool cards not stacked: {first} {second}"
    # Stacked cards use the full width of the email, not half of it.
    assert first["width"] > MOBILE["width"] * 0.8, first
    assert second["width"] > MOBILE["width"] * 0.8, second
    assert abs(first["left"] - second["left"]) <= 1, (first, second)


def test_example_edition_shows_tools_side_by_side_at_600px(
    example_html: str, load: Callable[..., Loaded]
) -> None:
    loaded = load(example_html, DESKTOP)
    measured = loaded.overflow(DESKTOP["width"])
    loaded.screenshot("example-600.png")
    assert measured["scrollWidth"] <= DESKTOP["width"], f"horizontal overflow at 600px: {measured}"

    first, second = loaded.tool_boxes()
    assert abs(first["top"] - second["top"]) <= 3, f"tools not on one row: {first} {second}"
    assert second["left"] >= first["right"] - 1, f"tool columns overlap: {first} {second}"
    assert 250 <= first["width"] <= 310 and 250 <= second["width"] <= 310, (first, second)


def test_hostile_content_is_inert_and_fits_375px(
    hostile_html: str, load: Callable[..., Loaded]
) -> None:
    loaded = load(hostile_html, MOBILE)
    page = loaded.page
    loaded.screenshot("hostile-375.png")

    assert loaded.dialogs == [], f"a script ran: {loaded.dialogs}"
    assert page.evaluate("document.querySelectorAll('script').length") == 0
    assert page.evaluate("document.querySelectorAll('[onload]').length") == 0
    body_text = page.inner_text("body")
    assert SCRIPT in body_text  # shown as text, not executed
    assert QUOTES in body_text
    assert ARABIC in body_text
    assert "😀" in body_text and "🚀" in body_text
    assert LONG_NAME in body_text.replace("\n", "")
    title = page.title()  # the subject leads with whichever comparison selection put first
    assert SCRIPT in title or QUOTES in title, title
    assert "&lt;" not in title and "&quot;" not in title and "&#" not in title, title

    measured = loaded.overflow(MOBILE["width"])
    assert measured["scrollWidth"] <= MOBILE["width"], f"horizontal overflow at 375px: {measured}"
    first, second = loaded.tool_boxes()
    assert second["top"] >= first["bottom"] - 0.5, (first, second)


def test_hostile_content_side_by_side_at_600px(
    hostile_html: str, load: Callable[..., Loaded]
) -> None:
    loaded = load(hostile_html, DESKTOP)
    loaded.screenshot("hostile-600.png")
    assert loaded.dialogs == []
    measured = loaded.overflow(DESKTOP["width"])
    assert measured["scrollWidth"] <= DESKTOP["width"], f"horizontal overflow at 600px: {measured}"
    first, second = loaded.tool_boxes()
    assert abs(first["top"] - second["top"]) <= 3, (first, second)
    assert second["left"] >= first["right"] - 1, (first, second)


@pytest.mark.parametrize("which", ["example", "hostile"])
def test_images_have_alt_and_nothing_remote_loads(
    which: str, request: pytest.FixtureRequest, load: Callable[..., Loaded]
) -> None:
    html: str = request.getfixturevalue(f"{which}_html")
    loaded = load(html, DESKTOP)
    page = loaded.page

    alts = page.evaluate(
        "Array.from(document.images).map(img => (img.getAttribute('alt') || '').trim())"
    )
    # The DOM holds exactly the <img> tags of the source (none are injected or dropped) ...
    assert len(alts) == html.lower().count("<img"), alts
    # ... and every one of them (there are none today) has a non-empty alt.
    assert all(alts), f"images without alt text: {alts}"

    remote_css = page.evaluate(
        "Array.from(document.querySelectorAll('link[rel~=stylesheet], link[href]'))"
        ".map(l => l.getAttribute('href') || '')"
        ".filter(h => /^(https?:)?\\/\\//i.test(h))"
    )
    assert remote_css == []
    assert "fonts.googleapis" not in html
    assert "@import" not in html
    remote = [u for u in loaded.requests if u.startswith(("http:", "https:"))]
    assert remote == [], f"the email fetched remote resources: {remote}"
    if not alts:
        assert page.evaluate("document.querySelectorAll('img, picture, svg image').length") == 0


def test_the_probes_catch_overflow_and_unstacked_columns(
    example_html: str, load: Callable[..., Loaded]
) -> None:
    """A control: the same measurements report a failure on a deliberately broken page."""
    wide = re.sub(
        r'(<h3 class="tool-name"[^>]*>)',
        r'\1<div style="width:900px">x</div>',
        example_html,
        count=1,
    )
    assert wide != example_html
    loaded = load(wide, MOBILE)
    measured = loaded.overflow(MOBILE["width"])
    assert measured["scrollWidth"] > MOBILE["width"]
    assert any(o["width"] == 900 for o in measured["offenders"]), measured

    # Desktop layout forced onto a narrow viewport: the columns stay side by side.
    forced = example_html.replace(
        "</head>", "<style>.mj-column-per-50{width:50%!important;max-width:50%}</style></head>", 1
    )
    first, second = load(forced, MOBILE).tool_boxes()
    assert second["top"] < first["bottom"]


def test_inline_css_classes_are_applied(example_html: str, load: Callable[..., Loaded]) -> None:
    """templates/email/inline.css reaches the elements (css-inline with extra_css)."""
    page = load(example_html, DESKTOP).page
    name = page.evaluate(
        "(() => { const s = getComputedStyle(document.querySelector('.tool-name'));"
        " return [s.fontWeight, s.fontSize]; })()"
    )
    assert name == ["700", "18px"]
    call_bg = page.evaluate(
        "getComputedStyle(document.querySelector('.call-ship, .call-skip, .call-split'))"
        ".backgroundColor"
    )
    assert call_bg != "rgba(0, 0, 0, 0)"
