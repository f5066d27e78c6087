"""Start an edition (fix its audience in the ledger) and send it: passes of the dispatcher,
in threads or as one of many workers, until nothing is open.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from datetime import time as clock_time

from sqlalchemy import Engine
from sqlmodel import Session

from newsletter.backends import MailBackend
from newsletter.clock import Clock, system_clock
from newsletter.config import Settings
from newsletter.edition.lifecycle import EditionStateError
from newsletter.edition.personalization import MessageTemplate
from newsletter.publish import breaker, senders
from newsletter.publish.approval import approval_refusal, editors_required
from newsletter.publish.controls import OPERATOR
from newsletter.publish.drafting import prepare, signer_for
from newsletter.publish.shaping import edited_since_seen
from newsletter.sending import journal, ledger
from newsletter.sending.dispatch import Policy, SendSummary, dispatch
from newsletter.sending.domainrate import DomainGate, DomainLimits, WarmupPlan
from newsletter.sending.progress import SendProgress
from newsletter.sending.ratelimit import Limiter, RateSpec
from newsletter.sending.redaction import redactor_for
from newsletter.sending.sharedrate import SharedRateLimiter
from newsletter.storage import store
from newsletter.storage.models import Edition, EditionStatus, Newsletter
from newsletter.storage.planner import refresh_statistics


@dataclass(frozen=True, slots=True)
class SendReport:
    edition: Edition
    run: SendSummary
    totals: dict[str, int]
    audience_added: int
    next_retry_at: datetime | None = None


def policy_for(settings: Settings) -> Policy:
    return Policy(
        batch_size=settings.batch_size,
        lease_seconds=settings.lease_seconds,
        max_attempts=settings.max_attempts,
        retry_base_seconds=settings.retry_base_seconds,
        error_budget=settings.error_budget,
        redactor=redactor_for(settings),
        soft_bounce_limit=settings.soft_bounce_limit,
        limits=breaker.limits_for(settings),
    )


def gate_for(settings: Settings, engine: Engine, clock: Clock) -> DomainGate | None:
    """The per-domain limits and warm-up plan of the settings, shared through ``engine``,
    on the send's ``clock``; None when neither is set (the send then pays nothing for them)."""
    limits = DomainLimits.parse(settings.domain_limits)
    warmup = WarmupPlan.parse(settings.warmup) if settings.warmup.strip() else None
    if limits.empty and warmup is None:
        return None
    return DomainGate(engine, limits, warmup, clock=lambda: clock().timestamp())


def _refuse_edited_since_approval(session: Session, edition: Edition, actor: str) -> None:
    """An approval covers the content the editor saw: when a comparison the edition carries
    was edited in the store after the approval, the approval is withdrawn (recorded) and the
    start refused, so editors look again instead of the store's new text going out unseen."""
    edited = edited_since_seen(session, edition=edition)
    if not edited:
        return
    titles = "; ".join(title for _, title in edited)
    store.set_approval(session, edition_id=edition.id or 0, approved_at=None, by=None)
    edition.alerted_at = None  # the editors are told again, by the next scheduler tick
    store.add_edition_event(
        session,
        edition_id=edition.id or 0,
        action="unapproved",
        actor=actor,
        detail=f"edited in the store after the approval: {titles}"[:500],
    )
    session.commit()
    raise EditionStateError(
        f"edition {edition.id} was approved, but {len(edited)} of its comparisons changed in "
        f"the store since ({titles}): the approval is withdrawn; review the draft and approve "
        "it again"
    )


def start_edition(
    session: Session,
    *,
    edition_id: int,
    settings: Settings,
    local_time: tuple[date, clock_time] | None = None,
    actor: str = OPERATOR,
    now: datetime | None = None,
) -> int:
    """draft -> sending, fixing the audience: one pending delivery per active subscriber.

    Returns how many deliveries were written (0 if the edition had already started). Workers
    (``newsletter worker``) then send it; ``send`` starts and sends in one go. With
    ``local_time`` (a local date and time), each delivery waits for that time in its
    subscriber's own zone (hourly waves, see ``ledger.schedule_local_waves``). ``now`` is
    when it starts (the entry point's clock; the wall clock if not given).

    An edition whose schedule requires approval and has none is refused here, whichever path
    asks (CLI, worker, scheduler, console), and the UPDATE that starts it re-checks the
    approval, so one withdrawn a moment before still stops it.
    """
    now = now or system_clock()
    settings.require_sending_ready()
    edition = store.get_edition(session, edition_id=edition_id)
    if edition.status != EditionStatus.draft:
        return 0
    if not store.edition_comparisons(session, edition_id=edition_id):
        raise EditionStateError(f"edition {edition_id} carries no comparisons")
    editors = editors_required(session, edition)
    if editors is not None and edition.approved_at is None:
        raise EditionStateError(approval_refusal(edition_id, editors))
    if editors is not None:
        _refuse_edited_since_approval(session, edition, actor)
    # Only one caller moves a draft to sending, even if two start at once.
    moved = store.transition(
        session,
        edition_id=edition_id,
        action="start",
        actor=actor,
        now=now,
        approved_only=editors is not None,
        record=False,
    )
    added = 0
    if not moved and editors is not None:
        session.rollback()
        edition = store.get_edition(session, edition_id=edition_id)
        session.refresh(edition)
        if edition.status == EditionStatus.draft:  # the approval was withdrawn meanwhile
            raise EditionStateError(approval_refusal(edition_id, editors))
    if moved:
        added = ledger.open_deliveries(
            session, edition_id=edition_id, newsletter_id=edition.newsletter_id
        )
        store.add_edition_event(
            session,
            edition_id=edition_id,
            action="started",
            actor=actor,
            detail=f"{added} recipients" + (" in their own time zones" if local_time else ""),
        )
        if local_time is not None:
            newsletter = session.get(Newsletter, edition.newsletter_id)
            assert newsletter is not None
            ledger.schedule_local_waves(
                session,
                edition_id=edition_id,
                day=local_time[0],
                at=local_time[1],
                default_timezone=newsletter.timezone,
            )
    session.commit()
    if added:
        # The senders' claims plan from these: a first edition must not start on a plan
        # made for an empty delivery table.
        refresh_statistics(session, ("delivery",))
    return added


