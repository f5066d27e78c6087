"""Benchmark: the bytes of the weekly email, decoded and as sent (quoted-printable), for the
example week (4 comparisons), all eight example comparisons, and the largest item cap
(50 comparisons made from the examples). Gmail clips an HTML part over 102 KB as it arrives.

    python bench/email_bytes.py
"""

from __future__ import annotations

import binascii
import json
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from render_send import bench_settings
from sqlmodel import Session

from newsletter import publish
from newsletter.audience import importing
from newsletter.paths import example_comparisons
from newsletter.storage.database import make_engine, upgrade

AT = datetime(2026, 11, 25, 12, tzinfo=UTC)


def encoded(text: str) -> int:
    data = text.replace("\r\n", "\n").encode("utf-8")
    return len(
        binascii.b2a_qp(data, quotetabs=False, istext=True, header=False).replace(b"\n", b"\r\n")
    )


def comparisons(count: int) -> list[dict]:
    """``count`` comparisons published in the example week, cycling through the examples."""
    base = json.loads(example_comparisons().read_text())["comparisons"]
    out = []
    for i in range(count):
        record = dict(base[i % len(base)])
        record["slug"] = f"{record['slug']}-{i}"
        record["url"] = f"{record['url']}-{i}"
        record["published_at"] = (AT - timedelta(hours=1 + i)).isoformat()
        out.append(record)
    return out


def measure(count: int, cap: int) -> tuple[int, int, int, int, float]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = bench_settings(f"sqlite:///{tmp}/b.db")
        engine = make_engine(settings.database_url)
        upgrade(engine)
        path = Path(tmp) / "c.json"
        path.write_text(json.dumps({"comparisons": comparisons(count)}))
        with Session(engine, expire_on_commit=False) as session:
            newsletter = publish.default_newsletter(session, settings)
            newsletter.item_cap = cap
            session.commit()
            importing.import_comparisons(session, path=path)
            session.commit()
            draft = publish.draft_edition(session, settings=settings, newsletter_slug=None, at=AT)
            start = time.perf_counter()
            page, text, rendered = publish.preview_edition(
                session, edition_id=draft.edition.id or 0, settings=settings
            )
            seconds = time.perf_counter() - start
        engine.dispose()
        compact = getattr(rendered, "compact_count", 0)
        return len(page.encode()), encoded(page), len(text.encode()), compact, seconds


def main() -> None:
    print(f"{'edition':<34}{'HTML':>10}{'HTML as sent':>14}{'text':>8}{'compact':>9}{'render':>9}")
    for label, count, cap in (
        ("example week (4 comparisons)", 4, 8),
        ("8 comparisons, cap 8", 8, 8),
        ("50 comparisons, cap 50 (max)", 50, 50),
    ):
        html, sent, text, compact, seconds = measure(count, cap)
        flag = "  CLIPPED" if sent > 102 * 1024 else ""
        print(f"{label:<34}{html:>10,}{sent:>14,}{text:>8,}{compact:>9}{seconds:>8.2f}s{flag}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
