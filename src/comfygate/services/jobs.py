"""Submitting a job: inspect, price, de-duplicate, hold, store, queue.

``submit`` runs in a worker thread (it blocks on the database). Its order is the
money order: nothing that can refuse the request (a bad header, an unknown
capability, a foreign quote, an exhausted fair-use limit) runs after the hold, and
when storing the job fails after the hold, the hold is released before the error
goes out. Bad input therefore never moves a token, and the upload's temporary file
is deleted on every path that does not adopt it into the job's folder.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from comfygate.domain.errors import (
    ConcurrencyLimitError,
    IdempotencyConflictError,
    WorkerUnavailableError,
)
from comfygate.domain.ids import new_id
from comfygate.domain.images import ImageInfo, ReceivedFile
from comfygate.domain.jobs import (
    DedupCandidate,
    JobState,
    Tier,
    blocks_resubmission,
    options_key,
)
from comfygate.domain.pricing import Price
from comfygate.services.audit import AuditEntry, AuditLog
from comfygate.services.clock import Clock
from comfygate.services.events import JobEvents
from comfygate.services.identity_types import Principal, Role
from comfygate.services.job_ports import (
    DuplicateRule,
    DuplicateSubmission,
    ImageInspector,
    Job,
    JobMetrics,
    JobStore,
    ResultStorage,
)
from comfygate.services.ledger import HoldReceipt, LedgerService
from comfygate.services.plans import Entitlement, PlanService
from comfygate.services.quoting import QuoteService


@dataclass(frozen=True, slots=True)
class JobPolicy:
    """The operator's settings that shape submission."""

    max_pixels: int
    min_side_px: int
    job_timeout_s: float
    dedup_window_s: int
    hold_ttl_s: int
    """Lifetime of a job's hold: longer than every attempt plus its wait in queue."""


@dataclass(frozen=True, slots=True)
class SubmitRequest:
    capability: str
    options: Mapping[str, object] = field(default_factory=dict)
    quote_id: str | None = None
    declared_size: tuple[int, int] | None = None
    idempotency_key: str | None = None


@dataclass(frozen=True, slots=True)
class SubmitOutcome:
    job: Job
    duplicate_of: str | None = None
    """Set when an earlier job with the same image was returned (nothing charged)."""
    replayed: bool = False
    """Set when the ``Idempotency-Key`` was seen before: this is the first answer."""


