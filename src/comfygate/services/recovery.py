"""Restart recovery and housekeeping for the dispatcher.

The database is the queue of record, shared by every gateway on it. When a dispatcher
starts, and then every lease period, what a dead process left behind is finished
here: terminal jobs whose settlement a crash interrupted are settled (the ledger's
idempotency keys make a repeated capture or release move nothing), jobs found
``running`` that no live gateway holds (their lease ran out, or they are this
gateway's own from before a restart) are retried once or failed with their hold
released, and every queued job goes to the queue (of whichever gateway starts it
first). Nothing is lost and nothing is charged twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Sequence

from comfygate.domain.errors import ComfygateError
from comfygate.domain.jobs import MAX_ATTEMPTS, JobState
from comfygate.services.job_ports import Job, JobStore
from comfygate.services.settlement import JobLifecycle

log = logging.getLogger(__name__)

LOST_TWICE = "the process running the job stopped, and did so on the retry too"


def recover_jobs(
    *, store: JobStore, lifecycle: JobLifecycle, running_here: Collection[str] = ()
) -> list[Job]:
    """Settle, retry or fail what a dead process left; return the jobs to queue,
    oldest first. Blocking. ``running_here`` are jobs this process is running."""
    settle_unsettled(store=store, lifecycle=lifecycle)
    to_queue: list[Job] = []
    for job in store.in_states([JobState.RUNNING]):
        if job.id in running_here or lifecycle.held_elsewhere(job):
            continue  # running here, or on another gateway that holds it
        if (requeued := recover_job(job, lifecycle)) is not None:
            to_queue.append(requeued)
    queued = store.in_states([JobState.QUEUED])
    seen = {job.id for job in to_queue}
    return [*to_queue, *(job for job in queued if job.id not in seen)]


def recover_job(job: Job, lifecycle: JobLifecycle, *, lost_twice: str = LOST_TWICE) -> Job | None:
    """One job that nothing runs, put where it belongs: settled if it is terminal,
    queued again (once) or failed if it was running, left as it is if queued. The job
    to queue, if any. Blocking."""
    if job.state.is_terminal:
        if job.settled_at is None:
            lifecycle.settle(job)
        return None
    if job.state is not JobState.RUNNING:
        return job
    if job.attempts < MAX_ATTEMPTS:
        return lifecycle.requeue(job, reason="worker_lost")
    lifecycle.fail(job, code="worker_lost", reason=lost_twice)
    return None


def settle_unsettled(*, store: JobStore, lifecycle: JobLifecycle) -> int:
    """Settle every terminal job that is not settled yet; how many were. Blocking.

    At a start this finishes what a crash interrupted; as a housekeeping chore it
    retries a settlement that failed in this process (a database error mid-capture),
    which would otherwise wait for the next restart. Settling is idempotent, so a job
    that another thread is settling at the same moment is charged once.

    A job that fails to settle while the store answers is the job's own trouble (its
    hold gone, a row edited by hand): it is logged, its end is told to whoever follows
    it (``settlement_refused``), and the jobs after it go ahead. Such a job stays the
    oldest unsettled one, so raising for it stopped every sweep, and the gateway's
    start, for good. A failure while the store does not answer is raised.
    """
    settled = 0
    for job in store.unsettled():
        try:
            lifecycle.settle(job)
        except Exception as error:
            if not isinstance(error, ComfygateError) and not store.reachable():
                raise
            lifecycle.settlement_refused(job, error)
            continue
        settled += 1
    return settled


async def housekeep(chores: Sequence[Callable[[], object]], *, interval_s: float) -> None:
    """Run each blocking chore in a thread every ``interval_s``, forever; one failing
    chore does not stop the others."""
    while True:
        await asyncio.sleep(interval_s)
        for chore in chores:
            try:
                await asyncio.to_thread(chore)
            except Exception:
                log.exception("housekeeping chore %r failed", chore)
