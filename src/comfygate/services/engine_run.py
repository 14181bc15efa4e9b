"""Running one job on an engine: the engine's input, a timeout guard, throttled progress.

Engines enforce ``EngineJob.timeout_s`` themselves; the guard here fires a little
later, for an engine that does not, cancels the job on the engine and reports a
``JobTimeoutError`` like an engine would. An engine that first waits for a worker
(ComfyUI, all instances busy) says when it has one (``EngineJob.started``), and the
guard counts from then: the wait, at most the timeout, is not the job's run time.
Progress is announced to the job's event stream when it moves by at least
``progress_step`` (and always at 100%).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from comfygate.domain.errors import JobTimeoutError
from comfygate.domain.jobs import TIMEOUT_GRACE_S
from comfygate.services.engines import Engine, EngineJob, EngineResult, ProgressCallback
from comfygate.services.events import JobEvents
from comfygate.services.job_ports import Job, ResultStorage


def engine_job(
    job: Job,
    storage: ResultStorage,
    *,
    timeout_s: float,
    started: Callable[[], None] | None = None,
) -> EngineJob:
    """What the engine is given for ``job``: its input file, an output folder, options."""
    return EngineJob(
        job_id=job.id,
        capability=job.capability,
        input_path=storage.input_path(job.id, job.input_name),
        output_dir=storage.output_dir(job.id),
        params=dict(job.options),
        timeout_s=timeout_s,
        started=started,
    )


def progress_reporter(events: JobEvents, job_id: str, *, step: float) -> ProgressCallback:
    """A progress callback announcing ``job_id``'s progress in steps of ``step``."""
    last = -1.0

    async def report(fraction: float, message: str) -> None:
        nonlocal last
        fraction = min(max(fraction, 0.0), 1.0)
        if fraction < 1.0 and fraction - last < step:
            return
        last = fraction
        events.progress(job_id, {"fraction": round(fraction, 3), "message": message})

    return report


async def run_on_engine(
    engine: Engine,
    job: Job,
    *,
    storage: ResultStorage,
    events: JobEvents,
    timeout_s: float,
    progress_step: float,
) -> EngineResult:
    """Run ``job`` on ``engine`` to its result, or raise the engine's ``WorkerError``
    (``JobTimeoutError`` when the guard fires)."""
    report = progress_reporter(events, job.id, step=progress_step)
    loop = asyncio.get_running_loop()
    restarted = False
    try:
        async with asyncio.timeout(timeout_s + TIMEOUT_GRACE_S) as guard:

            def started() -> None:
                nonlocal restarted
                if restarted:  # the first worker only: a retry elsewhere gets no more time
                    return
                restarted = True
                with contextlib.suppress(RuntimeError):  # the guard fired already
                    guard.reschedule(loop.time() + timeout_s + TIMEOUT_GRACE_S)

            work = engine_job(job, storage, timeout_s=timeout_s, started=started)
            return await engine.run(work, progress=report)
    except TimeoutError:
        await engine.cancel(job.id)
        raise JobTimeoutError(f"the job ran longer than {timeout_s:g} s", job_id=job.id) from None