class JobSubmission:
    """The submit use case."""

    def __init__(
        self,
        *,
        store: JobStore,
        ledger: LedgerService,
        quotes: QuoteService,
        plans: PlanService,
        events: JobEvents,
        storage: ResultStorage,
        inspect: ImageInspector,
        clock: Clock,
        policy: JobPolicy,
        metrics: JobMetrics,
        enqueue: Callable[[Job], None],
        served_capabilities: Callable[[], frozenset[str]],
        audit: AuditLog | None = None,
    ) -> None:
        self._store = store
        self._ledger = ledger
        self._quotes = quotes
        self._plans = plans
        self._events = events
        self._storage = storage
        self._inspect = inspect
        self._clock = clock
        self._policy = policy
        self._metrics = metrics
        self._enqueue = enqueue
        self._served = served_capabilities
        self._audit = audit
        self._locks_guard = threading.Lock()
        self._account_locks: dict[str, threading.Lock] = {}

    def _account_lock(self, account_id: str) -> threading.Lock:
        with self._locks_guard:
            return self._account_locks.setdefault(account_id, threading.Lock())

    def submit(
        self, *, principal: Principal, upload: ReceivedFile, request: SubmitRequest
    ) -> SubmitOutcome:
        """Accept an uploaded image as a job, or refuse it without moving a token.

        Raises an ``ImageError`` (bad file, size mismatch), ``UnknownCapabilityError``,
        ``InvalidOptionError``, a quote error, ``ConcurrencyLimitError``,
        ``InsufficientBalanceError``, ``IdempotencyConflictError`` or
        ``WorkerUnavailableError``.
        """
        try:
            return self._submit(principal, upload, request)
        finally:
            # A no-op once the upload has been adopted into the job's folder.
            upload.path.unlink(missing_ok=True)

    def _submit(
        self, principal: Principal, upload: ReceivedFile, request: SubmitRequest
    ) -> SubmitOutcome:
        info = self._inspect(
            upload.path,
            max_pixels=self._policy.max_pixels,
            min_side_px=self._policy.min_side_px,
            declared=request.declared_size,
        )
        account_id = principal.account_id
        key = request.idempotency_key
        if key is not None and (earlier := self._store.by_idempotency_key(account_id, key)):
            return self._replay(principal, earlier, upload, request)
        price, quote_id = self._price(account_id, info, request)
        if request.capability not in self._served():
            raise WorkerUnavailableError(
                f"no engine serves {request.capability} right now", capability=request.capability
            )
        okey = options_key(price.options)
        # One submission per account at a time in this process: the duplicate check
        # and the fair-use count must see the previous submission's job row.
        duplicate_rule = self._duplicate_rule(principal)
        with self._account_lock(account_id):
            candidates = self._store.find_duplicates(
                account_id=account_id, sha256=upload.sha256, capability=request.capability,
                options_key=okey, rule=duplicate_rule,
            )  # fmt: skip
            if (duplicate := duplicate_rule.duplicate_of(candidates)) is not None:
                return SubmitOutcome(duplicate, duplicate_of=duplicate.id)
            entitlement = self._plans.entitlement(account_id=account_id)
            if entitlement is not None:
                self._check_fair_use(account_id, entitlement)
            job_id = new_id("job")
            hold = self._hold(job_id, account_id, price, entitlement)
            tier = Tier.STANDARD if entitlement is None else Tier.VIP
            try:
                max_active = entitlement.max_concurrent_jobs if entitlement else None
                job = self._store_job(
                    job_id, principal, upload, info, price, hold, quote_id, okey, key, tier,
                    max_active, duplicate_rule,
                )  # fmt: skip
            except BaseException as failure:
                # This attempt's hold goes back: the job row, unique per key, is what a
                # retry finds, so a retry after a failure holds (and pays) afresh.
                self._storage.delete_job(job_id)
                self._ledger.release(
                    hold_id=hold.hold_id,
                    idempotency_key=f"{job_id}:release",
                    reason="submit_failed",
                )
                if isinstance(failure, DuplicateSubmission):  # another gateway's, just now
                    return SubmitOutcome(failure.job, duplicate_of=failure.job.id)
                if isinstance(failure, IdempotencyConflictError):
                    # Another process stored a job under this key first.
                    earlier = self._store.by_idempotency_key(account_id, key or "")
                    if earlier is not None:
                        return self._replay(principal, earlier, upload, request)
                raise
        self._after_accept(job)
        return SubmitOutcome(job)

    def _replay(
        self, principal: Principal, earlier: Job, upload: ReceivedFile, request: SubmitRequest
    ) -> SubmitOutcome:
        """The first answer to this key, if this is the same submission (the same image,
        capability and options, read by the book that priced the first) by someone who
        may see its job: keys are the account's, and a user key sees its own jobs only."""
        if principal.role is Role.USER and earlier.user_id != principal.user_id:
            raise IdempotencyConflictError(
                "this Idempotency-Key was used by another user of the account",
                idempotency_key=request.idempotency_key,
            )
        options = self._quotes.canonical_options(
            earlier.price_book_version,
            request.capability,
            request.options,
            account_id=earlier.account_id,
        )
        if (
            earlier.sha256 != upload.sha256
            or earlier.capability != request.capability
            or options is None
            or options_key(options) != earlier.options_key
        ):
            raise IdempotencyConflictError(
                "this Idempotency-Key was used for a different submission",
                idempotency_key=request.idempotency_key,
                job_id=earlier.id,
            )
        return SubmitOutcome(earlier, replayed=True)

    def _price(
        self, account_id: str, info: ImageInfo, request: SubmitRequest
    ) -> tuple[Price, str | None]:
        if request.quote_id:
            quote = self._quotes.redeem(
                quote_id=request.quote_id,
                account_id=account_id,
                capability=request.capability,
                width=info.width,
                height=info.height,
                options=request.options,
            )
            return quote.price, quote.quote_id
        price = self._quotes.price(
            capability=request.capability,
            width=info.width,
            height=info.height,
            options=request.options,
            account_id=account_id,
        )
        return price, None

    def _duplicate_rule(self, principal: Principal) -> DuplicateRule:
        """Which of the earlier jobs with the same image, capability and options this
        submission duplicates: one the submitter can see (a user key sees its own user's
        jobs only) that still blocks a resubmission."""
        now = self._clock.now()
        window_s = self._policy.dedup_window_s

        def duplicate_of(earlier: Sequence[Job]) -> Job | None:
            for job in earlier:
                visible = principal.role is not Role.USER or job.user_id == principal.user_id
                state = earlier_state(job)
                if visible and blocks_resubmission(state, now=now, window_s=window_s):
                    return job
            return None

        return DuplicateRule(
            user_id=principal.user_id if principal.role is Role.USER else None,
            succeeded_since=now - timedelta(seconds=window_s),
            duplicate_of=duplicate_of,
        )

    def _check_fair_use(self, account_id: str, entitlement: Entitlement) -> None:
        active = self._store.count_active(account_id)
        if active >= entitlement.max_concurrent_jobs:
            raise ConcurrencyLimitError(
                f"the {entitlement.plan} plan runs at most {entitlement.max_concurrent_jobs} "
                "jobs at a time; wait for one to finish",
                limit=entitlement.max_concurrent_jobs,
                active=active,
            )

    def _hold(
        self,
        job_id: str,
        account_id: str,
        price: Price,
        entitlement: Entitlement | None,
    ) -> HoldReceipt:
        """This submission's hold: one per attempt (keyed by its new job id)."""
        return self._ledger.place_hold(
            account_id=account_id,
            # Unlimited plans take nothing but the list price is still recorded.
            amount=0 if entitlement is not None else price.tokens,
            list_tokens=price.tokens,
            idempotency_key=f"job:{job_id}",
            ttl_s=self._policy.hold_ttl_s,
            memo={"job_id": job_id, "capability": price.capability},
        )

    def _store_job(
        self,
        job_id: str,
        principal: Principal,
        upload: ReceivedFile,
        info: ImageInfo,
        price: Price,
        hold: HoldReceipt,
        quote_id: str | None,
        okey: str,
        key: str | None,
        tier: Tier,
        max_active: int | None,
        duplicate_rule: DuplicateRule,
    ) -> Job:
        input_name = self._storage.adopt_input(job_id, upload.path, suffix=info.format.value)
        job = Job(
            id=job_id,
            account_id=principal.account_id,
            user_id=principal.user_id,
            capability=price.capability,
            options=dict(price.options),
            options_key=okey,
            state=JobState.QUEUED,
            tier=int(tier),
            sha256=upload.sha256,
            md5=upload.md5,
            size_bytes=upload.size_bytes,
            image_format=info.format.value,
            width=info.width,
            height=info.height,
            tokens=hold.amount,
            list_tokens=hold.list_tokens,
            hold_id=hold.hold_id,
            hold_expires_at=_parse_time(hold.expires_at),
            price_book_version=price.price_book_version,
            breakdown=tuple(line.to_dict() for line in price.breakdown),
            quote_id=quote_id,
            idempotency_key=key,
            input_name=input_name,
            created_at=self._clock.now(),
        )
        first = self._events.first_event(
            job_id, "queued", {"tokens": job.tokens, "list_tokens": job.list_tokens}
        )
        entry = self._hold_entry(principal, job)
        self._store.add(job, first, entry, max_active=max_active, duplicate_rule=duplicate_rule)
        self._events.announce(first)
        return job

    def _hold_entry(self, principal: Principal, job: Job) -> AuditEntry | None:
        """The audit entry of the job's hold, stored with the job in one transaction."""
        if self._audit is None:
            return None
        return self._audit.entry(
            actor=principal,
            action="jobs.hold",
            target=job.id,
            account_id=job.account_id,
            details={"hold_id": job.hold_id, "tokens": job.tokens, "list_tokens": job.list_tokens},
        )

    def _after_accept(self, job: Job) -> None:
        self._metrics.job_state(job.capability, JobState.QUEUED.value)
        self._metrics.tokens(job.capability, "held", job.tokens)
        self._enqueue(job)


def earlier_state(job: Job) -> DedupCandidate:
    """The facts about an earlier job the duplicate rule looks at."""
    return DedupCandidate(job.state, job.created_at, job.result_available)


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value)
