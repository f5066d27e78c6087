"""Comparisons (JSON) and subscribers (CSV) in: validated first, then written.

Comparisons are all-or-nothing: one bad record and nothing is written, and every problem is
reported as ``record N (slug): field: message``. Subscribers import the good lines in one
transaction and report each rejected line with its number and reason (``--strict`` makes that
all-or-nothing too). An address that unsubscribed, bounced or complained is never re-activated.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import ValidationError
from sqlmodel import Session

from newsletter.audience.addresses import AddressError, check_name, normalize_email
from newsletter.audience.firstseen import FirstSeen
from newsletter.audience.readahead import read_ahead
from newsletter.edition.content import ComparisonData, ComparisonFile
from newsletter.errors import NewsletterError
from newsletter.storage import bulk, store
from newsletter.storage.models import ERASED, Newsletter, SubscriptionStatus

SUBSCRIBER_COLUMNS = ("email", "name", "timezone", "newsletters")


class ImportRejected(NewsletterError, ValueError):
    """The input can't be imported; ``problems`` lists every one, each naming record and field."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__(f"{len(problems)} problem(s):\n" + "\n".join(problems))
        self.problems = list(problems)

    def headline(self) -> str:
        return f"{len(self.problems)} problem(s); nothing was imported"


# --- comparisons ---------------------------------------------------------------------------


def parse_comparisons(text: str) -> list[ComparisonData]:
    """Validate a comparisons file; raise :class:`ImportRejected` listing every problem."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ImportRejected([f"file: not valid JSON: {exc}"]) from None
    except RecursionError:
        raise ImportRejected(["file: JSON nested too deeply"]) from None
    if not isinstance(document, dict) or not isinstance(document.get("comparisons"), list):
        raise ImportRejected(['file: expected an object {"comparisons": [...]}'])
    unknown = sorted(set(document) - {"comparisons", "$schema"})
    problems = [f"file: {key}: unknown top-level field" for key in unknown]
    records: list[ComparisonData] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(document["comparisons"], start=1):
        label = _record_label(number, raw)
        if isinstance(raw, dict) and "id" in raw:
            problems.append(f"{label}: id: not allowed in import files (slugs identify records)")
            continue
        try:
            record = ComparisonData.model_validate(raw)
        except ValidationError as exc:
            problems.extend(f"{label}: {_field(err['loc'])}: {err['msg']}" for err in exc.errors())
            continue
        if record.slug in seen:
            problems.append(f"{label}: slug: duplicate of record {seen[record.slug]}")
            continue
        seen[record.slug] = number
        records.append(record)
    if problems:
        raise ImportRejected(problems)
    return records


def read_text(path: Path, label: str) -> str:
    """The file as UTF-8 text (a byte-order mark is allowed), or one clear problem."""
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ImportRejected(
            [f"file {path.name}: not UTF-8 text (byte {exc.start}); save it as UTF-8"]
        ) from None


def utf8_lines(path: Path) -> int:
    """The file's line breaks, counted while checking that it is UTF-8 (a byte-order mark is
    allowed) a megabyte at a time; raises :class:`ImportRejected` naming the first bad byte.
    Checked before anything is written, so an import stays all-or-nothing on bad encoding
    while the lines themselves are read as a stream."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    lines = offset = 0
    with path.open("rb") as source:
        # Bytes are counted after a byte-order mark, as decoding the whole file counted them.
        bom = codecs.BOM_UTF8 if source.read(3) == codecs.BOM_UTF8 else b""
        source.seek(len(bom))
        while block := source.read(1 << 20):
            held = len(decoder.getstate()[0])  # bytes of a character cut by the last block
            try:
                decoder.decode(block)
            except UnicodeDecodeError as exc:
                raise _not_utf8(path, offset - held + exc.start) from None
            lines += block.count(b"\n")
            offset += len(block)
        held = len(decoder.getstate()[0])
        if held:  # the file ends inside a character: name where that character starts
            raise _not_utf8(path, offset - held)
    return lines


def _not_utf8(path: Path, byte: int) -> ImportRejected:
    return ImportRejected([f"file {path.name}: not UTF-8 text (byte {byte}); save it as UTF-8"])


def _open_csv(path: Path) -> TextIO:
    """The file as a text stream for the csv module (checked by :func:`utf8_lines` first)."""
    return path.open(encoding="utf-8-sig", newline="")


def _shown(value: str, limit: int = 60) -> str:
    """A value from the input as it may be echoed to a terminal: control characters escaped
    (an ESC in a CSV must not recolour or clear the operator's screen) and cut to ``limit``
    characters (a 1 MB slug was repeated once per problem: 6 MB of stderr)."""
    escaped = "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in value
    )
    if len(escaped) <= limit:
        return escaped
    return f"{escaped[:limit]}… ({len(value):,} characters)"


def _record_label(number: int, raw: Any) -> str:
    slug = raw.get("slug") if isinstance(raw, dict) else None
    return f"record {number} ({_shown(slug) if isinstance(slug, str) and slug else 'no slug'})"


