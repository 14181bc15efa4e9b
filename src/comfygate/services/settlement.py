"""Job lifecycle after submission: start, finish, fail, cancel, retry, and settle.

Settlement is written state-first: the job's terminal state is committed, then the
hold is captured (succeeded) or released (failed, canceled) through ``LedgerService``
with an idempotency key derived from the job id, then ``settled_at``, the usage event,
the terminal event and the audit entry are committed together. A crash anywhere in between leaves a
terminal, unsettled job that ``settle`` finishes after the restart; the ledger key
makes the replayed capture or release move nothing the second time. So a job is
charged at most once, and only when it succeeded. A success whose hold ran out
before its capture (an outage longer than the hold's time limit) is charged by a hold
and capture of its own, keyed by the job too.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from comfygate.domain.errors import (
    HoldNotOpenError,
    IdempotencyConflictError,
    InsufficientBalanceError,
)
from comfygate.domain.ids import new_id
from comfygate.domain.jobs import JobState, check_transition
from comfygate.domain.ledger import HoldState
from comfygate.services.audit import AuditEntry, AuditLog
from comfygate.services.clock import Clock
from comfygate.services.engines import EngineResult
from comfygate.services.events import JobEvents
from comfygate.services.job_ports import Job, JobMetrics, JobStore, ResultStorage, UsageEvent
from comfygate.services.ledger import LedgerService

log = logging.getLogger(__name__)

SYSTEM_ACTOR = "system:jobs"


class JobLifecycle:
    """Moves jobs through their states and settles their holds."""

    def __init__(
        self,
        *,
        store: JobStore,
        ledger: LedgerService,
        events: JobEvents,
        storage: ResultStorage,
        clock: Clock,
        metrics: JobMetrics,
        result_retention_s: int,
        audit: AuditLog | None = None,
        runner: str = "local",
        lease_s: float = 30.0,
    ) -> None:
        self.runner = runner
        """This gateway's name on the jobs it starts (``Settings.runner_id``)."""
        self.lease_s = lease_s
        self._store = store
        self._ledger = ledger
        self._events = events
        self._storage = storage
        self._clock = clock
        self._metrics = metrics
        self._retention = timedelta(seconds=result_retention_s)
        self._audit = audit

    def _move(
        self,
        job: Job,
        target: JobState,
        changes: Mapping[str, Any] | None = None,
        event: tuple[str, Mapping[str, Any]] | None = None,
    ) -> Job | None:
        """Compare-and-set the state, storing ``event`` (kind, data) with it."""
        check_transition(job.id, job.state, target)
        events = self._events.batch(job.id, *event) if event is not None else []
        moved = self._store.transition(job, target=target, changes=changes or {}, events=events)
        if moved is not None:
            self._metrics.job_state(job.capability, target.value)
            if events:
                self._events.announce(events[-1])
        return moved

    def start(self, job: Job) -> Job | None:
        """queued -> running (one more attempt), held by this gateway for ``lease_s``;
        None if the job is no longer queued (another gateway took it, or a cancel)."""
        attempt, now = job.attempts + 1, self._clock.now()
        changes = {
            "started_at": now,
            "attempts": attempt,
            "runner": self.runner,
            "lease_until": now + timedelta(seconds=self.lease_s),
        }
        return self._move(job, JobState.RUNNING, changes, ("started", {"attempt": attempt}))

    def held_elsewhere(self, job: Job) -> bool:
        """Whether another gateway holds ``job`` now (its lease has not run out): no
        other gateway may take it as lost. A job of this gateway's (from before a
        restart), or of none, is held by no one else."""
        lease = job.lease_until
        mine_or_none = job.runner is None or job.runner == self.runner
        return not mine_or_none and lease is not None and lease > self._clock.now()

    def renew(self, job_ids: Collection[str]) -> set[str]:
        """Hold the jobs this gateway runs for another ``lease_s``; those it still
        holds (a job missing was canceled, or taken over, elsewhere)."""
        if not job_ids:
            return set()
        until = self._clock.now() + timedelta(seconds=self.lease_s)
        return self._store.renew_leases(job_ids, runner=self.runner, until=until)

    def requeue(
        self, job: Job, *, reason: str, detail: str | None = None, count_attempt: bool = True
    ) -> Job | None:
        """running -> queued, to run again (a lost worker, a retryable error, a
        shutdown; a shutdown does not use up the job's retry)."""
        attempts = job.attempts if count_attempt else max(job.attempts - 1, 0)
        # What went wrong stays on the job so that, if no retry can run, it still says why.
        changes = {
            "attempts": attempts,
            "started_at": None,
            "failure_reason": detail or reason,
            "lease_until": None,
        }
        event = ("queued", {"retry": count_attempt, "reason": reason})
        return self._move(job, JobState.QUEUED, changes, event)

    def succeed(self, job: Job, result: EngineResult) -> Job | None:
        """running -> succeeded with the engine's result, then settle (capture)."""
        now = self._clock.now()
        changes = {
            "finished_at": now,
            "engine": result.engine,
            "instance": result.instance,
            "result_name": self._storage.result_name(job.id, result.output_path),
            "result_width": result.width,
            "result_height": result.height,
            "result_expires_at": now + self._retention,
            "inference_s": result.inference_s,
            "gpu_peak_mb": result.gpu_peak_mb,
            "result_metadata": {"engine": result.engine, **dict(result.metadata)},
        }
        done = self._move(job, JobState.SUCCEEDED, changes)
        if done is not None:
            self._metrics.inference(job.capability, result.engine, result.inference_s)
            return self.settle(done)
        return None

    def fail(self, job: Job, *, code: str, reason: str, engine: str | None = None) -> Job | None:
        """queued/running -> failed (our side: engine error, timeout, worker lost, hold
        expired), then settle (release in full)."""
        changes = {"finished_at": self._clock.now(), "failure_code": code, "failure_reason": reason}
        if engine is not None:
            changes["engine"] = engine
        done = self._move(job, JobState.FAILED, changes)
        return self.settle(done) if done is not None else None

    def cancel(self, job: Job, *, reason: str = "canceled by the customer") -> Job | None:
        """queued/running -> canceled, then settle (release in full)."""
        changes = {
            "finished_at": self._clock.now(),
            "failure_code": "canceled",
            "failure_reason": reason,
        }
        done = self._move(job, JobState.CANCELED, changes)
        return self.settle(done) if done is not None else None

    def settle(self, job: Job) -> Job:
        """Capture or release a terminal job's hold and record usage; idempotent."""
        if job.settled_at is not None:
            return job
        settled_hold = self._settle_hold(job)
        charged, released = settled_hold.charged, settled_hold.released
        now = self._clock.now()
        events = self._events.batch(job.id, job.state.value, _terminal_data(job, charged))
        settled, first = self._store.record_settlement(
            job,
            tokens_charged=charged,
            settled_at=now,
            usage=_usage(job, charged, now),
            events=events,
            audit=self._settle_entry(job, settled_hold),
        )
        if not first:  # another actor settled it in the meantime
            return settled
        self._events.announce(events[-1])
        if job.state is JobState.SUCCEEDED:
            self._storage.delete_input(job.id, job.input_name)
        else:
            self._storage.delete_job(job.id)  # nothing of a failed job is worth keeping
        if settled_hold.late_hold_id is not None:  # held afresh: held = captured + released
            self._metrics.tokens(job.capability, "held", charged)
        self._metrics.tokens(job.capability, "captured", charged)
        self._metrics.tokens(job.capability, "released", released)
        return settled

    def settlement_refused(self, job: Job, error: Exception) -> None:
        """A terminal job that could not be settled (``recovery`` tries it again each
        sweep): logged, and its end told once, so that whoever follows its progress
        stops waiting (the end is otherwise stored with the settlement). The end says
        nothing was charged yet; the settlement, when it comes, tells the charge."""
        last = self._store.last_event_seq(job.id)
        if self._events.ended(job.id, after_seq=last):
            log.warning("settlement of job %s refused again: %s", job.id, error)
            return
        log.error("settlement of job %s refused; tried again each sweep", job.id,
                  exc_info=error)  # fmt: skip
        data = {**_terminal_data(job, 0), "settled": False}
        self._events.record(job.id, job.state.value, data)

    def _settle_entry(self, job: Job, settled: _Settled) -> AuditEntry | None:
        """The settlement's audit entry, stored with the settlement in one transaction."""
        if self._audit is None:
            return None
        details: dict[str, Any] = {
            "hold_id": job.hold_id,
            "tokens_charged": settled.charged,
            "tokens_released": settled.released,
            "list_tokens": job.list_tokens,
            "state": job.state.value,
            "failure_code": job.failure_code,
        }
        if settled.late_hold_id is not None:
            details["late_hold_id"] = settled.late_hold_id
        if settled.unpaid:
            details["tokens_unpaid"] = settled.unpaid
        return self._audit.entry(
            actor=SYSTEM_ACTOR,
            action="jobs.capture" if job.state is JobState.SUCCEEDED else "jobs.release",
            target=job.id,
            account_id=job.account_id,
            details=details,
        )

    def _settle_hold(self, job: Job) -> _Settled:
        """Capture or release the job's hold. A hold that expired meanwhile was already
        returned in full by the ledger: a failed job charges nothing and says all went
        back, and a succeeded one is charged afresh (``_charge_late``)."""
        try:
            if job.state is JobState.SUCCEEDED:
                receipt = self._ledger.capture(
                    hold_id=job.hold_id, idempotency_key=f"{job.id}:capture"
                )
            else:
                receipt = self._ledger.release(
                    hold_id=job.hold_id,
                    idempotency_key=f"{job.id}:release",
                    reason=job.failure_code or job.state.value,
                )
        except HoldNotOpenError as exc:
            log.warning("job %s: hold %s not open at settlement: %s", job.id, job.hold_id, exc)
            if exc.details.get("state") != HoldState.EXPIRED.value:
                return _Settled(0, 0)
            if job.state is JobState.SUCCEEDED:
                return self._charge_late(job)
            return _Settled(0, job.tokens)
        return _Settled(receipt.captured, receipt.released)

    def _charge_late(self, job: Job) -> _Settled:
        """A success whose hold ran out before its capture (the settlement waited out a
        crash or an outage longer than the hold's time limit): the result was delivered,
        so the job is charged its agreed price by a hold and capture of its own, keyed
        by the job like the first. If the account no longer has the tokens, the job is
        left unpaid, which the log and its audit entry say.

        The charge is decided once, by whoever settles first: when the account cannot
        pay, a hold of 0 goes under the job's key instead, so a second settler (the
        chore and the dispatcher may settle one job at once) cannot charge it later,
        after the first recorded it unpaid."""

        def hold(amount: int) -> str:
            return self._ledger.place_hold(
                account_id=job.account_id,
                amount=amount,
                list_tokens=job.list_tokens,
                idempotency_key=f"{job.id}:late-hold",
                memo={"job_id": job.id, "late": True},
            ).hold_id

        try:
            hold_id = hold(job.tokens)
        except IdempotencyConflictError:  # decided before: unpaid (its hold of 0)
            hold_id = hold(0)
        except InsufficientBalanceError:
            try:
                hold_id = hold(0)
            except IdempotencyConflictError:  # decided meanwhile: charged
                hold_id = hold(job.tokens)
        try:
            captured = self._ledger.capture(
                hold_id=hold_id, idempotency_key=f"{job.id}:late-capture"
            ).captured
        except HoldNotOpenError:  # it ran out too (another outage): released
            captured = 0
        if captured < job.tokens:
            log.error("job %s succeeded after its hold expired and is unpaid", job.id)
        return _Settled(captured, job.tokens, late_hold_id=hold_id, unpaid=job.tokens - captured)