#: Makes one backend for one sender (each sender of a send has its own connection).
BackendFactory = Callable[[], MailBackend]


@dataclass(frozen=True, slots=True)
class SendOptions:
    """How a send runs, as opposed to what it sends: how many senders (``concurrency``, over
    ``processes`` forked processes: one per core is what uses the machine), whether it waits
    for retries to come due (``wait``) or makes one pass, who is told what as it goes
    (``on_start`` with the number open, ``on_batch`` per batch, ``progress``), how it waits
    (``sleep``), who it is recorded as (``actor``) and the clock every time comes from."""

    concurrency: int = 1
    processes: int = 1
    wait: bool = False
    on_start: Callable[[int], None] | None = None
    on_batch: Callable[[int], None] | None = None
    progress: SendProgress | None = None
    sleep: Callable[[float], None] = time.sleep
    actor: str = OPERATOR
    clock: Clock = system_clock


def send_edition(
    session: Session,
    *,
    edition_id: int,
    settings: Settings,
    backend: MailBackend | BackendFactory,
    options: SendOptions = SendOptions(),
) -> SendReport:
    """Send an edition to every active subscriber of its newsletter, exactly once each.

    Starts a draft (see :func:`start_edition`), then sends what is claimable: pending
    deliveries, deferred ones whose retry time came, and batches whose send died (lease
    expired). ``backend`` is one backend (one sender) or a factory that makes one per sender;
    ``options.concurrency`` > 1 runs that many senders, each with its own session and
    backend: in threads, or spread over ``options.processes`` forked sender processes (see
    :mod:`newsletter.publish.senders`). With ``options.wait`` it keeps going until nothing is
    left (sleeping until the next retry), else one pass. When nothing is left the edition
    becomes ``sent``; ``unknown`` and ``failed`` deliveries wait for an operator. Every time
    it needs (claims, leases, retries, the Date header) comes from ``options.clock``.
    """
    o = options
    settings.require_sending_ready()
    senders_of = _SenderPlan.of(backend, o.concurrency, o.processes)
    folder = settings.journal_path()
    if folder is not None:
        journal.ensure_folder(folder)  # before anything starts
    added = start_edition(
        session, edition_id=edition_id, settings=settings, actor=o.actor, now=o.clock()
    )
    edition = store.get_edition(session, edition_id=edition_id)
    session.refresh(edition)
    if edition.status == EditionStatus.sent:
        return SendReport(edition, SendSummary(), ledger.counts(session, edition_id=edition_id), 0)
    _refuse_if_stopped(edition)
    journal_dir = settings.journal_path()
    if journal_dir is not None:
        # Dead senders' claims come back first: they are claimable now, not after their lease.
        journal.recover(session, journal_dir, now=o.clock())
    if not o.wait and not ledger.has_claimable(session, edition_id=edition_id, now=o.clock()):
        # Nothing due yet (a later local-time wave, a retry not come due): workers and the
        # scheduler look every few seconds, so skip rendering the edition for an empty pass.
        _finish_if_done(session, edition_id=edition_id, now=o.clock())
        return _report(session, edition, SendSummary(), added)
    _, template, _ = prepare(session, edition=edition, settings=settings)
    # Shared by every sender of this edition, in this process and in any other.
    bind = session.get_bind()
    engine = bind if isinstance(bind, Engine) else bind.engine
    limiter = SharedRateLimiter(engine, edition_id, RateSpec.parse(settings.rate_limit))
    gate = gate_for(settings, engine, o.clock)
    _announce(session, edition_id, o)
    total = SendSummary()
    while True:
        summary = _one_pass(
            session,
            _Pass(edition, template, settings, limiter, gate, o.clock),
            senders_of,
            progress=o.progress,
            on_batch=o.on_batch,
        )
        for trip in summary.trips:  # the breaker paused it: tell the people in charge
            breaker.alert(session, settings, trip)
        total.merge(summary)
        if (
            _finish_if_done(session, edition_id=edition_id, now=o.clock())
            or not o.wait
            or total.stopped_because
        ):
            break
        due = ledger.next_retry_at(session, edition_id=edition_id)
        pause = 1.0 if due is None else (due - o.clock()).total_seconds()
        o.sleep(min(max(pause, 0.05), 5.0))  # short naps: a pause still takes effect quickly
    return _report(session, edition, total, added)


