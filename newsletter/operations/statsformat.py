"""The stats as text: CSV, JSON and a plain table for the terminal.

Kept apart from :mod:`newsletter.operations.stats` (which owns the queries) so each stays small.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import date, datetime
from typing import Any

from newsletter.operations.stats import UNSUBSCRIBE_SOURCES, EditionStats, WeekGrowth

Rows = Sequence[EditionStats] | Sequence[WeekGrowth]


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, float):
        return round(value, 6)
    return value


def as_records(rows: Rows) -> list[dict[str, Any]]:
    """JSON-ready dicts: ISO 8601 dates, rates as fractions rounded to 6 places."""
    return [{k: _plain(v) for k, v in asdict(row).items()} for row in rows]


def to_json(rows: Rows) -> str:
    return json.dumps(as_records(rows), indent=2)


def report_json(editions: Sequence[EditionStats], growth: Sequence[WeekGrowth]) -> str:
    """Both reports as one JSON object: ``{"editions": [...], "growth": [...]}``."""
    return json.dumps({"editions": as_records(editions), "growth": as_records(growth)}, indent=2)


def to_csv(rows: Rows) -> str:
    """A header and one line per row ("" for no rows); sources become ``unsubscribes_<source>``."""
    records = as_records(rows)
    if not records:
        return ""
    extra = sorted({s for r in records for s in r.get("unsubscribes_by_source", {})})
    sources = [*UNSUBSCRIBE_SOURCES, *(s for s in extra if s not in UNSUBSCRIBE_SOURCES)]
    for record in records:
        if "unsubscribes_by_source" in record:
            counts = record.pop("unsubscribes_by_source")
            record.update({f"unsubscribes_{s}": counts.get(s, 0) for s in sources})
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(records[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return out.getvalue()


def _day(e: EditionStats) -> str:
    moment = e.sent_at or e.send_started_at
    return f"{moment:%Y-%m-%d}" if moment else "-"


def _one_line(text: str, width: int = 40) -> str:
    text = "".join(c if c.isprintable() else " " for c in text)  # no terminal escapes
    return text if len(text) <= width else text[: width - 1] + "…"


_EDITION_COLUMNS: list[tuple[str, Callable[[Any], object]]] = [
    ("id", lambda e: e.edition_id),
    ("newsletter", lambda e: e.newsletter_slug),
    ("date", _day),
    ("status", lambda e: e.status),
    ("recipients", lambda e: e.recipients),
    ("sent", lambda e: e.sent),
    ("delivered", lambda e: e.delivered),
    ("failed", lambda e: e.failed),
    ("hard", lambda e: e.bounced_hard),
    ("soft", lambda e: e.bounced_soft),
    ("bounce %", lambda e: f"{e.bounce_rate * 100:.2f}"),
    ("complaints", lambda e: e.complaints),
    ("compl %", lambda e: f"{e.complaint_rate * 100:.2f}"),
    ("unsubs", lambda e: e.unsubscribes),
    ("unsub %", lambda e: f"{e.unsubscribe_rate * 100:.2f}"),
    ("subject", lambda e: _one_line(e.subject)),
]
_GROWTH_COLUMNS: list[tuple[str, Callable[[Any], object]]] = [
    ("week", lambda w: w.week),
    ("starts", lambda w: w.week_start.isoformat()),
    ("joined", lambda w: w.joined),
    ("left", lambda w: w.left),
    ("net", lambda w: f"{w.net:+d}"),
    ("active", lambda w: w.active_at_end),
]


def to_table(rows: Rows) -> str:
    """Aligned columns for a terminal (numbers right-aligned); "" for no rows."""
    if not rows:
        return ""
    columns = _EDITION_COLUMNS if isinstance(rows[0], EditionStats) else _GROWTH_COLUMNS
    cells = [[str(get(row)) for _, get in columns] for row in rows]
    header = [name for name, _ in columns]
    widths = [max(len(c) for c in column) for column in zip(header, *cells, strict=True)]
    numeric = [
        all(c.lstrip("+-").replace(".", "").isdigit() for c in col_)
        for col_ in zip(*cells, strict=True)
    ]
    lines = []
    for line in [header, *cells]:
        padded = [
            c.rjust(w) if num else c.ljust(w)
            for c, w, num in zip(line, widths, numeric, strict=True)
        ]
        lines.append("  ".join(padded).rstrip())
    return "\n".join(lines) + "\n"
