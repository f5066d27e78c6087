"""Send an edition's open deliveries in batches: claim, re-check, personalize, send, record.

Reads top to bottom like listmonk's manager, with one difference that matters: a batch is
claimed in the ledger before it is sent and recorded only after the backend answered, so two
sends never mail the same person and a crash re-sends at most the batch in flight (after its
lease expires) and never skips anyone.

Before every batch the edition's status is read again, so a pause or cancel takes effect
within one batch. Transient failures are retried later with exponential backoff and jitter,
up to ``max_attempts``; N failures in a row (the error budget) pause the edition and say why.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import update
from sqlmodel import Session, col

from newsletter.backends import BackendError, MailBackend, SendResult, SendStatus
from newsletter.backends.base import HandoverError
from newsletter.clock import Clock
from newsletter.edition.message import OutgoingMessage
from newsletter.edition.personalization import MessageTemplate, Recipient
from newsletter.edition.tokens import TokenSigner
from newsletter.edition.verp import DeliveryRef
from newsletter.feedback import bounces
from newsletter.feedback.bounce_reports import classify_reply
from newsletter.sending import journal, ledger, reputation
from newsletter.sending.domainrate import BACKOFF_CODES, DomainGate
from newsletter.sending.journal import JournalError, ResultJournal
from newsletter.sending.progress import SendProgress
from newsletter.sending.ratelimit import Limiter
from newsletter.sending.redaction import Redactor
from newsletter.storage import store
from newsletter.storage.models import DeliveryStatus, EditionStatus, Subscriber
from newsletter.webhooks.base import EventKind, ProviderEvent

_TO_LEDGER = {
    SendStatus.sent: DeliveryStatus.sent,
    SendStatus.queued: DeliveryStatus.queued,
    SendStatus.deferred: DeliveryStatus.deferred,
    SendStatus.unknown: DeliveryStatus.unknown,
    SendStatus.rejected: DeliveryStatus.failed,
    SendStatus.invalid: DeliveryStatus.failed,
    SendStatus.failed: DeliveryStatus.failed,
}


@dataclass(frozen=True, slots=True)
class Policy:
    """How one send behaves; built from settings by ``publish``."""

    batch_size: int = 500
    lease_seconds: float = 300
    max_attempts: int = 5  # a transient failure after this many tries becomes failed
    retry_base_seconds: float = 60  # first retry after ~1 min, then 2, 4, 8... (jittered)
    retry_max_seconds: float = 3600
    error_budget: int = 100  # failures in a row that pause the edition (0 = never)
    #: Soft bounces in a row that suppress an address (a 5xx at send time that is not the
    #: address's fault counts as one; see
    #: :func:`newsletter.feedback.bounce_reports.classify_reply`).
    soft_bounce_limit: int = 3
    #: The reputation breaker's limits; None: no breaker during the send.
    limits: reputation.Thresholds | None = field(default_factory=reputation.Thresholds)
    #: Masks configured secrets in every provider text before it is stored or shown.
    redactor: Redactor = field(default_factory=Redactor)

    def retry_at(self, attempts: int, now: datetime, rng: random.Random) -> datetime:
        """Full jitter (AWS architecture blog): uniform in [base*2^(n-1)/2, base*2^(n-1)]."""
        delay = min(self.retry_max_seconds, self.retry_base_seconds * 2 ** max(0, attempts - 1))
        return now + timedelta(seconds=delay * (0.5 + rng.random() / 2))


@dataclass(slots=True)
class SendSummary:
    """What one run of a send did (not the edition's totals: see ``ledger.counts``)."""

    sent: int = 0
    failed: int = 0
    deferred: int = 0
    unknown: int = 0
    skipped: int = 0
    #: Claims another sender took over (this one's lease had run out) before this one sent
    #: them: left to that sender, not sent by this one.
    taken_over: int = 0
    #: Answers that found their delivery no longer claimed by this sender: the ledger kept the
    #: other sender's record. Should stay 0 now that leases are renewed; shown when it is not.
    unrecorded: int = 0
    stopped_because: str | None = None  # paused, cancelled, or the error budget
    errors: list[str] = field(default_factory=list)  # a few samples for the operator
    #: Recipients refused for good at send time (550 5.1.1) and reported as hard bounces.
    hard_bounced: int = 0
    #: Deliveries the domain gate held back for later (a domain's limit, back-off, warm-up).
    held_back: int = 0
    #: The reputation breaker paused the edition during this run (the caller alerts).
    trips: list[reputation.Trip] = field(default_factory=list)

    @property
    def attempted(self) -> int:
        return self.sent + self.failed + self.deferred + self.unknown + self.skipped

    def merge(self, other: SendSummary) -> None:
        self.sent += other.sent
        self.failed += other.failed
        self.deferred += other.deferred
        self.unknown += other.unknown
        self.skipped += other.skipped
        self.taken_over += other.taken_over
        self.unrecorded += other.unrecorded
        self.stopped_because = self.stopped_because or other.stopped_because
        self.errors.extend(other.errors[: max(0, 5 - len(self.errors))])
        self.hard_bounced += other.hard_bounced
        self.held_back += other.held_back
        self.trips.extend(other.trips)


@dataclass(slots=True)
class _Run:
    session: Session
    edition_id: int
    newsletter_id: int
    template: MessageTemplate
    signer: TokenSigner
    backend: MailBackend
    policy: Policy
    limiter: Limiter
    journal_dir: Path | None
    clock: Clock
    owner: str = field(default_factory=lambda: uuid.uuid4().hex)
    journal: ResultJournal | None = None
    summary: SendSummary = field(default_factory=SendSummary)
    failures_in_a_row: int = 0
    rng: random.Random = field(default_factory=random.Random)
    renewed_at: datetime | None = None
    #: Deliveries a renewal found taken over by another sender: never handed over by this one.
    lost: set[int] = field(default_factory=set)
    #: The backend's connection is open (``open()`` succeeded), and whether this run opened it.
    connected: bool = False
    owns_connection: bool = False
    #: Counts answers as they come, for whoever watches the send (shared by its senders).
    progress: SendProgress | None = None
    #: Indexes of the chunk in flight already counted by ``progress`` (answered early).
    counted: set[int] = field(default_factory=set)
    #: Permanent refusals at send time, reported as bounces once the chunk is recorded.
    refusals: list[ProviderEvent] = field(default_factory=list)
    #: Subscribers with soft bounces whose message the server accepted (SMTP 250): they are
    #: no longer "in a row" (``smtp://`` has no delivery webhooks to say so).
    accepted: list[int] = field(default_factory=list)
    #: Per-domain limits, domain back-off and the warm-up cap (None: none configured).
    gate: DomainGate | None = None
    #: Recipients whose domain answered 421/451 in the chunk in flight.
    slow_down: list[str] = field(default_factory=list)


def dispatch(
    session: Session,
    *,
    edition_id: int,
    newsletter_id: int,
    template: MessageTemplate,
    signer: TokenSigner,
    backend: MailBackend,
    policy: Policy,
    limiter: Limiter,
    clock: Clock,
    on_batch: Callable[[int], None] | None = None,
    journal_dir: Path | None = None,
    progress: SendProgress | None = None,
    gate: DomainGate | None = None,
) -> SendSummary:
    """One pass over the claimable deliveries of an edition; commits after every batch.

    With ``journal_dir``, every answer is also written ahead to this sender's journal (see
    :mod:`newsletter.sending.journal`), and journals of dead senders are read back before each
    claim. A backend that raises (it should return a result per message instead) stops the pass; its
    batch stays claimed until the lease expires and is then sent by a later run.
    """
    run = _Run(
        session,
        edition_id,
        newsletter_id,
        template,
        signer,
        backend,
        policy,
        limiter,
        journal_dir,
        clock,
    )
    run.progress = progress
    run.gate = gate if gate is not None and gate.active else None
    if journal_dir is not None:
        run.journal = ResultJournal(journal_dir, run.owner)
    try:
        _loop(run, on_batch)
    except BaseException:
        # Answers in the journal may not be in the ledger (Ctrl-C, a failed commit): keep the
        # file for the next send's recovery instead of deleting it.
        if run.journal is not None:
            run.journal.abandon()
        raise
    if run.journal is not None:
        run.journal.close()
    return run.summary


def _loop(run: _Run, on_batch: Callable[[int], None] | None) -> None:
    session, edition_id, policy = run.session, run.edition_id, run.policy
    after_id = 0
    # The connection is opened by the first chunk (see _send_chunk), so a relay that is busy
    # at that moment defers a chunk instead of failing the whole pass; only the opener closes.
    try:
        while True:
            if run.journal_dir is not None:
                journal.recover(session, run.journal_dir, now=run.clock())
            status = store.edition_status(session, edition_id=edition_id)
            if status != EditionStatus.sending:
                run.summary.stopped_because = status
                break
            batch = ledger.claim_batch(
                session,
                edition_id=edition_id,
                newsletter_id=run.newsletter_id,
                after_id=after_id,
                limit=policy.batch_size,
                owner=run.owner,
                lease_seconds=policy.lease_seconds,
                now=(claimed_at := run.clock()),
            )
            run.renewed_at = claimed_at
            if not batch:
                break
            after_id = batch[-1].id
            try:
                _send_batch(run, batch)
            except _ClaimLost:
                pass  # what was answered is recorded; the rest is the other sender's or queued
            if on_batch is not None:
                on_batch(len(batch))
            if policy.error_budget and run.failures_in_a_row >= policy.error_budget:
                reason = (
                    f"paused by the error budget: {run.failures_in_a_row} failures in a row; "
                    f"last: {run.summary.errors[-1] if run.summary.errors else 'unknown'}"
                )
                # A cancel or pause that landed first stands (compare-and-set).
                if not store.transition(
                    session, edition_id=edition_id, action="pause", reason=reason[:500]
                ):
                    reason = store.edition_status(session, edition_id=edition_id)
                session.commit()
                run.summary.stopped_because = reason
                break

    finally:
        if run.owns_connection:
            run.backend.close()


#: Why a delivery is ``unknown`` when its sender died after handing it to the server and
#: before reading the answer (written ahead to the journal; its answer, once read, replaces it).
HANDED_OVER = (
    "the sender stopped after handing this message to the server, before reading its answer: "
    "most likely delivered, so not sent again (retry-failed --include-unknown to re-send)"
)

#: Messages built, handed to the backend and recorded at once. The ledger batch can be large
#: (fewer claims) while only this many ~50 KB messages exist at a time per sender (8 senders x
#: 500 messages held 177 MiB at peak, 8 x 50 stays near the baseline), and a killed sender
#: leaves at most this many messages handed over but unrecorded. (Four senders share a process
#: by default; a message in flight is the template's shared pieces and its own slot values,
#: never a joined copy, so 4 x 50 take less than one sender's 50 joined ones used to. Chunks
#: of 25 cost 5-10% of the rate.)
SEND_CHUNK = 50


def _send_batch(run: _Run, batch: list[ledger.OpenDelivery]) -> None:
    outcomes: list[ledger.Outcome] = []
    live = _still_subscribed(run, batch, outcomes)
    step = min(SEND_CHUNK, run.limiter.chunk_size(SEND_CHUNK))
    for start in range(0, len(live), step):
        chunk = _build_chunk(run, _admitted(run, live[start : start + step]), outcomes)
        if not chunk:
            continue
        run.limiter.acquire(len(chunk))
        # Still ours? Waiting for the rate limit or a slow relay may have outlived the lease;
        # what another sender took over is its to send, never both.
        chunk = _keep_claims(run, chunk, live[start + step :])
        if not chunk:
            continue
        outcomes += _send_chunk(run, chunk, live[start + step :], outcomes)
        if run.slow_down and run.gate is not None:
            run.gate.back_off(run.slow_down)  # the rest of this batch to them waits
        run.slow_down = []
        # Record after every chunk, not every batch: a sender killed now re-sends at most the
        # chunk in flight (SEND_CHUNK messages) once its lease expires, not a whole batch, and
        # with a journal only the messages whose answer was not written down yet.
        _record(run, outcomes)
        run.session.commit()
        if run.journal is not None:
            run.journal.clear()
        outcomes = []
    _record(run, outcomes)
    run.session.commit()


def _still_subscribed(
    run: _Run, batch: list[ledger.OpenDelivery], outcomes: list[ledger.Outcome]
) -> list[ledger.OpenDelivery]:
    """The deliveries whose person is still subscribed (re-checked at send time: someone who
    left after the audience was fixed is skipped, never mailed)."""
    live = []
    for d in batch:
        if d.still_subscribed:
            live.append(d)
        else:
            outcomes.append(ledger.Outcome(d.id, DeliveryStatus.skipped, detail="unsubscribed"))
            run.summary.skipped += 1
    if run.progress is not None and len(live) < len(batch):
        run.progress.add(len(batch) - len(live))
    return live


def _build_chunk(
    run: _Run, part: list[ledger.OpenDelivery], outcomes: list[ledger.Outcome]
) -> list[tuple[ledger.OpenDelivery, OutgoingMessage]]:
    """Each delivery of ``part`` with its message, all dated now; a record whose message
    can't be built fails alone (into ``outcomes``) and never stalls the edition."""
    chunk: list[tuple[ledger.OpenDelivery, OutgoingMessage]] = []
    date = run.clock().timestamp()
    for d in part:
        try:
            message = run.template.build(
                Recipient(d.subscriber_id, d.email, d.name), run.signer, now=date
            )
        except ValueError as exc:
            outcomes.append(ledger.Outcome(d.id, DeliveryStatus.failed, detail=str(exc)))
            _count_failure(run, f"{d.email}: can't build message: {exc}")
            run.summary.failed += 1
            if run.progress is not None:
                run.progress.add(problem=True)
            continue
        chunk.append((d, message))
    return chunk


def _admitted(run: _Run, part: list[ledger.OpenDelivery]) -> list[ledger.OpenDelivery]:
    """The deliveries of ``part`` the domain gate lets go now; the others go back to the
    queue with the time they may go (not an attempt: nothing was handed over)."""
    if run.gate is None or not part:
        return part
    admission = run.gate.admit([d.email for d in part])
    if admission.postponed:
        ledger.postpone(
            run.session,
            until={
                part[i].id: datetime.fromtimestamp(t, UTC) for i, t in admission.postponed.items()
            },
            owner=run.owner,
            reason=f"held back: {admission.reason}",
        )
        # Committed now (nothing was handed over): on SQLite an open write would lock out the
        # gate's and the rate limiter's own transactions on their connections.
        run.session.commit()
        run.summary.held_back += len(admission.postponed)  # still open: not progress yet
    return [part[i] for i in admission.allowed]


def _keep_claims(
    run: _Run,
    chunk: list[tuple[ledger.OpenDelivery, OutgoingMessage]],
    later: list[ledger.OpenDelivery],
) -> list[tuple[ledger.OpenDelivery, OutgoingMessage]]:
    """The part of ``chunk`` this sender still holds (the rest was taken over: counted and
    reported). Within a third of the lease since the claim or the last renewal nothing can
    have run out, so this costs a query only every ``lease/3`` seconds, not every chunk."""
    if _renewal_due(run):
        _renew(run, [d.id for d, _ in chunk] + [d.id for d in later])
    kept = [(d, m) for d, m in chunk if d.id not in run.lost]
    lost = len(chunk) - len(kept)
    if lost:
        run.summary.taken_over += lost
        if len(run.summary.errors) < 5:
            run.summary.errors.append(
                f"{lost} deliveries were taken over by another sender before this one sent "
                "them (its lease ran out); left to that sender"
            )
    return kept


def _renew(run: _Run, ids: list[int]) -> None:
    """Renew, and remember what is no longer ours for the rest of this batch."""
    now = run.clock()
    held = ledger.renew(
        run.session, ids=ids, owner=run.owner, now=now, lease_seconds=run.policy.lease_seconds
    )
    run.session.commit()
    run.renewed_at = now
    run.lost.update(i for i in ids if i not in held)


class _ClaimLost(Exception):
    """A renewal in the middle of a chunk found deliveries still ahead in it taken over by
    another sender: the chunk stops before handing them over (what was answered is recorded,
    the rest released), and the send goes on with a new claim."""


def _renewal_due(run: _Run) -> bool:
    return run.renewed_at is None or (run.clock() - run.renewed_at).total_seconds() >= (
        run.policy.lease_seconds / 3
    )


def _renew_if_due(run: _Run, ids: list[int]) -> bool:
    """While a slow chunk is sent (one message every few seconds), renew at a third of the
    lease, so it never runs out under a sender that is alive. True if it renewed."""
    if _renewal_due(run):
        _renew(run, ids)
        return True
    return False


def _record(run: _Run, outcomes: list[ledger.Outcome]) -> None:
    """Record, and count answers whose delivery was no longer ours (never silent); then
    report permanent refusals as bounces (same transaction: both or neither)."""
    updated = ledger.record(run.session, outcomes=outcomes, owner=run.owner, now=run.clock())
    if run.refusals:
        _report_refusals(run)
    if run.accepted:
        accepted, run.accepted = run.accepted, []
        run.session.execute(
            update(Subscriber)
            .where(col(Subscriber.id).in_(accepted), col(Subscriber.soft_bounces) > 0)
            .values(soft_bounces=0)
        )
    missing = len(outcomes) - updated
    if missing > 0:
        run.summary.unrecorded += missing
        if len(run.summary.errors) < 5:
            run.summary.errors.append(
                f"{missing} answers were not recorded: another sender had taken their "
                "deliveries over (lease expired), so they may have been sent twice"
            )


def _send_chunk(
    run: _Run,
    chunk: list[tuple[ledger.OpenDelivery, OutgoingMessage]],
    later: list[ledger.OpenDelivery],
    pending: list[ledger.Outcome],
) -> list[ledger.Outcome]:
    """Hand ``chunk`` to the backend; each answer becomes an outcome (journaled at once).

    A backend may report an index again (failover: deferred by one backend, then answered by
    the next); the last report is the answer, and only it is counted."""
    answers: dict[int, SendResult] = {}
    handed = _Handed()
    run.counted = set()
    on_handover = _handover_recorder(run, chunk, handed, answers)
    on_result = _result_recorder(run, chunk, answers, later)
    try:
        if not run.connected:
            run.owns_connection = run.backend.open() or run.owns_connection
            run.connected = True
        results = run.backend.send_each([m for _, m in chunk], on_result, on_handover)
    except BackendError as exc:
        return _backend_broke(run, exc, chunk, answers, handed, pending, later)
    except _ClaimLost:
        _settle(run, chunk, answers, pending, later)
        run.session.commit()
        raise
    except (HandoverError, JournalError) as exc:
        _journal_broke(run, exc, chunk, answers, handed, pending, later)
        raise
    if len(results) != len(chunk) or len(answers) != len(chunk):
        raise RuntimeError(
            f"{run.backend.describe()} returned {len(results)} results for {len(chunk)} messages"
        )
    return _final(run, chunk, answers)


def _result_recorder(
    run: _Run,
    chunk: list[tuple[ledger.OpenDelivery, OutgoingMessage]],
    answers: dict[int, SendResult],
    later: list[ledger.OpenDelivery],
) -> Callable[[int, SendResult], None]:
    """The backend's ``on_result`` for ``chunk``: keep each answer, count it, journal it at
    once, and renew the claim when due; raises :class:`_ClaimLost` when another sender took
    over messages of this chunk not yet sent (the lease had expired)."""
    claimed = [d.id for d, _ in chunk] + [d.id for d in later]

    def on_result(index: int, result: SendResult) -> None:
        answers[index] = result
        if run.progress is not None and index not in run.counted:
            run.counted.add(index)  # counted now, as it happens (at 2/s, twice a second)
            run.progress.add(problem=not result.status.delivered)
        if run.journal is not None:
            run.journal.write(_outcome(run, *chunk[index], result))
        if _renew_if_due(run, claimed):
            ahead = [d.id for d, _ in chunk[index + 1 :] if d.id in run.lost]
            if ahead:
                run.summary.taken_over += len(ahead)
                raise _ClaimLost

    return on_result


@dataclass(slots=True)
class _Handed:
    """What a chunk handed over: every index, and the last one (whose journal line may be
    what failed)."""

    indexes: set[int] = field(default_factory=set)
    last: int | None = None


def _handover_recorder(
    run: _Run,
    chunk: list[tuple[ledger.OpenDelivery, OutgoingMessage]],
    handed: _Handed,
    answers: dict[int, SendResult],
) -> Callable[[int], None] | None:
    """The backend's ``on_handover`` for ``chunk``: the hand-over line of each message, into
    the journal right before the write that carries it (None without a journal).

    The lines are encoded here, before anything is sent: between the socket write and the
    journal write there is nothing but this call (see newsletter.sending.journal on RFC
    1047's window)."""
    if run.journal is None:
        return None
    marks = [
        run.journal.encode(
            ledger.Outcome(
                d.id, DeliveryStatus.unknown, detail=HANDED_OVER, message_id=m.message_id
            )
        )
        for d, m in chunk
    ]
    write_line = run.journal.write_line

    def on_handover(index: int) -> None:
        handed.indexes.add(index)
        handed.last = index
        answers.pop(index, None)  # handed over again (failover): the earlier answer is moot
        write_line(marks[index])

    return on_handover


def _backend_broke(
    run: _Run,
    exc: BackendError,
    chunk: list[tuple[ledger.OpenDelivery, OutgoingMessage]],
    answers: dict[int, SendResult],
    handed: _Handed,
    pending: list[ledger.Outcome],
    later: list[ledger.OpenDelivery],
) -> list[ledger.Outcome]:
    """The backend can't go on. A transient failure (421 "too busy", a refused or timed-out
    connection) defers the rest of the chunk and the send goes on; anything else records
    what was answered, pauses the edition and raises ``exc`` with the command to resume."""
    # Its text goes into the ledger, the pause reason and the terminal: no secrets.
    exc.args = tuple(run.policy.redactor.scrub(str(a)) for a in exc.args)
    # What it answered before breaking stands (exc.results is from the chunk's start).
    answers.update(enumerate(exc.results))
    if exc.transient:
        # The rest of the chunk was never handed over, so it is deferred like a 4xx, with
        # backoff, and counts toward the error budget; one busy moment is not a pause.
        for index in range(len(chunk)):
            if index not in answers:
                answers[index] = (
                    SendResult(SendStatus.unknown, None, HANDED_OVER)
                    if index in handed.indexes
                    else SendResult(SendStatus.deferred, exc.code, str(exc))
                )
        refused = set(answers) - set(range(len(exc.results)))
        return _final(run, chunk, answers, no_backoff=refused)
    _settle(run, chunk, answers, pending, later)
    reason = f"paused: {run.backend.describe()} failed: {exc}"[:500]
    store.transition(run.session, edition_id=run.edition_id, action="pause", reason=reason)
    run.session.commit()
    exc.hint = (
        f"edition {run.edition_id} is paused: fix this, then "
        f"`newsletter edition resume {run.edition_id}`"
    )
    raise exc


def _journal_broke(
    run: _Run,
    exc: HandoverError | JournalError,
    chunk: list[tuple[ledger.OpenDelivery, OutgoingMessage]],
    answers: dict[int, SendResult],
    handed: _Handed,
    pending: list[ledger.Outcome],
    later: list[ledger.OpenDelivery],
) -> None:
    """The journal can't be written (disk full), but this process knows what it handed over
    and what was answered: straight into the ledger (the caller re-raises). Over SMTP the
    hand-over is written before the dot, so the message whose line failed never left: back
    to the queue."""
    if isinstance(exc, HandoverError) and not exc.sent and handed.last is not None:
        handed.indexes.discard(handed.last)
    for index in handed.indexes - answers.keys():
        answers[index] = SendResult(SendStatus.unknown, None, HANDED_OVER)
    _settle(run, chunk, answers, pending, later)
    run.session.commit()


def _final(
    run: _Run,
    chunk: list[tuple[ledger.OpenDelivery, OutgoingMessage]],
    answers: dict[int, SendResult],
    no_backoff: set[int] | frozenset[int] = frozenset(),
) -> list[ledger.Outcome]:
    """The outcomes of the answered messages, in order, each counted once in the summary.

    ``no_backoff``: answers that came from the relay refusing the connection (a 421 "too
    busy" from the smarthost), which say nothing about the recipients' domains."""
    outcomes = []
    for index in sorted(answers):
        delivery, message = chunk[index]
        outcomes.append(_outcome(run, delivery, message, answers[index]))
        _tally(run, delivery, outcomes[-1])
        refusal = _refusal(run, delivery, answers[index])
        if answers[index].status == SendStatus.sent and delivery.soft_bounces:
            run.accepted.append(delivery.subscriber_id)  # rare: one UPDATE only then
        if refusal is not None:
            run.refusals.append(refusal)
        elif (
            answers[index].status == SendStatus.deferred
            and answers[index].code in BACKOFF_CODES
            and index not in no_backoff
        ):
            run.slow_down.append(delivery.email)
        if run.progress is not None and index not in run.counted:
            run.counted.add(index)  # answered without a callback (a refused connection)
            run.progress.add(problem=not answers[index].status.delivered)
    return outcomes


def _settle(
    run: _Run,
    chunk: list[tuple[ledger.OpenDelivery, OutgoingMessage]],
    answers: dict[int, SendResult],
    pending: list[ledger.Outcome],
    later: list[ledger.OpenDelivery],
) -> None:
    """The send stops mid-chunk: record what was answered and give the rest back to the queue
    (never handed over, so nobody is sent twice and nobody is lost). The caller commits."""
    _record(run, pending + _final(run, chunk, answers))
    unanswered = [d for i, (d, _) in enumerate(chunk) if i not in answers]
    ledger.release(run.session, ids=[d.id for d in unanswered + later], owner=run.owner)


def _outcome(
    run: _Run, delivery: ledger.OpenDelivery, message: OutgoingMessage, result: SendResult
) -> ledger.Outcome:
    """What the ledger records for ``result`` (no counting: see :func:`_tally`)."""
    status = _TO_LEDGER[result.status]
    if status in ledger.ACCEPTED:
        # The ledger keeps no code or text of an accepted answer (``ledger.record`` clears
        # them), so they are neither scrubbed nor journaled: a shorter line, less CPU.
        return ledger.Outcome(
            delivery.id,
            status,
            message_id=message.message_id,
            provider_message_id=result.provider_id,
        )
    retry_at = None
    detail = run.policy.redactor.scrub(result.detail) if result.detail else result.detail
    if status == DeliveryStatus.deferred:
        tries = delivery.attempts + 1
        if tries >= run.policy.max_attempts:
            status = DeliveryStatus.failed
            detail = f"gave up after {tries} attempts: {detail}"
        else:
            now = run.clock()
            retry_at = run.policy.retry_at(tries, now, run.rng)
            if result.retry_after is not None:  # the provider's word beats our guess
                retry_at = max(retry_at, now + timedelta(seconds=result.retry_after))
    return ledger.Outcome(
        delivery.id,
        status,
        code=result.code,
        detail=detail,
        message_id=message.message_id,
        provider_message_id=result.provider_id,
        retry_at=retry_at,
    )


def _report_refusals(run: _Run) -> None:
    """A recipient refused for good at send time is a bounce like one a report brings: it
    goes through :func:`newsletter.feedback.bounces.apply_events` (a 550 5.1.1 suppresses the
    address at once), and the breaker reads the edition's rates again."""
    events, run.refusals = run.refusals, []
    touched: set[int] = set()
    bounces.apply_events(
        run.session, events, soft_limit=run.policy.soft_bounce_limit, touched=touched
    )
    run.summary.hard_bounced += sum(e.kind == EventKind.bounced_hard for e in events)
    if run.policy.limits is not None and touched:
        run.summary.trips += reputation.guard(
            run.session, edition_ids=touched, limits=run.policy.limits, now=run.clock()
        )


def _refusal(run: _Run, delivery: ledger.OpenDelivery, result: SendResult) -> ProviderEvent | None:
    """The bounce a permanent refusal amounts to (None: not a bounce, e.g. a bad message)."""
    if result.status != SendStatus.rejected or result.code is None:
        return None
    kind = classify_reply(result.code, result.detail)
    if kind is None:
        return None
    return ProviderEvent(
        provider="smtp",
        event_id=f"send.{delivery.id}.{delivery.attempts + 1}",
        kind=kind,
        email=delivery.email,
        provider_message_id=None,
        occurred_at=run.clock(),
        detail=f"{result.code} {run.policy.redactor.scrub(result.detail)}",
        delivery=DeliveryRef(run.edition_id, delivery.subscriber_id),
    )


def _tally(run: _Run, delivery: ledger.OpenDelivery, outcome: ledger.Outcome) -> None:
    status = outcome.status
    if status in (DeliveryStatus.sent, DeliveryStatus.queued):
        run.summary.sent += 1
        run.failures_in_a_row = 0
        return
    if status == DeliveryStatus.deferred:
        run.summary.deferred += 1
    elif status == DeliveryStatus.unknown:
        run.summary.unknown += 1
    else:
        run.summary.failed += 1
    _count_failure(run, f"{delivery.email}: {status} {outcome.code or ''} {outcome.detail}")


def _count_failure(run: _Run, error: str) -> None:
    run.failures_in_a_row += 1
    if len(run.summary.errors) < 5:
        run.summary.errors.append(error)
    elif run.policy.error_budget:
        run.summary.errors[-1] = error  # keep the latest for the pause reason