def _refuse_if_stopped(edition: Edition) -> None:
    """A paused or cancelled edition is not sent: say why, and how to go on."""
    if edition.status not in (EditionStatus.paused, EditionStatus.cancelled):
        return
    raise EditionStateError(
        f"edition {edition.id} is {edition.status}"
        + (f" ({edition.status_reason})" if edition.status_reason else "")
        + ("; `newsletter edition resume` it first" if edition.status == "paused" else "")
    )


def _announce(session: Session, edition_id: int, options: SendOptions) -> None:
    """Tell whoever watches how many deliveries are open as the senders start."""
    if options.on_start is None and options.progress is None:
        return
    open_now = ledger.open_count(session, edition_id=edition_id)
    if options.on_start is not None:
        options.on_start(open_now)
    if options.progress is not None:
        options.progress.start(open_now)


def _report(session: Session, edition: Edition, summary: SendSummary, added: int) -> SendReport:
    """The send's report: what this call did, and the edition's counts now."""
    assert edition.id is not None
    session.refresh(edition)
    return SendReport(
        edition,
        summary,
        ledger.counts(session, edition_id=edition.id),
        added,
        ledger.next_retry_at(session, edition_id=edition.id),
    )


@dataclass(frozen=True, slots=True)
class _SenderPlan:
    """How a pass's senders get their backends: ``concurrency`` senders over ``processes``
    processes, each with a backend from ``backends`` (one backend reused when there is one
    sender)."""

    backends: Callable[[], MailBackend]
    concurrency: int = 1
    processes: int = 1

    @classmethod
    def of(
        cls, backend: MailBackend | BackendFactory, concurrency: int, processes: int
    ) -> _SenderPlan:
        """One backend factory from what the caller gave: a factory, or one backend for a
        single sender. Several senders need a factory (a backend per sender)."""
        if not isinstance(backend, MailBackend):
            return cls(backend, concurrency, processes)
        if concurrency > 1 or processes > 1:
            raise ValueError("several senders need a backend factory: one backend per sender")
        return cls(lambda: backend)


@dataclass(frozen=True, slots=True)
class _Pass:
    """What every sender of one pass shares: the edition, its message, the limits, the clock."""

    edition: Edition
    template: MessageTemplate
    settings: Settings
    limiter: Limiter
    gate: DomainGate | None
    clock: Clock


def _one_pass(
    session: Session,
    shared: _Pass,
    plan: _SenderPlan,
    *,
    progress: SendProgress | None,
    on_batch: Callable[[int], None] | None,
) -> SendSummary:
    edition, settings = shared.edition, shared.settings
    assert edition.id is not None
    signer = signer_for(settings)
    policy = policy_for(settings)

    def run(
        s: Session,
        b: MailBackend,
        progress: SendProgress | None,
        on_batch: Callable[[int], None] | None,
    ) -> SendSummary:
        return dispatch(
            s,
            edition_id=edition.id or 0,
            newsletter_id=edition.newsletter_id,
            template=shared.template,
            signer=signer,
            backend=b,
            policy=policy,
            limiter=shared.limiter,
            on_batch=on_batch,
            journal_dir=settings.journal_path(),
            clock=shared.clock,
            progress=progress,
            gate=shared.gate,
        )

    if plan.concurrency <= 1 and plan.processes <= 1:
        return run(session, plan.backends(), progress, on_batch)
    bind = session.get_bind()
    engine = bind if isinstance(bind, Engine) else bind.engine
    if plan.processes <= 1:
        return senders.in_threads(engine, run, plan.backends, plan.concurrency, progress, on_batch)
    session.commit()  # no connection is held across the fork
    return senders.in_processes(
        engine, run, plan.backends, plan.concurrency, plan.processes, progress, on_batch
    )


def _finish_if_done(session: Session, *, edition_id: int, now: datetime) -> bool:
    """Mark the edition sent when no delivery is open; True if it is sent."""
    if ledger.open_count(session, edition_id=edition_id):
        return False
    counts = ledger.counts(session, edition_id=edition_id)
    if store.transition(
        session,
        edition_id=edition_id,
        action="finish",
        now=now,
        detail=", ".join(f"{k} {v}" for k, v in counts.items() if v),
    ):
        ledger.settle(session, edition_id=edition_id, counts=counts, now=now)
    session.commit()
    return store.edition_status(session, edition_id=edition_id) == EditionStatus.sent