def _field(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "record"


def comparisons_json_schema() -> str:
    """The JSON Schema of an import file, generated from the validating models."""
    schema = ComparisonFile.model_json_schema()
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **schema,
    }
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def import_comparisons(session: Session, *, path: Path) -> store.UpsertReport:
    """Validate everything in ``path``, then upsert by slug. The caller commits."""
    records = parse_comparisons(read_text(path, "record 0 (file)"))
    return store.upsert_comparisons(session, records=records)


# --- subscribers ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SubscriberRow:
    line: int
    email: str
    email_key: str
    name: str | None
    timezone: str | None
    newsletters: tuple[str, ...]


@dataclass(slots=True)
class SubscriberImportReport:
    created: int = 0
    updated: int = 0
    subscribed: int = 0
    kept_unsubscribed: int = 0
    suppressed: int = 0
    rejected: list[str] = field(default_factory=list)


#: The longest CSV field read (the whole file is in memory already).
MAX_FIELD_BYTES = 16 * 1024 * 1024


def parse_subscribers(
    text: str, *, known_newsletters: set[str], default_newsletter: str
) -> tuple[list[SubscriberRow], list[str]]:
    """Valid rows and one message per rejected line (``line N (email): field: reason``)."""
    rows: list[SubscriberRow] = []
    rejected: list[str] = []
    for item in iter_subscribers(
        text, known_newsletters=known_newsletters, default_newsletter=default_newsletter
    ):
        if isinstance(item, str):
            rejected.append(item)
        else:
            rows.append(item)
    return rows, rejected


def iter_subscribers(
    text: str | TextIO,
    *,
    known_newsletters: set[str],
    default_newsletter: str,
    expected_lines: int = 0,
) -> Iterator[SubscriberRow | str]:
    """Each valid row, or the message of a rejected line, in file order (a header problem
    raises :class:`ImportRejected` before anything is yielded). ``text`` is the CSV, or a
    stream of it opened with ``newline=""`` (read a line at a time: a million-line file is
    never held whole). ``expected_lines`` sizes the table of addresses seen once."""
    # newline="" leaves line breaks to the csv module, which splits on \r and \n only
    # (str.splitlines would also split on NEL and U+2028 inside a name).
    # Python's csv refuses fields over 128 KB with an error that names the wrong line; a long
    # field is better refused by the field's own check, on its own line, with its value cut.
    csv.field_size_limit(max(csv.field_size_limit(), MAX_FIELD_BYTES))
    reader = csv.DictReader(io.StringIO(text, newline="") if isinstance(text, str) else text)
    header = [h.strip().lower() for h in (reader.fieldnames or [])]
    if "email" not in header:
        raise ImportRejected(["line 1: header: needs an 'email' column"])
    unknown = [h for h in header if h not in SUBSCRIBER_COLUMNS]
    if unknown:
        raise ImportRejected(
            [
                f"line 1: header: unknown column(s) {', '.join(_shown(u) for u in unknown)}; "
                f"known: {', '.join(SUBSCRIBER_COLUMNS)}"
            ]
        )
    reader.fieldnames = header
    seen = FirstSeen(expected_lines)
    while True:
        try:
            raw = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            yield f"line {reader.line_num}: row: {exc}"
            continue
        line = reader.line_num
        if None in raw:
            yield f"line {line}: row: more fields than the header has"
            continue
        values = {k: (v or "").strip() for k, v in raw.items()}
        row, problem = _subscriber_row(
            line, values, known_newsletters=known_newsletters, default=default_newsletter
        )
        if problem:
            yield problem
            continue
        assert row is not None
        earlier = seen.first(row.email_key, line)
        if earlier is not None:
            yield f"line {line} ({row.email}): email: duplicate of line {earlier}"
            continue
        yield row


def _subscriber_row(
    line: int, values: dict[str, str], *, known_newsletters: set[str], default: str
) -> tuple[SubscriberRow | None, str | None]:
    raw_email = values.get("email", "")

    def label() -> str:  # only for a rejected line: escaping every good one cost 4 us
        return f"line {line} ({_shown(raw_email) if raw_email else 'no email'})"

    try:
        email, email_key = normalize_email(raw_email)
    except AddressError as exc:
        return None, f"{label()}: email: {_shown(str(exc), 200)}"
    try:
        name = check_name(values.get("name"))
    except AddressError as exc:
        return None, f"{label()}: name: {_shown(str(exc), 200)}"
    tz = values.get("timezone") or None
    if tz is not None:
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            return None, f"{label()}: timezone: unknown IANA time zone {_shown(tz)!r}"
    slugs = tuple(dict.fromkeys((values.get("newsletters") or default).replace(";", " ").split()))
    missing = [s for s in slugs if s not in known_newsletters]
    if missing:
        shown = ", ".join(_shown(m) for m in missing[:5]) + (" …" if len(missing) > 5 else "")
        return None, f"{label()}: newsletters: unknown newsletter(s) {shown}"
    return (
        SubscriberRow(line, email, email_key, name, tz, slugs),
        None,
    )


#: Lines parsed, looked up and written together: memory stays at one chunk's objects (plus
#: 20 bytes per address seen, for duplicates: :mod:`newsletter.audience.firstseen`) however long the
#: file.
IMPORT_CHUNK = 10_000


