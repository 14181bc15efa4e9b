"""``ComfyUIEngine``: the Engine port served by pools of ComfyUI instances.

``start`` probes every instance (``/system_stats``), checks each pack it serves against
``/object_info`` and runs one small warm-up job per pack, recording the cold start
(``cold_starts`` and the ``on_cold_start`` callback feed a metric; warm-ups are never
charged). ``run`` resolves the job's parameters against the pack, takes the least
busy instance (waiting at most the job's timeout for one to free up; the timeout then
counts from there, ``EngineJob.started``) and retries on another one when an instance
fails (``WorkerUnavailableError``); workflow failures and timeouts are not retried.
"""

from __future__ import annotations

import asyncio
import dataclasses
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import structlog
from PIL import Image

from comfygate.adapters.comfyui.client import ComfyUIClient
from comfygate.adapters.comfyui.packs import check_pack_online
from comfygate.adapters.comfyui.pool import (
    Instance,
    InstanceConfig,
    Lease,
    WorkerPool,
    devices_from_stats,
)
from comfygate.adapters.comfyui.runner import STOP_GRACE_S, PromptRunner
from comfygate.domain.errors import (
    UnknownCapabilityError,
    ValidationFailedError,
    WorkerUnavailableError,
    WorkflowError,
)
from comfygate.domain.ids import new_id
from comfygate.domain.workflows import WorkflowPack, resolve_params
from comfygate.services.engines import EngineJob, EngineResult, ProgressCallback

log = structlog.get_logger(__name__)
WARMUP_SIDE_PX = 64


@dataclasses.dataclass(frozen=True, slots=True)
class ColdStart:
    """One warm-up: how long the first job of ``capability`` took on ``instance``."""

    instance: str
    capability: str
    seconds: float


ColdStartCallback = Callable[[str, str, float], None]


