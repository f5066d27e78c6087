"""Operators: find a subscriber, see their lists, events and deliveries, take them off a list
or everything, export their data, erase them; export a list as CSV. Personal data, so only
operators and admins see these pages, and every export and change is audited."""

from __future__ import annotations

import csv
import io
import json
import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from newsletter.audience import importing, privacy, subscriptions
from newsletter.operations import accounts, audit
from newsletter.storage import listings, store
from newsletter.storage.models import Subscriber
from newsletter.storage.planner import refresh_statistics
from newsletter.web.console.base import Ctx, Forbidden, Who, check_form, console_page, console_path
from newsletter.web.context import RowId, WebContext

router = APIRouter()

DONE = {
    "unsubscribe": "Unsubscribed from that newsletter.",
    "suppress": "Off every newsletter, and never mailed again.",
    "erase": "Erased: only a hashed suppression is left.",
}


def _require(who: Who) -> None:
    if not who.can("subscribers"):
        raise Forbidden(f"a {who.user.role} may not see subscribers")


@router.get("/subscribers", response_class=HTMLResponse)
def search(ctx: Ctx, who: Who, q: str = "") -> HTMLResponse:
    _require(who)
    query = q.strip()[:320]
    found: list[Subscriber] = []
    if query:
        with ctx.session() as session:
            found = listings.search_subscribers(session, text=query, limit=50)
    with ctx.session() as session:
        newsletters = list(store.newsletters_by_slug(session).values())
    return console_page(
        ctx, who, "console_subscribers.html", q=query, found=found, newsletters=newsletters
    )


@router.get("/subscribers/import", response_class=HTMLResponse)
def import_form(ctx: Ctx, who: Who) -> HTMLResponse:
    _require(who)
    return _import_page(ctx, who)


@router.get("/subscribers/{subscriber_id}", response_class=HTMLResponse)
def person(subscriber_id: RowId, ctx: Ctx, who: Who, done: str = "") -> HTMLResponse:
    _require(who)
    with ctx.session() as session:
        subscriber = session.get(Subscriber, subscriber_id)
        if subscriber is None:
            return ctx.message("Not found", status=404)
        lists = subscriptions.newsletters_of(session, subscriber_id=subscriber_id)
        events = listings.subscriber_events(
            session, subscriber_id=subscriber_id, newest_first=True, limit=50
        )
        deliveries = listings.subscriber_deliveries(session, subscriber_id=subscriber_id, limit=20)
    return console_page(
        ctx,
        who,
        "console_subscriber.html",
        subscriber=subscriber,
        lists=lists,
        events=events,
        deliveries=deliveries,
        notice=DONE.get(done),
    )


@router.post("/subscribers/{subscriber_id}/{action}", response_class=HTMLResponse)
def act(
    request: Request,
    subscriber_id: RowId,
    action: str,
    ctx: Ctx,
    who: Who,
    csrf: Annotated[str, Form()] = "",
    newsletter_id: Annotated[int, Form(ge=0, le=2**31 - 1)] = 0,
    confirm: Annotated[str, Form(max_length=10)] = "",
) -> Response:
    if action not in DONE:
        return ctx.message("Not found", status=404)
    check_form(request, who, csrf, "subscribers")
    if action == "erase" and confirm != "yes":
        return ctx.message("Not erased", "Tick the box to confirm the erasure.", status=400)
    now = ctx.clock()
    with ctx.session() as session:
        subscriber = session.get(Subscriber, subscriber_id)
        if subscriber is None:
            return ctx.message("Not found", status=404)
        target = f"subscriber {subscriber_id}"
        if action == "erase":
            privacy.erase(session, subscriber_id=subscriber_id, now=now, source="operator")
        else:
            subscriptions.unsubscribe(
                session,
                subscriber_id=subscriber_id,
                newsletter_id=newsletter_id,
                edition_id=None,
                source="operator",
                everything=action == "suppress",
            )
        audit.record(
            session,
            actor=who.user.email,
            action=f"subscriber.{action}",
            target=target,
            now=now,
            detail={"newsletter": newsletter_id} if action == "unsubscribe" else None,
        )
        session.commit()
    return RedirectResponse(
        console_path(ctx, f"/subscribers/{subscriber_id}?done={action}"), status_code=303
    )


