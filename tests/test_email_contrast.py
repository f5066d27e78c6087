"""Every word of the email readable, in every inbox: light, dark, and with no <style> at all.

The edition is rendered in headless Chromium three ways: as is with a light preference; with
``prefers-color-scheme: dark`` (Apple Mail, iOS Mail and the Outlook apps honour the
template's dark rules); and with every ``<style>`` block removed, as Gmail and many webmail
clients show it (inline styles only). At 320, 375 and 600 px, the contrast of every visible
text node is computed against its effective background (the nearest ancestor with an opaque
background colour) and must reach WCAG AA: 4.5:1, or 3:1 for large text (24 px, or 18.66 px
bold). Tap targets (buttons and links standing alone) are at least 44 px high. Screenshots of
each mode and width go to ``test-artifacts/email/``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import sync_playwright
from sqlmodel import Session

from newsletter import publish
from newsletter.config import Settings

from .test_browser import ARTIFACTS, CHROMIUM, LAUNCH_ARGS

SHOTS = ARTIFACTS / "email"
WIDTHS = (320, 375, 600)
MODES = ("light", "dark", "no-style")

#: For each visible text node: its colour, its effective background, size and weight.
CONTRAST_JS = """
() => {
  const parse = (c) => {
    const m = c.match(/rgba?\\(([^)]+)\\)/);
    if (!m) return null;
    const p = m[1].split(',').map(s => parseFloat(s));
    return {r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1};
  };
  const lum = (c) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(c.r) + 0.7152 * f(c.g) + 0.0722 * f(c.b);
  };
  const background = (el) => {
    for (let e = el; e; e = e.parentElement) {
      const c = parse(getComputedStyle(e).backgroundColor);
      if (c && c.a > 0.5) return c;
    }
    return {r: 255, g: 255, b: 255, a: 1};  // the client's canvas
  };
  const out = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const text = n.textContent.replace(/\\s+/g, ' ').trim();
    if (!text) continue;
    const el = n.parentElement;
    const style = getComputedStyle(el);
    const rect = el.getBoundingClientRect();
    if (rect.width < 2 || rect.height < 2 || style.visibility === 'hidden') continue;
    if (parseFloat(style.opacity) < 0.1) continue;
    let hidden = false;
    for (let e = el; e; e = e.parentElement) {
      const s = getComputedStyle(e);
      if (s.display === 'none' || parseFloat(s.maxHeight) === 0 && s.overflow === 'hidden') {
        hidden = true; break;
      }
    }
    if (hidden) continue;
    const fg = parse(style.color), bg = background(el);
    const l1 = lum(fg), l2 = lum(bg);
    const ratio = (Math.max(l1, l2) + 0.05) / (Math.min(l1, l2) + 0.05);
    const size = parseFloat(style.fontSize), weight = parseInt(style.fontWeight, 10);
    const large = size >= 24 || (size >= 18.66 && weight >= 700);
    out.push({text: text.slice(0, 50), ratio: Math.round(ratio * 100) / 100, large,
              color: style.color, bg: `rgb(${bg.r}, ${bg.g}, ${bg.b})`, size});
  }
  return out;
}
"""

TAP_TARGETS_JS = """
() => Array.from(document.querySelectorAll('a')).filter(a => {
  const r = a.getBoundingClientRect();
  return r.width > 0 && (a.closest('.btn') || a.closest('.tap'));
}).map(a => ({text: a.innerText.trim().slice(0, 40), height: a.getBoundingClientRect().height}))
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_playwright() as pw:
        instance = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        try:
            yield instance
        finally:
            instance.close()


@pytest.fixture
def example_html(draft: int, seeded: Session, settings: Settings) -> str:
    html, _text, _rendered = publish.preview_edition(seeded, edition_id=draft, settings=settings)
    return html


@pytest.fixture
def web_html(draft: int, seeded: Session, settings: Settings) -> str:
    """The archive's web version: no greeting, a subscribe form, the archive link."""
    _html, _text, rendered = publish.preview_edition(seeded, edition_id=draft, settings=settings)
    return rendered.web_html


def without_styles(html: str) -> str:
    """The email as Gmail shows it: no <style> blocks, inline styles only."""
    return re.sub(r"<style\b[^>]*>.*?</style>", "", html, flags=re.DOTALL | re.IGNORECASE)


def _measure(
    browser: Any, html: str, mode: str, width: int, name: str = "weekly"
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    context = browser.new_context(
        viewport={"width": width, "height": 900},
        color_scheme="dark" if mode == "dark" else "light",
    )
    try:
        page = context.new_page()
        page.route("**/*", lambda route: route.abort())  # nothing remote, ever
        page.set_content(without_styles(html) if mode == "no-style" else html)
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"{name}-{mode}-{width}.png"), full_page=True)
        return list(page.evaluate(CONTRAST_JS)), list(page.evaluate(TAP_TARGETS_JS))
    finally:
        context.close()


@pytest.mark.parametrize("mode", MODES)
def test_every_text_meets_wcag_aa_contrast(browser: Any, example_html: str, mode: str) -> None:
    for width in WIDTHS:
        texts, _ = _measure(browser, example_html, mode, width)
        assert len(texts) > 50, f"{mode} {width}px: the probe found too little text"
        failing = [t for t in texts if t["ratio"] < (3.0 if t["large"] else 4.5)]
        assert not failing, f"{mode} at {width}px: " + "; ".join(
            f"{t['text']!r} {t['ratio']}:1 ({t['color']} on {t['bg']})" for t in failing[:8]
        )


@pytest.mark.parametrize("mode", MODES)
def test_the_web_version_meets_wcag_aa_contrast(browser: Any, web_html: str, mode: str) -> None:
    texts, _ = _measure(browser, web_html, mode, 375, name="web")
    assert any(t["text"] == "Subscribe" for t in texts)  # the form's button was measured
    failing = [t for t in texts if t["ratio"] < (3.0 if t["large"] else 4.5)]
    assert not failing, failing[:8]


@pytest.mark.parametrize("mode", MODES)
def test_buttons_and_lone_links_are_44px_tap_targets(
    browser: Any, example_html: str, mode: str
) -> None:
    _, targets = _measure(browser, example_html, mode, 375)
    assert targets, "no buttons found"
    short = [t for t in targets if t["height"] < 44]
    assert not short, short


def test_the_probe_catches_bad_contrast(browser: Any) -> None:
    """The measurement itself can fail: light grey on white is caught, in every mode."""
    html = (
        '<html><body style="background:#ffffff">'
        '<p style="color:#cccccc;font-size:15px">faint words here</p>'
        '<p style="color:#111111;font-size:15px">strong words here</p></body></html>'
    )
    texts, _ = _measure(browser, html, "light", 375, name="probe")
    ratios = {t["text"]: t["ratio"] for t in texts}
    assert ratios["faint words here"] < 4.5 < ratios["strong words here"]
    Path(SHOTS / "probe-light-375.png").unlink(missing_ok=True)  # not an email screenshot