class _Settled(NamedTuple):
    """What a settlement did to the job's tokens."""

    charged: int
    released: int
    late_hold_id: str | None = None
    unpaid: int = 0


def _terminal_data(job: Job, charged: int) -> dict[str, Any]:
    return {
        "state": job.state.value,
        "tokens_charged": charged,
        "list_tokens": job.list_tokens,
        "engine": job.engine,
        "failure_code": job.failure_code,
        "failure_reason": job.failure_reason,
        "result_available": job.result_available,
    }


def _usage(job: Job, charged: int, now: datetime) -> UsageEvent:
    queue_wait_s = (
        (job.started_at - job.created_at).total_seconds() if job.started_at is not None else None
    )
    return UsageEvent(
        id=new_id("use"),
        job_id=job.id,
        account_id=job.account_id,
        user_id=job.user_id,
        capability=job.capability,
        outcome=job.state.value,
        tokens_charged=charged,
        list_tokens=job.list_tokens,
        width=job.width,
        height=job.height,
        queue_wait_s=queue_wait_s,
        inference_s=job.inference_s,
        engine=job.engine,
        price_book_version=job.price_book_version,
        gpu_peak_mb=job.gpu_peak_mb,
        failure_code=job.failure_code,
        created_at=now,
    )


class ResultRetention:
    """Deletes results past their retention (a housekeeping chore)."""

    def __init__(self, *, store: JobStore, storage: ResultStorage, clock: Clock) -> None:
        self._store = store
        self._storage = storage
        self._clock = clock

    def purge(self, *, batch: int = 500) -> int:
        """Delete the files of jobs whose result expired; returns how many jobs."""
        now = self._clock.now()
        purged = 0
        while due := self._store.results_due(before=now, limit=batch):
            for job in due:
                self._storage.delete_job(job.id)
                self._store.mark_result_deleted(job.id, at=now)
            purged += len(due)
        return purged
