"""The dispatcher: runs queued jobs on engines, settles them, survives restarts.

One ``FairQueue`` per capability (plan tier first, then round-robin between accounts)
and a concurrency limit per capability. Each job runs as a task: the queued -> running
compare-and-set, the engine call (with progress events and a timeout guard), then the
settlement. The database is the queue of record, and may be shared by several
gateways: whichever starts a queued job first runs it, and holds it by a lease it
renews while it runs (``_hold_leases``). On start, and every lease period after
(``_take_over``), ``recovery`` finishes what a dead process left behind: the jobs no
live gateway holds, and the queued jobs.

Blocking work (the database) goes to threads; the event loop only schedules. Starting
and settling a job go through ``offload`` (the composition root passes its hot-path
worker; ``asyncio.to_thread`` by default).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from comfygate.domain.errors import JobStateError, WorkerError, WorkerUnavailableError
from comfygate.domain.jobs import (
    MAX_ATTEMPTS,
    TIMEOUT_GRACE_S,
    FairQueue,
    JobState,
    QueueEntry,
    longest_run_s,
)
from comfygate.services.clock import Clock
from comfygate.services.engine_run import run_on_engine
from comfygate.services.engines import Engine, EngineResult
from comfygate.services.events import JobEvents
from comfygate.services.job_ports import Job, JobMetrics, JobStore, ResultStorage
from comfygate.services.recovery import housekeep, recover_job, recover_jobs
from comfygate.services.settlement import JobLifecycle

log = logging.getLogger(__name__)

REPAIR_DELAY_S = 1.0
REPAIR_MAX_DELAY_S = 60.0
"""Pauses before looking again at a job after a dispatcher error, doubling up to this."""
UNRECORDED = "the gateway could not record the job's progress, and again on the retry"
CANCEL_TRIES = 3
"""Times ``cancel`` looks again at a job that moved between the queue and a run."""
SHUTDOWN_WAIT_S = TIMEOUT_GRACE_S
"""How long shutdown waits for a cancelled run to stop (an engine stopping its work on
a server) before the engines are closed under it."""

Offload = Callable[..., Awaitable[Any]]
"""Runs ``fn(*args, **kwargs)`` off the event loop, like ``asyncio.to_thread``."""


@dataclass(frozen=True, slots=True)
class DispatchPolicy:
    job_timeout_s: float
    default_concurrency: int = 2
    concurrency: Mapping[str, int] = field(default_factory=dict)
    progress_step: float = 0.05
    """Progress events are recorded when the fraction moves by at least this much."""
    housekeeping_interval_s: float = 60.0

    def limit(self, capability: str) -> int:
        return max(1, self.concurrency.get(capability, self.default_concurrency))


@dataclass(eq=False)
class _Running:
    done: asyncio.Event = field(default_factory=asyncio.Event)
    engine: Engine | None = None
    run_task: asyncio.Task[EngineResult] | None = None
    cancel_reason: str | None = None
    requeued: Job | None = None
    """Set when the job goes back to the queue; pushed once its slot is free."""
    started: Job | None = None
    """The job as this gateway started it (its attempt, and its runner: this gateway)."""
    lost: bool = False
    """Set when the lease could not be renewed: canceled or taken over elsewhere. The
    run is stopped, and nothing of it recorded."""


class Dispatcher:
    """Schedules, runs and settles jobs in this process."""

    def __init__(
        self,
        *,
        store: JobStore,
        lifecycle: JobLifecycle,
        events: JobEvents,
        engines: Sequence[Engine],
        storage: ResultStorage,
        clock: Clock,
        metrics: JobMetrics,
        policy: DispatchPolicy,
        housekeeping: Sequence[Callable[[], object]] = (),
        offload: Offload = asyncio.to_thread,
    ) -> None:
        self._store = store
        self._lifecycle = lifecycle
        self._events = events
        self._engines = list(engines)
        self._storage = storage
        self._clock = clock
        self._metrics = metrics
        self._policy = policy
        self._housekeeping = list(housekeeping)
        self._offload = offload
        self._queues: dict[str, FairQueue] = {}
        self._pending: dict[str, Job] = {}
        self._busy: dict[str, int] = {}
        self._running: dict[str, _Running] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._stopping = False
        self._failed_engines: set[str] = set()
        self._troubles: dict[str, int] = {}
        """Per job, the dispatcher errors in a row (see ``_repair``)."""
        self._unreadable: set[str] = set()
        """Queued jobs whose input is not here, already logged (see ``_recoverable``)."""
        self._cancels: dict[str, str] = {}
        """Cancels asked for a job under repair: the repair carries them out."""

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Start the engines, recover jobs from the database, begin dispatching."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._stopping = False
        for engine in self._engines:
            try:
                await engine.start()
            except Exception:  # a broken engine must not keep the gateway from serving
                log.exception("engine %s failed to start", engine.name)
                self._failed_engines.add(engine.name)
        await self.recover()
        self._spawn(self._pump())
        self._spawn(self._hold_leases())
        self._spawn(self._take_over())
        if self._housekeeping:
            interval_s = self._policy.housekeeping_interval_s
            self._spawn(housekeep(self._housekeeping, interval_s=interval_s))

    async def stop(self) -> None:
        """Stop dispatching; running jobs go back to the queue (no retry used up)."""
        self._stopping = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for engine in self._engines:
            try:
                await engine.close()
            except Exception:  # a failing close must not stop the others
                log.exception("engine %s failed to close", engine.name)

    async def is_ready(self) -> bool:
        """Whether the dispatcher runs and some engine serves some capability."""
        return self._loop is not None and not self._stopping and bool(self.served_capabilities())

    def served_capabilities(self) -> frozenset[str]:
        """Capabilities an engine that started (or will start) can run."""
        served: set[str] = set()
        for engine in self._engines:
            if engine.name not in self._failed_engines:
                served |= engine.capabilities()
        return frozenset(served)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- queueing ------------------------------------------------------------------------

    def enqueue(self, job: Job) -> None:
        """Queue a stored job; callable from any thread. Before ``start`` it is a
        no-op: the job is in the database and ``start`` recovers it."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._push(job)
        else:
            loop.call_soon_threadsafe(self._push, job)

    def _push(self, job: Job) -> None:
        queue = self._queues.setdefault(job.capability, FairQueue())
        if job.id in self._running or job.id in queue:
            return
        self._pending[job.id] = job
        queue.push(QueueEntry(job.id, job.account_id, job.tier))
        self._metrics.queue_depth(job.capability, len(queue))
        if self._wake is not None:
            self._wake.set()

    async def _pump(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            for capability, queue in self._queues.items():
                while queue and self._busy.get(capability, 0) < self._policy.limit(capability):
                    entry = queue.pop()
                    assert entry is not None
                    job = self._pending.pop(entry.job_id)
                    self._busy[capability] = self._busy.get(capability, 0) + 1
                    self._running[job.id] = _Running()
                    self._spawn(self._execute(job))
                self._metrics.queue_depth(capability, len(queue))

    # -- running one job -------------------------------------------------------------------

    async def _execute(self, job: Job) -> None:
        entry = self._running[job.id]
        try:
            started = entry.started = await self._offload(self._lifecycle.start, job)
            if started is None:
                pass  # canceled while queued
            elif entry.cancel_reason is not None:
                await self._offload(self._lifecycle.cancel, started, reason=entry.cancel_reason)
            else:
                await self._run(started, entry)
        except asyncio.CancelledError:
            await self._interrupted(job.id, entry)
            raise
        except Exception:  # the database, say: the job is looked at again in a moment
            log.exception("job %s: dispatcher error; trying again", job.id)
            troubles = self._troubles[job.id] = self._troubles.get(job.id, 0) + 1
            if entry.cancel_reason is not None:  # asked for before the error: still wanted
                self._cancels[job.id] = entry.cancel_reason
            self._spawn(self._repair(job.id, troubles))
        else:
            self._troubles.pop(job.id, None)
        finally:
            self._busy[job.capability] -= 1
            self._running.pop(job.id, None)
            entry.done.set()
            if entry.requeued is not None and not self._stopping:
                self._push(entry.requeued)
            if self._wake is not None:
                self._wake.set()

    async def _run(self, job: Job, entry: _Running) -> None:
        refusal = self._refusal(job)
        if refusal is not None:
            code, reason = refusal
            await self._offload(self._lifecycle.fail, job, code=code, reason=reason)
            return
        engine = self._engine_for(job.capability)
        assert engine is not None  # _refusal checked
        entry.engine = engine
        entry.run_task = asyncio.ensure_future(
            run_on_engine(
                engine,
                job,
                storage=self._storage,
                events=self._events,
                timeout_s=self._policy.job_timeout_s,
                progress_step=self._policy.progress_step,
            )
        )
        await asyncio.wait({entry.run_task})
        await self._conclude(job, entry)

    def _refusal(self, job: Job) -> tuple[str, str] | None:
        """Why the job must fail without running, if it must."""
        # The longest a run may take, its wait for a worker and the guard's grace
        # included: a hold that expires within it would be released under a running
        # job, which then could not be charged.
        longest = longest_run_s(self._policy.job_timeout_s)
        if job.hold_expires_at.timestamp() <= self._clock.now().timestamp() + longest:
            return "hold_expired", "the job waited in the queue longer than its hold lasts"
        if self._engine_for(job.capability) is None:
            reason = f"no engine serves {job.capability}"
            if job.failure_reason:  # a retry: keep what went wrong the last time
                reason = f"{job.failure_reason}; then {reason} to retry it"
            return WorkerUnavailableError.code, reason
        return None

    def _engine_for(self, capability: str) -> Engine | None:
        for engine in self._engines:
            if engine.name not in self._failed_engines and capability in engine.capabilities():
                return engine
        return None

    async def _conclude(self, job: Job, entry: _Running) -> None:
        task = entry.run_task
        assert task is not None
        if entry.lost:  # canceled or taken over elsewhere: nothing of this run counts
            log.info("job %s: no longer held by this gateway; its run was stopped", job.id)
            self._events.forget(job.id)
            if not task.cancelled():
                task.exception()  # retrieved: the run's end is moot
            return
        lifecycle = self._lifecycle
        engine_name = entry.engine.name if entry.engine is not None else None
        if task.cancelled() or (entry.cancel_reason is not None and task.exception()):
            reason = entry.cancel_reason or "canceled"
            await self._offload(lifecycle.cancel, job, reason=reason)
            return
        exc = task.exception()
        if exc is None:
            await self._succeed(job, task.result(), engine_name)
        elif isinstance(exc, WorkerError) and exc.retryable and job.attempts < MAX_ATTEMPTS:
            requeued = await self._offload(
                lifecycle.requeue, job, reason=exc.code, detail=exc.message
            )
            if requeued is not None and entry.cancel_reason is not None:
                # Canceled while it went back to the queue: it must not run again.
                await self._offload(lifecycle.cancel, requeued, reason=entry.cancel_reason)
            else:
                entry.requeued = requeued
        elif isinstance(exc, WorkerError):
            await self._offload(
                lifecycle.fail, job, code=exc.code, reason=exc.message, engine=engine_name
            )
        else:
            log.error("job %s: engine %s crashed", job.id, engine_name, exc_info=exc)
            reason = f"engine error: {type(exc).__name__}: {exc}"
            await self._offload(
                lifecycle.fail, job, code="engine_error", reason=reason, engine=engine_name
            )

    async def _succeed(self, job: Job, result: EngineResult, engine_name: str | None) -> None:
        try:
            await self._offload(self._lifecycle.succeed, job, result)
        except (OSError, ValueError) as exc:  # keeping the result failed: our fault
            log.exception("job %s: could not keep the result", job.id)
            await self._offload(
                self._lifecycle.fail,
                job,
                code="result_storage_failed",
                reason=f"the result could not be stored: {exc}",
                engine=engine_name,
            )

    async def _repair(self, job_id: str, troubles: int) -> None:
        """After a dispatcher error, put the job where a restart would (``recover_job``):
        queued again, retried, failed or settled. Otherwise the job would wait, queued
        or running, for the next restart while its hold ran out. The pauses grow with
        the job's errors in a row (its ``troubles``) and with each failed look: a
        database that stays away is not asked every second. A job whose hold runs out
        meanwhile fails with it released, when it is next started."""
        delay = min(REPAIR_DELAY_S * 2 ** min(troubles - 1, 16), REPAIR_MAX_DELAY_S)
        while True:
            await asyncio.sleep(delay)
            if job_id in self._running:  # queued again and running by now
                return
            try:
                again = await self._offload(self._put_right, job_id)
            except Exception:
                log.exception("job %s: still failing; trying again", job_id)
                delay = min(delay * 2, REPAIR_MAX_DELAY_S)
                continue
            if again is None:  # settled, failed or canceled: nothing more to count
                self._troubles.pop(job_id, None)
            elif not self._stopping:
                self._push(again)
            return

    def _put_right(self, job_id: str) -> Job | None:
        """``recover_job`` for one job, or its cancel if one was asked for (before the
        error, or during the pause); the job to queue, if any. Blocking."""
        job = self._store.get(job_id)
        if job is None:
            return None
        if job.state is JobState.RUNNING and job.runner not in (None, self._lifecycle.runner):
            self._cancels.pop(job_id, None)
            return None  # another gateway took it over meanwhile: it is that one's now
        reason = self._cancels.get(job_id)
        if reason is not None and not job.state.is_terminal:
            self._lifecycle.cancel(job, reason=reason)
            again = None
        else:
            again = recover_job(job, self._lifecycle, lost_twice=UNRECORDED)
        self._cancels.pop(job_id, None)  # (kept while it could not be carried out)
        return again

    async def _interrupted(self, job_id: str, entry: _Running) -> None:
        """Our own task was cancelled (shutdown): stop the engine, queue the job again.

        The run is awaited (up to ``SHUTDOWN_WAIT_S``) so it stops its work before
        ``stop`` closes the engines; whatever it ends with is retrieved, never left to
        be reported as an unretrieved task exception.
        """
        run = entry.run_task
        if run is not None and not run.done():
            run.cancel()
            if entry.engine is not None:
                await _quietly(entry.engine.cancel(job_id))
            run.add_done_callback(_retrieve)
            await asyncio.wait({run}, timeout=SHUTDOWN_WAIT_S)
        job = await asyncio.to_thread(self._store.get, job_id)
        started = entry.started
        if (
            job is not None
            and job.state is JobState.RUNNING
            and started is not None
            and (job.runner, job.attempts) == (started.runner, started.attempts)
        ):  # still the run this gateway started, not another gateway's since
            await asyncio.to_thread(
                self._lifecycle.requeue, job, reason="shutdown", count_attempt=False
            )

    # -- cancel ----------------------------------------------------------------------------

    async def cancel(self, job: Job, *, reason: str = "canceled by the customer") -> Job:
        """Cancel a queued or running job and release its hold; returns the job after.

        Raises ``JobStateError`` for a job that already finished.
        """
        for _ in range(CANCEL_TRIES):
            if job.state is JobState.QUEUED:
                done = await asyncio.to_thread(self._lifecycle.cancel, job, reason=reason)
                if done is not None:
                    self._drop_queued(job)
                    return done
            entry = self._running.get(job.id)
            if entry is not None:
                after = await self._cancel_here(job, entry, reason)
                if after.state.is_terminal:
                    return after
                # Not ours after all: our start lost the race to another gateway (or
                # the job went back to the queue). Cancel it where it is.
                job = after
                continue
            current = await asyncio.to_thread(self._store.get, job.id)
            # Running, but not here: under repair, or on another gateway (which sees at
            # its next lease renewal that the job is no longer its, and stops the run).
            if current is not None and current.state is JobState.RUNNING:
                if current.id in self._troubles:
                    self._cancels[current.id] = reason  # if this fails too, the repair does
                canceled = await asyncio.to_thread(self._lifecycle.cancel, current, reason=reason)
                if canceled is not None:
                    self._cancels.pop(current.id, None)
                    return canceled
                current = await asyncio.to_thread(self._store.get, job.id)
            if current is None or current.state is not JobState.QUEUED:
                state = current.state.value if current is not None else job.state.value
                raise JobStateError(
                    f"job {job.id} is {state}; only queued or running jobs can be canceled",
                    job_id=job.id,
                    state=state,
                )
            job = current  # it went back to the queue meanwhile (a retry): cancel it there
        raise JobStateError(
            f"job {job.id} kept changing state; try again", job_id=job.id, state=job.state.value
        )

    async def _cancel_here(self, job: Job, entry: _Running, reason: str) -> Job:
        """Cancel the job this gateway is starting or running; the job after."""
        entry.cancel_reason = reason
        if entry.run_task is not None:
            entry.run_task.cancel()
            if entry.engine is not None:
                await _quietly(entry.engine.cancel(job.id))
        await entry.done.wait()
        after = await asyncio.to_thread(self._store.get, job.id)
        assert after is not None
        return after

    def _drop_queued(self, job: Job) -> None:
        self._pending.pop(job.id, None)
        queue = self._queues.get(job.capability)
        if queue is not None:
            queue.remove(job.id)
            self._metrics.queue_depth(job.capability, len(queue))

    # -- leases: several gateways on one database ---------------------------------------------

    async def _hold_leases(self) -> None:
        """Renew the leases of the jobs running here, a third of a lease ahead; stop the
        runs of those no longer held (canceled, or taken over, by another gateway)."""
        while True:
            await asyncio.sleep(self._lifecycle.lease_s / 3)
            running = {i: e for i, e in self._running.items() if e.run_task is not None}
            try:
                held = await self._offload(self._lifecycle.renew, list(running))
            except Exception:  # the database, say: try again at the next beat
                log.exception("could not renew the leases of the running jobs")
                continue
            for job_id in running.keys() - held:
                self._stop_lost(job_id, running[job_id])

    def _stop_lost(self, job_id: str, entry: _Running) -> None:
        if job_id not in self._running or entry.lost:
            return  # it ended meanwhile
        log.warning("job %s: no longer held by this gateway; stopping its run", job_id)
        entry.lost = True
        if entry.run_task is not None and not entry.run_task.done():
            entry.run_task.cancel()
            if entry.engine is not None:  # on its own: a slow engine holds up no renewal
                self._spawn(_quietly(entry.engine.cancel(job_id)))

    async def _take_over(self) -> None:
        """Every lease period, what a restart would do: take the jobs that no live
        gateway holds (a gateway died) and queue the queued ones it has not (another
        gateway accepted them and died, or is busy: whoever starts a job first runs
        it)."""
        while True:
            await asyncio.sleep(self._lifecycle.lease_s)
            try:
                await self.recover()
            except Exception:
                log.exception("could not look for jobs to take over")

    # -- restart recovery ---------------------------------------------------------------------

    async def recover(self) -> None:
        """Settle, retry, fail or re-queue what a previous process left behind."""
        jobs = await asyncio.to_thread(self._recoverable)
        for job in jobs:
            self._push(job)

    def _recoverable(self) -> list[Job]:
        """``recover_jobs``, less the jobs whose input this gateway cannot read (another
        gateway's, on a data dir of its own): they wait for one that can. Blocking."""
        jobs = recover_jobs(
            store=self._store,
            lifecycle=self._lifecycle,
            # Live, not a copy: a job is in it before it starts, so a job found running
            # as this gateway's and not in it is from before a restart (or under repair).
            running_here=self._running.keys(),
        )
        readable = []
        for job in jobs:
            if self._storage.input_path(job.id, job.input_name).is_file():
                readable.append(job)
            elif job.id not in self._unreadable:
                self._unreadable.add(job.id)
                log.warning("job %s: its input is not in this gateway's data dir", job.id)
        return readable


def _retrieve(task: asyncio.Task[EngineResult]) -> None:
    """Take a given-up run's outcome: the job is queued again, its error is moot."""
    if not task.cancelled() and task.exception() is not None:
        log.info("job run ended with %r while shutting down", task.exception())


async def _quietly(awaitable: Awaitable[None]) -> None:
    try:
        await awaitable
    except Exception:  # best effort: the job is being given up anyway
        log.exception("engine cancel failed")
