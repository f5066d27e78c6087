"""Send an edition's open deliveries in batches: fetch, re-check, personalize, send, record.

Reads top to bottom like listmonk's manager, with one difference that matters: a batch is
claimed in the ledger before it is sent and recorded only after the backend answered, so two
sends never mail the same person and a crash re-sends at most the batch in flight (after its
lease expires) and never skips anyone.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlmodel import Session

from newsletter import ledger
from newsletter.backends import MailBackend, SendStatus
from newsletter.models import DeliveryStatus
from newsletter.personalization import MessageTemplate, Recipient
from newsletter.tokens import TokenSigner

_TO_LEDGER = {
    SendStatus.sent: DeliveryStatus.sent,
    SendStatus.queued: DeliveryStatus.queued,
    SendStatus.deferred: DeliveryStatus.deferred,
    SendStatus.unknown: DeliveryStatus.unknown,
    SendStatus.rejected: DeliveryStatus.failed,
    SendStatus.invalid: DeliveryStatus.failed,
    SendStatus.failed: DeliveryStatus.failed,
}


@dataclass(slots=True)
class SendSummary:
    """What one run of a send did (not the edition's totals: see ``ledger.counts``)."""

    sent: int = 0
    failed: int = 0
    deferred: int = 0
    unknown: int = 0
    skipped: int = 0
    errors: list[str] = field(default_factory=list)  # a few samples for the operator

    @property
    def attempted(self) -> int:
        return self.sent + self.failed + self.deferred + self.unknown + self.skipped


def dispatch(
    session: Session,
    *,
    edition_id: int,
    newsletter_id: int,
    template: MessageTemplate,
    signer: TokenSigner,
    backend: MailBackend,
    batch_size: int,
    lease_seconds: float,
    on_batch: Callable[[int], None] | None = None,
) -> SendSummary:
    """One pass over the open deliveries of an edition; commits after every batch.

    A backend that raises (it should return a result per message instead) stops the pass; its
    batch stays claimed until the lease expires and is then sent by the next run.
    """
    summary = SendSummary()
    owner = uuid.uuid4().hex
    after_id = 0
    with backend:
        while True:
            batch = ledger.claim_batch(
                session,
                edition_id=edition_id,
                newsletter_id=newsletter_id,
                after_id=after_id,
                limit=batch_size,
                owner=owner,
                lease_seconds=lease_seconds,
            )
            if not batch:
                break
            after_id = batch[-1].id
            outcomes = [
                ledger.Outcome(d.id, DeliveryStatus.skipped, detail="unsubscribed before send")
                for d in batch
                if not d.still_subscribed
            ]
            summary.skipped += len(outcomes)
            to_send = []
            messages = []
            for d in batch:
                if not d.still_subscribed:
                    continue
                try:
                    message = template.build(Recipient(d.subscriber_id, d.email, d.name), signer)
                except ValueError as exc:  # one bad record must not stall the edition
                    outcomes.append(ledger.Outcome(d.id, DeliveryStatus.failed, detail=str(exc)))
                    summary.failed += 1
                    _note(summary, f"{d.email}: can't build message: {exc}")
                    continue
                to_send.append(d)
                messages.append(message)
            results = backend.send_messages(messages) if messages else []
            if len(results) != len(messages):
                raise RuntimeError(
                    f"{backend.describe()} returned {len(results)} results for "
                    f"{len(messages)} messages"
                )
            for delivery, message, result in zip(to_send, messages, results, strict=True):
                status = _TO_LEDGER[result.status]
                outcomes.append(
                    ledger.Outcome(
                        delivery.id,
                        status,
                        code=result.code,
                        detail=result.detail,
                        message_id=message.message_id,
                        provider_message_id=result.provider_id,
                    )
                )
                if status in (DeliveryStatus.sent, DeliveryStatus.queued):
                    summary.sent += 1
                    continue
                if status == DeliveryStatus.failed:
                    summary.failed += 1
                elif status == DeliveryStatus.unknown:
                    summary.unknown += 1
                else:
                    summary.deferred += 1
                _note(
                    summary,
                    f"{delivery.email}: {result.status} {result.code or ''} {result.detail}",
                )
            ledger.record(session, outcomes=outcomes, owner=owner)
            session.commit()
            if on_batch is not None:
                on_batch(len(batch))
    return summary


def _note(summary: SendSummary, error: str) -> None:
    """Keep a few sample errors for the operator, not thousands."""
    if len(summary.errors) < 5:
        summary.errors.append(error)
