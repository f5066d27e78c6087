"""The audit log: who changed what and when, from the console or the CLI.

One row per change, with the before and after (JSON) where the change has them. Writers call
:func:`record` in the same transaction as the change, so a change and its record commit or
roll back together.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from newsletter.storage.models import AuditEvent


def record(
    session: Session,
    *,
    actor: str,
    action: str,
    target: str,
    now: datetime,
    detail: dict[str, Any] | None = None,
) -> None:
    session.add(
        AuditEvent(
            at=now,
            actor=actor[:320],
            action=action[:64],
            target=target[:200],
            detail=json.dumps(detail, ensure_ascii=False, default=str) if detail else None,
        )
    )


def recent(
    session: Session, *, target: str | None = None, action: str | None = None, limit: int = 200
) -> list[AuditEvent]:
    """The newest events first, optionally for one target ("edition 7") or one action."""
    query = select(AuditEvent).order_by(col(AuditEvent.id).desc()).limit(limit)
    if target:
        query = query.where(AuditEvent.target == target)
    if action:
        query = query.where(AuditEvent.action == action)
    return list(session.exec(query).all())
