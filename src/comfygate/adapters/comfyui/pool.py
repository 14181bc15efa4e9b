"""ComfyUI instances and the routing between them.

One running prompt per instance (ComfyUI runs one prompt at a time anyway; queueing
in comfygate keeps timeouts honest and lets a job go to whichever instance frees up
first). Instances are shared: with ``COMFYGATE_COMFYUI_URLS`` every capability uses
the same ones, so "busy" is per instance, not per capability. A job holds its instance
through a ``Lease``: only that lease gives the instance back, so a health check that
fails under a running job takes the instance out without freeing the job's slot.
Least busy wins: a free instance with the shortest server queue (other clients may use
it too), then the one that has started fewest jobs. An instance that fails is taken out
and probed back in with exponential backoff; ``activate`` (health check, pack check,
warm-up) runs before it takes jobs again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from comfygate.adapters.comfyui.client import ComfyUIClient
from comfygate.domain.errors import WorkerUnavailableError

MIB = 1024 * 1024
log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class InstanceConfig:
    """Where an instance is and how to talk to it."""

    url: str
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass
class Instance:
    """One ComfyUI server as the pool sees it."""

    config: InstanceConfig
    client: ComfyUIClient
    serves: frozenset[str]
    """Capabilities configured for it."""
    ready: set[str] = field(default_factory=set)
    """Capabilities whose pack checked out (and warmed up) on it."""
    up: bool = False
    lease: Lease | None = None
    """The job holding it, if one does."""
    jobs_started: int = 0
    server_queue: int = 0
    devices: list[dict[str, Any]] = field(default_factory=list)
    last_error: str | None = None
    failures: int = 0
    next_probe_at: float = 0.0
    checked_at: float = 0.0
    cold_start_s: dict[str, float] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.config.url

    @property
    def busy(self) -> bool:
        return self.lease is not None

    def status(self) -> dict[str, Any]:
        """What ``comfygate workers status`` shows for this instance."""
        return {
            "url": self.url,
            "up": self.up,
            "running": 1 if self.busy else 0,
            "queue": self.server_queue,
            "capabilities": sorted(self.ready),
            "serves": sorted(self.serves),
            "devices": self.devices,
            "jobs_started": self.jobs_started,
            "cold_start_s": dict(self.cold_start_s),
            "last_error": self.last_error,
        }


def devices_from_stats(stats: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``/system_stats`` devices with VRAM in MB."""
    out = []
    for dev in stats.get("devices", []) or []:
        if isinstance(dev, Mapping):
            out.append(
                {
                    "name": str(dev.get("name", "?")),
                    "type": str(dev.get("type", "?")),
                    "vram_total_mb": int(dev.get("vram_total", 0) or 0) // MIB,
                    "vram_free_mb": int(dev.get("vram_free", 0) or 0) // MIB,
                }
            )
    return out


@dataclass(frozen=True, eq=False, slots=True)
class Lease:
    """One job's hold on ``instance``, from ``acquire`` until released or marked down."""

    instance: Instance


Activate = Callable[[Instance], Awaitable[None]]


