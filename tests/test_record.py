"""``ledger.record`` stores every kind of answer the same whichever of its two statements
carries it (accepted answers go in a compact one passed to the driver as it is), on SQLite
and PostgreSQL: status, codes, texts, ids, attempts, times and the lease."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Engine, text
from sqlmodel import Session

from newsletter.sending import ledger
from newsletter.sending.ledger import Outcome
from newsletter.storage.models import Delivery, DeliveryStatus

from .test_tally import NOW, _claim, _editions

LATER = NOW + timedelta(minutes=7)


def _row(session: Session, delivery_id: int) -> Delivery:
    session.expire_all()
    row = session.get(Delivery, delivery_id)
    assert row is not None
    return row


def test_each_kind_of_answer_is_stored_whole(both_engine: Engine) -> None:
    first, _, _ = _editions(both_engine, 8)
    with Session(both_engine) as session:
        ids = _claim(session, first, "a", 8, NOW)
        # An earlier attempt left an error and a provider id behind on the first two.
        session.execute(
            text(
                "UPDATE delivery SET error_code = 451, error_text = 'try later', "
                "provider_message_id = 'old', attempts = 2, retry_at = :t WHERE id IN (:a, :b)"
            ),
            {"t": NOW, "a": ids[0], "b": ids[1]},
        )
        session.commit()
        outcomes = [
            Outcome(ids[0], DeliveryStatus.sent, code=250, detail="ok", message_id="<m0@x>"),
            Outcome(ids[1], DeliveryStatus.queued, message_id="<m1@x>", provider_message_id="p1"),
            Outcome(
                ids[2],
                DeliveryStatus.deferred,
                code=421,
                detail="busy",
                message_id="<m2@x>",
                retry_at=LATER + timedelta(hours=1),
            ),
            Outcome(ids[3], DeliveryStatus.failed, code=550, detail="no such user"),
            Outcome(ids[4], DeliveryStatus.skipped, detail="unsubscribed"),
            Outcome(ids[5], DeliveryStatus.sent, message_id="<m5@x>"),
            Outcome(ids[6], DeliveryStatus.sent, message_id="<m6@x>"),  # lost below
        ]
        session.execute(text("UPDATE delivery SET lease_owner = 'b' WHERE id = :i"), {"i": ids[6]})
        session.commit()
        assert ledger.record(session, outcomes=outcomes, owner="a", now=LATER) == 6
        session.commit()

        sent = _row(session, ids[0])
        assert (sent.status, sent.error_code, sent.error_text) == ("sent", None, None)
        assert (sent.message_id, sent.provider_message_id) == ("<m0@x>", None)
        assert (sent.attempts, sent.retry_at, sent.lease_owner, sent.lease_until) == (
            3,
            None,
            None,
            None,
        )
        assert sent.updated_at == LATER
        queued = _row(session, ids[1])
        assert (queued.status, queued.provider_message_id, queued.error_text) == (
            "queued",
            "p1",
            None,
        )
        deferred = _row(session, ids[2])
        assert (deferred.status, deferred.error_code, deferred.error_text) == (
            "deferred",
            421,
            "busy",
        )
        assert deferred.retry_at == LATER + timedelta(hours=1)
        assert deferred.attempts == 1
        failed = _row(session, ids[3])
        assert (failed.status, failed.error_code, failed.error_text) == (
            "failed",
            550,
            "no such user",
        )
        skipped = _row(session, ids[4])
        assert (skipped.status, skipped.attempts) == ("skipped", 0)  # not an attempt
        assert _row(session, ids[5]).updated_at == LATER
        lost = _row(session, ids[6])
        assert (lost.status, lost.lease_owner, lost.message_id) == ("claimed", "b", None)
        assert _row(session, ids[7]).status == "claimed"  # not answered yet
        # The accepted ones count in the send page's rate, by their recorded time.
        page = ledger.progress(session, edition_id=first, now=LATER + timedelta(seconds=5))
        assert page.sent_last_minute == 3