@router.get("/subscribers/{subscriber_id}/export.json")
def export_person(subscriber_id: RowId, ctx: Ctx, who: Who) -> Response:
    """Everything stored about the person (a data access request), as a JSON download."""
    _require(who)
    with ctx.session() as session:
        try:
            data = privacy.person_data(session, subscriber_id=subscriber_id)
        except store.NotFound:
            return ctx.message("Not found", status=404)
        audit.record(
            session,
            actor=who.user.email,
            action="subscriber.export",
            target=f"subscriber {subscriber_id}",
            now=ctx.clock(),
        )
        session.commit()
    return Response(
        json.dumps(data, indent=2, ensure_ascii=False),
        media_type="application/json",
        headers={
            "Content-Disposition": f'attachment; filename="subscriber-{subscriber_id}.json"',
            "Cache-Control": "no-store",
        },
    )


@router.get("/newsletters/{slug}/export.csv")
def export_list(slug: str, ctx: Ctx, who: Who) -> Response:
    """The newsletter's active subscribers, in the import format (email,name,timezone)."""
    _require(who)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["email", "name", "timezone"])
    with ctx.session() as session:
        try:
            newsletter = store.get_newsletter(session, slug=slug)
        except store.NotFound:
            return ctx.message("Not found", status=404)
        assert newsletter.id is not None
        rows = listings.active_subscribers(session, newsletter_id=newsletter.id)
        for s in rows:
            # A leading = + - @ would be a formula in a spreadsheet: quote it as text.
            writer.writerow([_cell(s.email), _cell(s.name or ""), _cell(s.timezone or "")])
        audit.record(
            session,
            actor=who.user.email,
            action="newsletter.export",
            target=f"newsletter {slug}",
            now=ctx.clock(),
            detail={"rows": len(rows)},
        )
        session.commit()
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="{slug}-subscribers.csv"',
            "Cache-Control": "no-store",
        },
    )


def _cell(value: str) -> str:
    return "'" + value if value[:1] in ("=", "+", "-", "@") else value


#: The largest CSV the console takes in one upload (bigger lists go through the CLI).
MAX_UPLOAD = 20 * 1024 * 1024


@router.post("/subscribers/import", response_class=HTMLResponse)
async def import_csv(
    request: Request,
    ctx: Ctx,
    who: Who,
    csrf: Annotated[str, Form()] = "",
    newsletter: Annotated[str, Form(max_length=120)] = "",
    email: Annotated[str, Form(max_length=320)] = "",
    name: Annotated[str, Form(max_length=200)] = "",
    file: UploadFile | None = None,
) -> HTMLResponse:
    """A CSV upload, or one person typed in (as a one-line CSV): the same importer and the
    same per-line report as ``newsletter import subscribers``."""
    check_form(request, who, csrf, "subscribers")
    if file is not None and file.filename:
        data = await file.read(MAX_UPLOAD + 1)
        if len(data) > MAX_UPLOAD:
            return _import_page(
                ctx, who, problem=f"file: larger than {MAX_UPLOAD // 2**20} MB; use the CLI"
            )
        source = file.filename[:100]
    elif email.strip():
        buffer = io.StringIO()
        csv.writer(buffer).writerows([["email", "name"], [email.strip(), name.strip()]])
        data, source = buffer.getvalue().encode("utf-8"), "typed in"
    else:
        return _import_page(ctx, who, problem="choose a CSV file or type an address")
    now = ctx.clock()
    with tempfile.TemporaryDirectory() as folder, ctx.session() as session:
        path = Path(folder) / "upload.csv"
        path.write_bytes(data)
        try:
            target = store.get_newsletter(session, slug=newsletter or ctx.settings.newsletter)
            report = importing.import_subscribers(
                session, path=path, default_newsletter=target.slug, now=now
            )
        except (store.NotFound, OSError, ValueError) as exc:
            session.rollback()
            return _import_page(ctx, who, problem=str(exc))
        audit.record(
            session,
            actor=who.user.email,
            action="subscribers.import",
            target=f"newsletter {target.slug}",
            now=now,
            detail={
                "source": source,
                "created": report.created,
                "subscribed": report.subscribed,
                "rejected": len(report.rejected),
            },
        )
        session.commit()
        refresh_statistics(session, ("subscriber", "subscription"))
    return _import_page(ctx, who, report=report, source=source)


def _import_page(ctx: WebContext, who: accounts.SignedIn, **values: Any) -> HTMLResponse:
    with ctx.session() as session:
        newsletters = list(store.newsletters_by_slug(session).values())
    values.setdefault("problem", None)
    values.setdefault("report", None)
    status = 400 if values["problem"] else 200
    return console_page(ctx, who, "console_import.html", status, newsletters=newsletters, **values)