def import_subscribers(
    session: Session,
    *,
    path: Path,
    default_newsletter: str,
    strict: bool = False,
    now: datetime,
    on_progress: Callable[[int, int], None] | None = None,
) -> SubscriberImportReport:
    """Import the valid lines of a subscriber CSV; the caller commits.

    With ``strict`` any rejected line raises :class:`ImportRejected` before anything is
    written (the file is read twice: validated whole, then imported).
    Set-based (:mod:`newsletter.storage.bulk`), :data:`IMPORT_CHUNK` lines at a time: one query per
    2,000 addresses to find who is known, then ``executemany`` (COPY on PostgreSQL) for the
    new people, their subscriptions and events. ``on_progress(lines done, lines in all)``
    follows each chunk (the CLI draws its progress bar from it). ``now`` is the time written
    on the new rows (the command's or the request's clock).
    """
    newsletters = store.newsletters_by_slug(session)
    total = max(0, utf8_lines(path) - 1) or 1  # refuses a file that is not UTF-8, up front
    known_newsletters = set(newsletters)
    if strict:
        with _open_csv(path) as stream:
            problems = [
                item
                for item in iter_subscribers(
                    stream,
                    known_newsletters=known_newsletters,
                    default_newsletter=default_newsletter,
                    expected_lines=total,
                )
                if isinstance(item, str)
            ]
        if problems:
            raise ImportRejected(problems)
    report = SubscriberImportReport()
    with _open_csv(path) as stream:
        parsed = _parsed_chunks(
            stream,
            known_newsletters=known_newsletters,
            default_newsletter=default_newsletter,
            expected_lines=total,
        )
        # the next chunk parsed while this is written; closed (the thread joined) before the
        # file is, whatever ends the loop
        with closing(read_ahead(parsed)) as chunks:
            for rows, rejected in chunks:
                report.rejected.extend(rejected)
                _import_chunk(session, rows, newsletters, report, path.name, now)
                if len(rows) >= IMPORT_CHUNK and on_progress is not None:  # the last: below
                    on_progress(min(rows[-1].line, total), total)
    if on_progress is not None:
        on_progress(total, total)
    return report


def _parsed_chunks(
    stream: TextIO, *, known_newsletters: set[str], default_newsletter: str, expected_lines: int
) -> Iterator[tuple[list[SubscriberRow], list[str]]]:
    """:data:`IMPORT_CHUNK` valid rows at a time, with the lines rejected among them."""
    rows: list[SubscriberRow] = []
    rejected: list[str] = []
    for item in iter_subscribers(
        stream,
        known_newsletters=known_newsletters,
        default_newsletter=default_newsletter,
        expected_lines=expected_lines,
    ):
        if isinstance(item, str):
            rejected.append(item)
            continue
        rows.append(item)
        if len(rows) >= IMPORT_CHUNK:
            yield rows, rejected
            rows, rejected = [], []
    yield rows, rejected


def _import_chunk(
    session: Session,
    rows: Sequence[SubscriberRow],
    newsletters: Mapping[str, Newsletter],
    report: SubscriberImportReport,
    file_name: str,
    now: datetime,
) -> None:
    """Write one chunk of valid, distinct lines and count what happened in ``report``."""
    if not rows:
        return
    known = bulk.find_subscribers(session, keys=[r.email_key for r in rows])
    new = [r for r in rows if r.email_key not in known]
    ids = bulk.insert_subscribers(
        session, rows=[(r.email, r.email_key, r.name, r.timezone) for r in new], now=now
    )
    report.created += len(new)
    changes = []
    for row in rows:
        person = known.get(row.email_key)
        if person is None:
            continue
        ids[row.email_key] = person.id
        if person.suppressed == ERASED:  # erased on request: nothing of theirs comes back
            continue
        if (row.name and row.name != person.name) or (
            row.timezone and row.timezone != person.timezone
        ):
            changes.append((person.id, row.name or person.name, row.timezone or person.timezone))
    bulk.update_subscribers(session, changes=changes)
    report.updated += len(changes)
    current = bulk.find_subscriptions(session, subscriber_ids=[k.id for k in known.values()])
    joining: list[tuple[int, int, str]] = []
    for row in rows:
        person = known.get(row.email_key)
        if person is not None and person.suppressed:  # erased, bounced, complained, left all
            report.suppressed += 1
            continue
        subscriber_id = ids[row.email_key]
        for slug in row.newsletters:
            newsletter_id = newsletters[slug].id
            assert newsletter_id is not None
            status = current.get((subscriber_id, newsletter_id))
            if status is None:
                joining.append((subscriber_id, newsletter_id, f"{file_name} line {row.line}"))
                current[(subscriber_id, newsletter_id)] = SubscriptionStatus.active.value
                report.subscribed += 1
            elif status == SubscriptionStatus.unsubscribed:
                report.kept_unsubscribed += 1
    bulk.subscribe(
        session, rows=joining, status=SubscriptionStatus.active.value, source="import", now=now
    )
