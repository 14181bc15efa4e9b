"""The pool of ComfyUI instances shared by jobs and the background prober.

Jobs hold instances through leases; the prober's health checks and probes run beside
them against the same server (the fake here), and must never hand a job's instance to
a second job.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog.testing

from comfygate.adapters.comfyui.client import ComfyUIClient
from comfygate.adapters.comfyui.pool import Instance, InstanceConfig, WorkerPool
from comfygate.adapters.storage.local import LocalResultStorage
from comfygate.domain.errors import WorkerUnavailableError
from comfygate.domain.jobs import TIMEOUT_GRACE_S
from comfygate.services import engine_run
from comfygate.services.events import JobEvents
from tests.comfyui_fake import FakeComfyUI
from tests.comfyui_fake.helpers import dispatcher_job, make_engine
from tests.fakes import FakeClock
from tests.unit.test_job_events import FakeEventStore

CAPABILITY = "colorize.person"


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeComfyUI]:
    with FakeComfyUI(tmp_path / "fake") as server:
        yield server


async def _health_checked(inst: Instance) -> None:
    """An ``activate`` that only asks the server for its stats (no packs, no warm-up)."""
    await inst.client.system_stats()
    inst.ready = set(inst.serves)


def _pool(url: str) -> tuple[WorkerPool, Instance]:
    inst = Instance(InstanceConfig(url), ComfyUIClient(url), serves=frozenset({CAPABILITY}))
    # Every tick is due: a health check for an idle up instance, a probe for a down one.
    pool = WorkerPool([inst], activate=_health_checked, probe_interval_s=0.0, health_interval_s=0.0)
    return pool, inst


def _stats_calls(fake: FakeComfyUI) -> int:
    return fake.calls.count(("GET", "/system_stats"))


def test_a_health_check_failing_under_a_running_job_keeps_the_job_s_slot(
    fake: FakeComfyUI,
) -> None:
    async def scenario() -> None:
        pool, inst = _pool(fake.url)
        try:
            assert await pool.probe(inst)
            fake.behaviour.stats_status = 503
            checks = _stats_calls(fake)
            tick = asyncio.ensure_future(pool.tick())
            await asyncio.sleep(0)  # the tick picks its health check: the instance is idle
            first = await pool.acquire(CAPABILITY, timeout_s=1.0)  # a job takes it meanwhile
            await tick
            assert _stats_calls(fake) == checks + 1 and not inst.up  # the check failed
            assert inst.busy  # ... and the job still holds its instance

            fake.behaviour.stats_status = None
            await pool.tick()  # no probe (no warm-up) beside the running job
            assert _stats_calls(fake) == checks + 1 and not inst.up
            assert await pool.probe(inst)  # an operator's probe brings it back up ...
            with pytest.raises(WorkerUnavailableError, match="stayed busy"):
                await pool.acquire(CAPABILITY, timeout_s=0.2)  # ... not to a second job

            await pool.release(first)
            second = await pool.acquire(CAPABILITY, timeout_s=1.0)
            await pool.release(first)  # a stale lease frees nothing
            assert inst.busy and inst.lease is second
            await pool.mark_down(inst, "a probe failed")  # nor does a failure without it
            assert inst.busy
            await pool.mark_down(inst, "the job's prompt did not stop", lease=second)
            assert not inst.busy and not inst.up
        finally:
            await pool.close()

    asyncio.run(scenario())


def test_an_instance_going_down_is_logged_once_with_its_url_and_reason(
    fake: FakeComfyUI,
) -> None:
    """Never up, then up, then down again: one warning per fall, none per failed probe."""

    async def scenario() -> list[dict[str, object]]:
        pool, inst = _pool(fake.url)
        try:
            with structlog.testing.capture_logs() as logs:
                fake.behaviour.stats_status = 503
                assert not await pool.probe(inst)  # the first probe at start
                for _ in range(3):
                    await pool.tick()
                assert _stats_calls(fake) == 4 and not inst.up
                fake.behaviour.stats_status = None
                await pool.tick()
                assert inst.up
                fake.behaviour.stats_status = 503
                for _ in range(3):  # a health check takes it out, probes fail after
                    await pool.tick()
                assert not inst.up
            return logs
        finally:
            await pool.close()

    logs = asyncio.run(scenario())
    events = [(e["event"], e["log_level"], e["url"]) for e in logs]
    assert events == [
        ("comfyui_instance_down", "warning", fake.url),
        ("comfyui_instance_up", "info", fake.url),
        ("comfyui_instance_down", "warning", fake.url),
    ]
    assert "503" in str(logs[0]["reason"])


def test_a_job_waiting_for_the_instance_gets_its_whole_timeout_once_it_has_it(
    fake: FakeComfyUI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dispatcher concurrency 2, one instance: the second job waits out the first, and
    the guard must not count that wait against its own run (scaled: 10 s grace -> 1 s)."""
    monkeypatch.setattr(engine_run, "TIMEOUT_GRACE_S", TIMEOUT_GRACE_S * 0.1)
    storage = LocalResultStorage(tmp_path / "data")
    events = JobEvents(store=FakeEventStore(), clock=FakeClock())  # type: ignore[arg-type]
    timeout_s = 4.0

    async def scenario() -> None:
        engine = make_engine([fake.url], timeout_s=timeout_s)
        await engine.start()
        # Each run fits its timeout with room to spare; both together do not fit one
        # timeout plus the guard's grace.
        fake.behaviour.job_s = 2.5
        try:
            results = await asyncio.gather(
                *(
                    engine_run.run_on_engine(
                        engine,
                        dispatcher_job(storage),
                        storage=storage,
                        events=events,
                        timeout_s=timeout_s,
                        progress_step=0.05,
                    )
                    for _ in range(2)
                )
            )
            assert [r.instance for r in results] == [fake.url, fake.url]
            assert fake.max_in_queue == 1  # one after the other, never both on the server
        finally:
            await engine.close()

    asyncio.run(scenario())