class ComfyUIEngine:
    """Runs jobs on ComfyUI instances, per capability pool."""

    name = "comfyui"

    def __init__(
        self,
        *,
        packs: Mapping[str, WorkflowPack],
        pools: Mapping[str, Sequence[InstanceConfig]],
        timeout_s: float | None = None,
        max_attempts: int = 3,
        warm_up: bool = True,
        probe_interval_s: float = 5.0,
        request_timeout_s: float = 30.0,
        stop_grace_s: float = STOP_GRACE_S,
        on_cold_start: ColdStartCallback | None = None,
    ) -> None:
        unknown = sorted(set(pools) - set(packs))
        if unknown:
            errors = [f"pool {c!r} has no workflow pack" for c in unknown]
            raise ValidationFailedError("ComfyUI pools without a workflow pack", errors=errors)
        self._packs = dict(packs)
        self._timeout_s = timeout_s
        self._max_attempts = max(1, max_attempts)
        self._warm_up = warm_up
        self._stop_grace_s = stop_grace_s
        self._on_cold_start = on_cold_start
        self.cold_starts: list[ColdStart] = []
        self._running: dict[str, PromptRunner] = {}
        self._cleanups: set[asyncio.Task[None]] = set()
        configs: dict[str, InstanceConfig] = {}
        serves: dict[str, set[str]] = {}
        for capability, members in pools.items():
            for config in members:
                configs.setdefault(config.url, config)
                serves.setdefault(config.url, set()).add(capability)
        instances = [
            Instance(
                cfg,
                ComfyUIClient(cfg.url, headers=cfg.headers, request_timeout_s=request_timeout_s),
                serves=frozenset(serves[url]),
            )
            for url, cfg in configs.items()
        ]
        self._pool = WorkerPool(
            instances, activate=self._activate, probe_interval_s=probe_interval_s
        )

    # --- lifecycle -------------------------------------------------------------------

    def capabilities(self) -> frozenset[str]:
        return self._pool.ready_capabilities() & frozenset(self._packs)

    async def start(self) -> None:
        """Probe, check and warm every instance; keep probing the ones that are down.

        Never raises for an instance: one that fails its probe (even its warm-up) is
        down with its ``last_error`` and the prober brings it back later.
        """
        try:
            await asyncio.gather(*(self._pool.probe(i) for i in self._pool.instances.values()))
        finally:
            self._pool.start_probing()

    async def check(self) -> None:
        """Probe and check every instance once, without warm-up jobs or logs (for status,
        which shows each instance's state and last error itself)."""
        warm, self._warm_up = self._warm_up, False
        self._pool.log_changes = False
        try:
            await asyncio.gather(*(self._pool.probe(i) for i in self._pool.instances.values()))
        finally:
            self._warm_up = warm
            self._pool.log_changes = True

    async def probe_down(self) -> None:
        """Probe every down instance now, whatever its backoff says."""
        down = [i for i in self._pool.instances.values() if not i.up]
        await asyncio.gather(*(self._pool.probe(i) for i in down))

    async def wait_cleanups(self, timeout_s: float = 10.0) -> None:
        """Wait for the background cleanups (history delete, file truncation) of past jobs."""
        if self._cleanups:
            await asyncio.wait(set(self._cleanups), timeout=timeout_s)

    async def close(self) -> None:
        await self.wait_cleanups()
        await self._pool.close()

    def status(self) -> list[dict[str, object]]:
        """Per instance: url, up, running, queue, capabilities, devices (VRAM MB), last_error."""
        return self._pool.status()

    async def _activate(self, inst: Instance) -> None:
        """Health check, pack checks and warm-ups; raises if the instance can serve nothing."""
        stats = await inst.client.system_stats()
        inst.devices = devices_from_stats(stats)
        inst.server_queue = await inst.client.queue_remaining()
        ready: set[str] = set()
        problems: list[str] = []
        for capability in sorted(inst.serves):
            pack = self._packs[capability]
            errors = await check_pack_online(inst.client, pack)
            if not errors and self._warm_up:
                try:
                    await self._warm(inst, pack)
                except WorkflowError as exc:
                    errors = [f"{pack.name}: warm-up failed: {exc}"]
            problems.extend(errors)
            if not errors:
                ready.add(capability)
        inst.ready, inst.last_error = ready, "; ".join(problems) or None
        if not ready:
            raise WorkerUnavailableError(f"{inst.url} can run none of its packs: {inst.last_error}")

    async def _warm(self, inst: Instance, pack: WorkflowPack) -> None:
        with tempfile.TemporaryDirectory(prefix="comfygate-warmup-") as tmp:
            source = Path(tmp) / "warmup.png"
            Image.new("RGB", (WARMUP_SIDE_PX, WARMUP_SIDE_PX), (128, 128, 128)).save(source)
            job = EngineJob(
                job_id=new_id("warmup"),
                capability=pack.capability,
                input_path=source,
                output_dir=Path(tmp) / "out",
                timeout_s=self._timeout_s or 300.0,
            )
            runner = PromptRunner(
                inst.client,
                pack,
                job,
                resolve_params(pack, {}),
                progress=_ignore_progress,
                timeout_s=job.timeout_s,
                stop_grace_s=self._stop_grace_s,
            )
            started = time.perf_counter()
            try:
                await runner.run()
            finally:
                await runner.cleanup()
        seconds = time.perf_counter() - started
        inst.cold_start_s[pack.capability] = round(seconds, 3)
        self.cold_starts.append(ColdStart(inst.url, pack.capability, seconds))
        log.info(
            "comfyui_cold_start", instance=inst.url, capability=pack.capability, seconds=seconds
        )
        if self._on_cold_start is not None:
            self._on_cold_start(inst.url, pack.capability, seconds)

    # --- jobs ----------------------------------------------------------------------------

    async def run(self, job: EngineJob, *, progress: ProgressCallback) -> EngineResult:
        pack = self._packs.get(job.capability)
        if pack is None or not self._pool.serving(job.capability):
            raise UnknownCapabilityError(
                f"no ComfyUI pool for {job.capability!r}", capability=job.capability
            )
        params = resolve_params(pack, job.params)
        timeout_s = min(job.timeout_s, self._timeout_s) if self._timeout_s else job.timeout_s
        progress = _monotonic(progress)  # a retry on another instance must not go backwards
        tried: list[str] = []
        last: WorkerUnavailableError | None = None
        for _ in range(self._max_attempts):
            try:
                lease = await self._pool.acquire(job.capability, exclude=tried, timeout_s=timeout_s)
            except WorkerUnavailableError:
                if last is not None:
                    raise last from None
                raise
            if not tried and job.started is not None:
                job.started()  # the timeout counts from here, not from the wait
            url = lease.instance.url
            tried.append(url)
            try:
                result = await self._run_on(lease, pack, job, params, progress, timeout_s)
            except WorkerUnavailableError as exc:
                last = exc
                log.warning(
                    "comfyui_instance_failed", instance=url, job_id=job.job_id, error=str(exc)
                )
                continue
            meta = {**result.metadata, "attempts": len(tried), "tried": list(tried)}
            return dataclasses.replace(result, metadata=meta)
        assert last is not None
        raise last

    async def _run_on(
        self,
        lease: Lease,
        pack: WorkflowPack,
        job: EngineJob,
        params: Mapping[str, object],
        progress: ProgressCallback,
        timeout_s: float,
    ) -> EngineResult:
        runner = PromptRunner(
            lease.instance.client,
            pack,
            job,
            params,
            progress=progress,
            timeout_s=timeout_s,
            stop_grace_s=self._stop_grace_s,
        )
        self._running[job.job_id] = runner
        failure: str | None = None
        try:
            return await runner.run()
        except WorkerUnavailableError as exc:
            failure = str(exc)
            raise
        finally:
            # Whatever ended the attempt (a timeout, the dispatcher's guard or a customer
            # cancelling our task), an instance that may still run our prompt is not fit
            # for the next job. Shielded: a second cancel must not skip this.
            if failure is None and not runner.stopped:
                failure = f"prompt {runner.prompt_id} did not stop after cancel"
            self._running.pop(job.job_id, None)
            await asyncio.shield(self._give_back(lease, failure))
            task = asyncio.create_task(runner.cleanup())
            self._cleanups.add(task)
            task.add_done_callback(self._cleanups.discard)

    async def _give_back(self, lease: Lease, failure: str | None) -> None:
        """Release ``lease`` after a job, or take its instance out when ``failure`` says why."""
        if failure is None:
            await self._pool.release(lease)
        else:
            await self._pool.mark_down(lease.instance, failure, lease=lease)

    async def cancel(self, job_id: str) -> None:
        runner = self._running.get(job_id)
        if runner is not None:
            await runner.cancel("cancelled by user")


async def _ignore_progress(fraction: float, message: str) -> None:
    return None


def _monotonic(progress: ProgressCallback) -> ProgressCallback:
    best = 0.0

    async def report(fraction: float, message: str) -> None:
        nonlocal best
        best = max(best, fraction)
        await progress(best, message)

    return report
