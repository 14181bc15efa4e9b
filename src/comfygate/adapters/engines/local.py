"""What the in-process engines share: a thread pool, cancellation, timeouts, results.

Pixel work runs in the engine's own thread pool (numpy, Pillow and onnxruntime release
the GIL), one step at a time, so the event loop is never blocked and progress is
reported between steps. ``cancel`` and timeouts set a ``CancelToken``; steps check it,
and hooks (onnxruntime's ``RunOptions.terminate``) stop long computations mid-way.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from comfygate.domain.errors import (
    JobCancelledError,
    JobTimeoutError,
    WorkerUnavailableError,
    WorkflowError,
)
from comfygate.services.engines import EngineJob, EngineResult, ProgressCallback

T = TypeVar("T")

COLORIZE_CAPABILITIES = frozenset({"colorize.person", "colorize.building"})


class CancelToken:
    """Thread-safe "stop this job" flag with hooks run once when it is set."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self._lock = threading.Lock()
        self._reason: str | None = None
        self._hooks: list[Callable[[], None]] = []

    @property
    def cancelled(self) -> bool:
        return self._reason is not None

    def cancel(self, reason: str) -> None:
        with self._lock:
            if self._reason is not None:
                return
            self._reason = reason
            hooks, self._hooks = self._hooks, []
        for hook in hooks:
            hook()

    def add_hook(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` on cancellation (at once if already cancelled)."""
        with self._lock:
            if self._reason is None:
                self._hooks.append(hook)
                return
        hook()

    def check(self) -> None:
        """Raise ``JobCancelledError`` if the job was cancelled."""
        if self._reason is not None:
            raise JobCancelledError(f"job {self.job_id} was {self._reason}", job_id=self.job_id)


class LocalEngine:
    """Base of the built-in engines; subclasses implement ``_process``."""

    name = "local"

    def __init__(
        self,
        *,
        capabilities: Iterable[str] = COLORIZE_CAPABILITIES,
        max_workers: int = 1,
        instance: str | None = None,
    ) -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self._capabilities = frozenset(capabilities)
        self._max_workers = max_workers
        self.instance = instance
        self._executor: ThreadPoolExecutor | None = None
        self._running: dict[str, CancelToken] = {}

    def capabilities(self) -> frozenset[str]:
        return self._capabilities

    async def start(self) -> None:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=self._max_workers, thread_name_prefix=f"engine-{self.name}"
            )

    async def close(self) -> None:
        for token in list(self._running.values()):
            token.cancel("cancelled: engine closing")
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    async def cancel(self, job_id: str) -> None:
        token = self._running.get(job_id)
        if token is not None:
            token.cancel("cancelled")

    async def in_thread(self, token: CancelToken, fn: Callable[..., T], *args: Any) -> T:
        """Run one step in the pool, after checking that the job is still wanted."""
        token.check()
        if self._executor is None:
            raise WorkerUnavailableError(f"engine {self.name} is not started")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def run(self, job: EngineJob, *, progress: ProgressCallback) -> EngineResult:
        if job.capability not in self._capabilities:
            raise WorkflowError(
                f"engine {self.name} does not serve {job.capability!r}", capability=job.capability
            )
        if self._executor is None:
            raise WorkerUnavailableError(f"engine {self.name} is not started")
        if job.job_id in self._running:
            raise WorkflowError(f"job {job.job_id} is already running", job_id=job.job_id)
        token = CancelToken(job.job_id)
        self._running[job.job_id] = token
        started = time.perf_counter()
        try:
            async with asyncio.timeout(job.timeout_s):
                result = await self._process(job, token, progress)
        except TimeoutError as exc:
            token.cancel("timed out")
            raise JobTimeoutError(
                f"job {job.job_id} exceeded its {job.timeout_s} s timeout", job_id=job.job_id
            ) from exc
        except asyncio.CancelledError:
            token.cancel("cancelled")  # stop the worker thread too
            raise
        finally:
            self._running.pop(job.job_id, None)
        return EngineResult(
            output_path=result.output_path,
            engine=self.name,
            width=result.width,
            height=result.height,
            inference_s=time.perf_counter() - started,
            instance=self.instance,
            metadata=result.metadata,
        )

    async def _process(
        self, job: EngineJob, token: CancelToken, progress: ProgressCallback
    ) -> EngineResult:
        """Produce the output; ``engine``, ``inference_s`` and ``instance`` are filled by
        ``run``."""
        raise NotImplementedError


def output_path_for(job: EngineJob) -> Path:
    """Where a job's PNG result goes: ``<output_dir>/<job_id>.png``."""
    return job.output_dir / f"{job.job_id}.png"