class WorkerPool:
    """Instances by URL, with acquire/release, failure marking and background probing."""

    def __init__(
        self,
        instances: Iterable[Instance],
        *,
        activate: Activate,
        probe_interval_s: float = 5.0,
        max_backoff_s: float = 60.0,
        health_interval_s: float = 30.0,
    ) -> None:
        self.instances = {i.url: i for i in instances}
        self._activate = activate
        self._probe_interval_s = probe_interval_s
        self._max_backoff_s = max_backoff_s
        self._health_interval_s = health_interval_s
        self._changed = asyncio.Condition()
        self.log_changes = True
        """Log instances going down and coming back (off for ``workers status``, which
        shows them itself and whose stdout is JSON)."""
        self._prober: asyncio.Task[None] | None = None

    def serving(self, capability: str) -> list[Instance]:
        return [i for i in self.instances.values() if capability in i.serves]

    def ready_capabilities(self) -> frozenset[str]:
        return frozenset(c for i in self.instances.values() if i.up for c in i.ready)

    async def acquire(
        self, capability: str, *, exclude: Iterable[str] = (), timeout_s: float
    ) -> Lease:
        """A lease on a free, ready instance for ``capability`` (waits while all are busy).

        Raises ``WorkerUnavailableError`` at once if none is up and ready, or after
        ``timeout_s`` of all being busy.
        """
        skip = set(exclude)
        try:
            async with asyncio.timeout(timeout_s), self._changed:
                return await self._wait_for_free(capability, skip)
        except TimeoutError:
            raise WorkerUnavailableError(
                f"every ComfyUI instance for {capability} stayed busy for {timeout_s:g} s",
                capability=capability,
            ) from None

    async def _wait_for_free(self, capability: str, skip: set[str]) -> Lease:
        while True:
            ready = [
                i
                for i in self.serving(capability)
                if i.up and capability in i.ready and i.url not in skip
            ]
            if not ready:
                raise WorkerUnavailableError(
                    f"no ComfyUI instance is up for {capability}", capability=capability
                )
            free = [i for i in ready if not i.busy]
            if free:
                chosen = min(free, key=lambda i: (i.server_queue, i.jobs_started))
                chosen.lease = Lease(chosen)
                chosen.jobs_started += 1
                return chosen.lease
            await self._changed.wait()

    async def release(self, lease: Lease) -> None:
        """Give ``lease``'s instance back (a no-op for a lease that no longer holds it)."""
        async with self._changed:
            if lease.instance.lease is lease:
                lease.instance.lease = None
            self._changed.notify_all()

    async def mark_down(
        self, instance: Instance, error: str, *, lease: Lease | None = None
    ) -> None:
        """Take ``instance`` out until a probe brings it back.

        Frees the instance only for its holder's ``lease``: a health check or probe
        failing while a job runs there leaves the job's slot taken. Logs a warning when
        the instance goes down (it was up, or had not failed yet), not for each failed
        probe after that.
        """
        async with self._changed:
            if lease is not None and instance.lease is lease:
                instance.lease = None
            if instance.failures == 0 and self.log_changes:  # 0 again once a probe passes
                log.warning("comfyui_instance_down", url=instance.url, reason=error)
            instance.up = False
            instance.last_error = error
            instance.failures += 1
            backoff = min(
                self._probe_interval_s * 2 ** (instance.failures - 1), self._max_backoff_s
            )
            instance.next_probe_at = time.monotonic() + backoff
            self._changed.notify_all()

    async def probe(self, instance: Instance) -> bool:
        """Bring ``instance`` up via ``activate``; on failure schedule the next probe.

        Whatever ``activate`` raises (a warm-up timing out, an answer we cannot read)
        takes only this instance out: it never reaches the caller.
        """
        try:
            await self._activate(instance)
        except Exception as exc:  # one instance's failure, whatever it is
            await self.mark_down(instance, _describe(exc))
            return False
        async with self._changed:
            if instance.failures and self.log_changes:
                log.info("comfyui_instance_up", url=instance.url, after_failures=instance.failures)
            instance.up, instance.failures, instance.checked_at = True, 0, time.monotonic()
            self._changed.notify_all()
        return True

    async def refresh(self, instance: Instance) -> None:
        """Health check of an up instance: VRAM and queue; a failure takes it out."""
        try:
            stats = await instance.client.system_stats()
            instance.server_queue = await instance.client.queue_remaining()
        except WorkerUnavailableError as exc:
            await self.mark_down(instance, str(exc))
            return
        instance.devices = devices_from_stats(stats)
        instance.checked_at = time.monotonic()

    async def tick(self) -> None:
        """One round of probing: down instances due for a probe, idle up ones due a check.

        A down instance a job still holds waits for the job to give it back: a warm-up
        there would be a second prompt on it.
        """
        now = time.monotonic()
        jobs: list[Awaitable[object]] = []
        for inst in self.instances.values():
            if not inst.up and not inst.busy and now >= inst.next_probe_at:
                jobs.append(self.probe(inst))
            elif inst.up and not inst.busy and now - inst.checked_at >= self._health_interval_s:
                jobs.append(self.refresh(inst))
        for outcome in await asyncio.gather(*jobs, return_exceptions=True):
            if isinstance(outcome, Exception):  # keep probing whatever one probe did
                log.warning("comfyui_probe_failed", error=repr(outcome))

    def start_probing(self) -> None:
        if self._prober is None:
            self._prober = asyncio.create_task(self._probe_forever(), name="comfyui-prober")

    async def _probe_forever(self) -> None:
        while True:
            await asyncio.sleep(self._probe_interval_s)
            await self.tick()

    async def close(self) -> None:
        if self._prober is not None:
            self._prober.cancel()
            await asyncio.gather(self._prober, return_exceptions=True)
            self._prober = None
        await asyncio.gather(*(i.client.aclose() for i in self.instances.values()))

    def status(self) -> list[dict[str, Any]]:
        """Per instance: up/down, running, queue, VRAM, last error."""
        return [i.status() for i in self.instances.values()]


def _describe(exc: Exception) -> str:
    """A ``last_error`` for ``exc``: an unavailable instance says enough, others get their type."""
    if isinstance(exc, WorkerUnavailableError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
