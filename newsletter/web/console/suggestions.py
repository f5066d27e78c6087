"""Writers' suggestions on a draft: write them (the answer streams onto the page as the
model produces it; no JavaScript needed, the browser renders the page as it arrives), and
accept or reject each one (audited). Accepting makes the suggestion's headline the edition's
call on that comparison, which the editor can still edit; nothing a model wrote reaches an
edition without an editor's accept."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from markupsafe import escape
from sqlmodel import Session

from newsletter import publish, writers
from newsletter.storage import store
from newsletter.web.console.base import Ctx, Who, check_form, console_path
from newsletter.web.console.drafts import _shape, refused
from newsletter.web.context import SECURITY_HEADERS, RowId
from newsletter.writers.suggestions import INTRO_KEY, SuggestReport, suggest_recorded

router = APIRouter()
#: Where the streamed part goes in the page (the template renders this marker).
_MARK = "<!--stream-->"


@router.post("/editions/{edition_id}/suggest", response_class=HTMLResponse)
def write_suggestions(
    request: Request, edition_id: RowId, ctx: Ctx, who: Who, csrf: Annotated[str, Form()] = ""
) -> Response:
    """Ask the configured writer about every comparison of the draft (reusing what it already
    wrote for the same content), streaming each answer onto the page."""
    check_form(request, who, csrf, "drafts")
    now = ctx.clock()
    with ctx.session() as session:
        try:
            edition = store.get_edition(session, edition_id=edition_id)
        except store.NotFound:
            return ctx.message("Not found", status=404)
        try:
            writer = writers.for_edition(session, ctx.settings, edition_id)
        except writers.WriterError as exc:
            return refused(ctx, who, edition_id, f"No suggestions: {exc}.", status=400)
        titles = {
            c.id or 0: c.title for c in store.edition_comparisons(session, edition_id=edition_id)
        }
        titles[INTRO_KEY] = "The week's intro"
    rendered = ctx.page(
        "console_suggest.html",
        who=who,
        console=lambda p: console_path(ctx, p),
        edition=edition,
        writer=writer,
        mark=_MARK,
    ).body
    page = bytes(rendered).decode()
    head, _, tail = page.partition(_MARK)
    events: queue.Queue[tuple[str, Any, Any]] = queue.Queue()

    def work() -> None:
        with ctx.session() as session:
            try:
                report = suggest_recorded(
                    session,
                    edition_id=edition_id,
                    writer=writer,
                    budget=ctx.settings.writer_budget,
                    now=now,
                    actor=who.user.email,
                    on_delta=lambda cid, piece: events.put(("delta", cid, piece)),
                    intro_from=lambda: publish.edition_verdicts(
                        session,
                        edition=store.get_edition(session, edition_id=edition_id),
                        settings=ctx.settings,
                    ),
                )
                events.put(("done", report, None))
            except Exception as exc:  # the page must end, whatever happened
                events.put(("failed", type(exc).__name__, None))

    def stream() -> Iterator[str]:
        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        yield head
        current: int | None = None
        while True:
            kind, first, second = events.get()
            if kind == "delta":
                if first != current:
                    if current is not None:
                        yield "</pre>"
                    current = first
                    yield f'<h2>{escape(titles.get(first, str(first)))}</h2><pre class="text">'
                yield str(escape(second))
                continue
            if current is not None:
                yield "</pre>"
            yield (
                _summary(first)
                if kind == "done"
                else (
                    f'<div class="error" role="alert">Writing stopped: {escape(first)}. '
                    "Nothing was changed in the draft.</div>"
                )
            )
            break
        thread.join(timeout=5)
        yield tail

    return StreamingResponse(
        stream(), media_type="text/html; charset=utf-8", headers=SECURITY_HEADERS
    )


def _summary(report: SuggestReport) -> str:
    intro = {"written": ", the intro written", "reused": ", the intro already written"}
    lines = [
        f"{report.written} written, {report.reused} already written for this content"
        f"{intro.get(report.intro or '', '')}, {report.tokens:,} tokens"
        + (f", about ${report.cost_usd:.4f}" if report.cost_usd else "")
        + "."
    ]
    notes = "".join(f"<li>{escape(n)}</li>" for n in report.notes)
    return f'<div class="ok" role="status">{escape(lines[0])}</div>' + (
        f'<ul id="notes">{notes}</ul>' if notes else ""
    )


#: The accept form's fields, and the part of the written verdict each edits.
_EDIT_FIELDS = {
    "headline": "headline",
    "for_whom_0": "tools.0.for_whom",
    "for_0": "tools.0.reason_for.text",
    "against_0": "tools.0.reason_against.text",
    "for_whom_1": "tools.1.for_whom",
    "for_1": "tools.1.reason_for.text",
    "against_1": "tools.1.reason_against.text",
}
_Field = Annotated[str | None, Form(max_length=1000)]


@router.post(
    "/editions/{edition_id}/suggestions/{suggestion_id}/{decision}", response_class=HTMLResponse
)
def decide(
    request: Request,
    edition_id: RowId,
    suggestion_id: RowId,
    decision: str,
    ctx: Ctx,
    who: Who,
    csrf: Annotated[str, Form()] = "",
    headline: _Field = None,
    for_whom_0: _Field = None,
    for_0: _Field = None,
    against_0: _Field = None,
    for_whom_1: _Field = None,
    for_1: _Field = None,
    against_1: _Field = None,
) -> Response:
    """Accept (with the editor's edits to the words; the quotes stay) or reject one
    suggestion; audited with the fields the editor changed."""
    if decision not in ("accept", "reject"):
        return ctx.message("Not found", status=404)
    given = {
        "headline": headline,
        "for_whom_0": for_whom_0,
        "for_0": for_0,
        "against_0": against_0,
        "for_whom_1": for_whom_1,
        "for_1": for_1,
        "against_1": against_1,
    }
    edits = {_EDIT_FIELDS[name]: value for name, value in given.items() if value is not None}

    def change(session: Session) -> dict[str, Any]:
        try:
            comparison, call, edited = publish.decide_suggestion(
                session,
                edition_id=edition_id,
                suggestion_id=suggestion_id,
                accept=decision == "accept",
                edits=edits,
            )
        except store.NotFound as exc:
            raise publish.ShapingError(str(exc)) from None
        return {
            "suggestion": suggestion_id,
            "comparison": comparison,
            "verdict": call,
            **({"edited": edited} if edited else {}),
        }

    return _shape(request, ctx, who, edition_id, csrf, f"suggestion.{decision}", change)


@router.post(
    "/editions/{edition_id}/intro-suggestions/{suggestion_id}/{decision}",
    response_class=HTMLResponse,
)
def decide_intro(
    request: Request,
    edition_id: RowId,
    suggestion_id: RowId,
    decision: str,
    ctx: Ctx,
    who: Who,
    csrf: Annotated[str, Form()] = "",
) -> Response:
    """Accept (it becomes the intro, editable in the intro form) or reject a written
    intro; audited."""
    if decision not in ("accept", "reject"):
        return ctx.message("Not found", status=404)

    def change(session: Session) -> dict[str, Any]:
        try:
            text = publish.decide_intro_suggestion(
                session,
                edition_id=edition_id,
                suggestion_id=suggestion_id,
                accept=decision == "accept",
            )
        except store.NotFound as exc:
            raise publish.ShapingError(str(exc)) from None
        return {"intro_suggestion": suggestion_id, "intro": text}

    return _shape(request, ctx, who, edition_id, csrf, f"intro-suggestion.{decision}", change)
