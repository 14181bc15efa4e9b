"""Several gateways on one database, on every backend: a running job is held by its
gateway's lease, taken over only once the lease runs out, run once whichever gateway
starts it, canceled from any gateway, and charged once.

Two containers in one process stand for two gateways (each its own ``instance_id``
and engine, one data dir on shared storage, as the README asks); they share a
``FakeClock``, so a lease runs out when the test moves the clock, not after a wait.
"""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest

from comfygate.adapters.images import receive_upload_sync
from comfygate.domain.jobs import JobState
from comfygate.services.engines import EngineResult
from comfygate.services.identity_types import Principal, Role
from comfygate.services.job_ports import Job
from comfygate.services.jobs import SubmitRequest
from tests.fakes import FakeClock
from tests.jobs_support import CAPABILITY, FakeEngine, build, png_bytes

GRANT, PRICE, LEASE_S = 1000, 10, 3.0


class Gateway:
    def __init__(
        self, url: str, data_dir: Path, name: str, clock: FakeClock, lease_s: float = LEASE_S
    ) -> None:
        self.engine = FakeEngine()
        self.c = build(url, data_dir, clock=clock, engines=[self.engine], instance_id=name,
                       job_lease_s=lease_s)  # fmt: skip

    @property
    def dispatcher(self):  # type: ignore[no-untyped-def]
        return self.c.jobs.dispatcher


Pair = tuple[Gateway, Gateway, str, FakeClock]


@contextmanager
def two_gateways(
    url: str, dir_a: Path, dir_b: Path, *, lease_a_s: float = LEASE_S
) -> Iterator[Pair]:
    """Gateways A and B on one database, with an account granted ``GRANT`` tokens."""
    clock = FakeClock()
    a = Gateway(url, dir_a, "gw-a", clock, lease_s=lease_a_s)
    b = Gateway(url, dir_b, "gw-b", clock)
    try:
        account_id = a.c.ledger.open_account(name="shared")
        a.c.ledger.grant(account_id=account_id, amount=GRANT, source="promotion",
                         idempotency_key="g")  # fmt: skip
        yield a, b, account_id, clock
    finally:
        a.c.close()
        b.c.close()


@pytest.fixture
def gateways(database_url: str, tmp_path: Path) -> Iterator[Pair]:
    with two_gateways(database_url, tmp_path / "shared", tmp_path / "shared") as pair:
        yield pair


def submit(gateway: Gateway, account_id: str, seed: int) -> Job:
    container = gateway.c
    upload = receive_upload_sync(
        io.BytesIO(png_bytes(seed=seed)), dest_dir=container.jobs.upload_dir, max_bytes=10**6
    )
    principal = Principal(account_id, "user_x", Role.ADMIN, "key_x")
    request = SubmitRequest(CAPABILITY)
    return container.jobs.submission.submit(principal=principal, upload=upload, request=request).job


async def until(predicate, timeout_s: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await asyncio.to_thread(predicate):
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


def state(gateway: Gateway, job_id: str) -> JobState:
    job = gateway.c.jobs.store.get(job_id)
    assert job is not None
    return job.state


def money(gateway: Gateway, account_id: str, succeeded: int) -> None:
    balance = gateway.c.accounts.balance(account_id=account_id)
    assert (balance.available, balance.held) == (GRANT - PRICE * succeeded, 0)
    assert gateway.c.accounts.reconcile().ok


def test_queued_jobs_run_once_whichever_gateway_starts_them(
    gateways: tuple[Gateway, Gateway, str, FakeClock],
) -> None:
    """Both gateways find the same 12 queued jobs at their start and race for them:
    each runs on one of them, once."""
    a, b, account_id, _ = gateways
    jobs = [submit(a, account_id, seed) for seed in range(12)]

    async def scenario() -> None:
        await asyncio.gather(a.dispatcher.start(), b.dispatcher.start())
        try:
            await until(lambda: not a.c.jobs.store.in_states([JobState.QUEUED, JobState.RUNNING]))
            await until(lambda: not a.c.jobs.store.unsettled())
        finally:
            await asyncio.gather(a.dispatcher.stop(), b.dispatcher.stop())

    asyncio.run(scenario())
    ran = a.engine.started + b.engine.started
    assert sorted(ran) == sorted(j.id for j in jobs)  # every job, none twice
    assert {state(a, j.id) for j in jobs} == {JobState.SUCCEEDED}
    money(a, account_id, succeeded=12)


def test_a_job_held_by_a_live_gateway_is_left_to_it(
    gateways: tuple[Gateway, Gateway, str, FakeClock],
) -> None:
    """Gateway B starting (or sweeping) while A runs a job: B once took every running
    job it found for a dead process's, and ran A's job a second time."""
    a, b, account_id, _ = gateways
    job = submit(a, account_id, 1)
    a.engine.default = "hang"

    async def scenario() -> None:
        await a.dispatcher.start()
        a.dispatcher.enqueue(job)
        await until(lambda: a.engine.started == [job.id])
        await b.dispatcher.start()
        await b.dispatcher.recover()
        assert b.engine.started == [] and state(a, job.id) is JobState.RUNNING
        a.engine.release(job.id)
        await until(lambda: state(a, job.id) is JobState.SUCCEEDED)
        await asyncio.gather(a.dispatcher.stop(), b.dispatcher.stop())

    asyncio.run(scenario())
    done = a.c.jobs.store.get(job.id)
    assert done is not None and (done.runner, done.attempts) == ("gw-a", 1)
    money(a, account_id, succeeded=1)


def test_a_job_whose_gateway_died_is_taken_over_once_its_lease_runs_out(
    gateways: tuple[Gateway, Gateway, str, FakeClock],
) -> None:
    """A starts the job and dies (its lease is never renewed). B leaves it while the
    lease runs, then retries it; A, back from the dead with its result while B runs
    it, records nothing (the job runs under another attempt: once, A's result took
    the job from under B's run)."""
    a, b, account_id, clock = gateways
    job = submit(a, account_id, 2)
    started_by_a = a.c.jobs.lifecycle.start(job)
    assert started_by_a is not None and started_by_a.runner == "gw-a"
    b.engine.default = "hang"
    output = a.c.settings.data_dir / "late.png"
    output.write_bytes(png_bytes())
    late = EngineResult(output_path=output, engine="fake", width=64, height=48, inference_s=9.0)

    async def scenario() -> None:
        await b.dispatcher.start()
        assert b.engine.started == []
        clock.current += timedelta(seconds=LEASE_S + 1)
        await b.dispatcher.recover()  # what B's sweep does every lease
        await until(lambda: b.engine.started == [job.id])
        assert await asyncio.to_thread(a.c.jobs.lifecycle.succeed, started_by_a, late) is None
        b.engine.release(job.id)
        await until(lambda: state(b, job.id) is JobState.SUCCEEDED)
        await b.dispatcher.stop()

    asyncio.run(scenario())
    done = b.c.jobs.store.get(job.id)
    assert done is not None and (done.runner, done.attempts, done.inference_s) == ("gw-b", 2, 0.01)
    money(a, account_id, succeeded=1)


def test_a_job_canceled_through_another_gateway_stops_where_it_runs(
    gateways: tuple[Gateway, Gateway, str, FakeClock],
) -> None:
    """The job runs on one gateway and is canceled through the other (which once said
    it could not be canceled): the hold goes back at once, and the gateway running it
    stops the run at its next lease renewal."""
    a, b, account_id, _ = gateways
    job = submit(a, account_id, 3)
    a.engine.default = b.engine.default = "hang"

    async def scenario() -> tuple[Gateway, Job]:
        await asyncio.gather(a.dispatcher.start(), b.dispatcher.start())  # either takes it
        await until(lambda: a.engine.started or b.engine.started)
        runner, other = (a, b) if a.engine.started else (b, a)
        running = await asyncio.to_thread(other.c.jobs.store.get, job.id)
        assert running is not None and running.state is JobState.RUNNING
        canceled = await other.dispatcher.cancel(running)
        await until(lambda: runner.engine.cancelled == [job.id])  # within a renewal (1 s)
        await asyncio.gather(a.dispatcher.stop(), b.dispatcher.stop())
        return runner, canceled

    runner, canceled = asyncio.run(scenario())
    assert canceled.state is JobState.CANCELED and state(a, job.id) is JobState.CANCELED
    assert runner.engine.started == [job.id]
    money(a, account_id, succeeded=0)


def test_a_cancel_while_this_gateway_loses_the_start_to_another_still_cancels(
    gateways: tuple[Gateway, Gateway, str, FakeClock],
) -> None:
    """B is starting the job when A starts it first, and the customer cancels through
    B meanwhile: B's cancel waited for its own start (which found the job taken) and
    answered the job still running, canceled nowhere."""
    a, b, account_id, _ = gateways
    job = submit(a, account_id, 4)
    gate = threading.Event()
    real_start = b.c.jobs.lifecycle.start

    def slow_start(queued: Job) -> Job | None:
        gate.wait(10)
        return real_start(queued)

    b.c.jobs.lifecycle.start = slow_start  # type: ignore[method-assign]

    async def scenario() -> Job:
        await b.dispatcher.start()
        await until(lambda: job.id in b.dispatcher._running)  # B's start is on its way
        assert await asyncio.to_thread(a.c.jobs.lifecycle.start, job) is not None  # A wins
        cancel = asyncio.ensure_future(b.dispatcher.cancel(job))
        await asyncio.sleep(0.05)
        gate.set()
        canceled = await cancel
        await b.dispatcher.stop()
        return canceled

    canceled = asyncio.run(scenario())
    assert canceled.state is JobState.CANCELED and state(a, job.id) is JobState.CANCELED
    assert b.engine.started == []
    money(a, account_id, succeeded=0)


def test_a_gateway_leaves_the_jobs_whose_input_it_cannot_read(
    database_url: str, tmp_path: Path
) -> None:
    """Gateways on data dirs of their own: B once started A's queued job and failed it
    for an image it could not read. It leaves it to A."""
    with two_gateways(database_url, tmp_path / "a", tmp_path / "b") as (a, b, account_id, _):
        job = submit(a, account_id, 5)

        async def scenario() -> None:
            await b.dispatcher.start()
            await b.dispatcher.recover()
            assert b.engine.started == [] and state(b, job.id) is JobState.QUEUED
            await a.dispatcher.start()
            await until(lambda: state(a, job.id) is JobState.SUCCEEDED)
            await asyncio.gather(a.dispatcher.stop(), b.dispatcher.stop())

        asyncio.run(scenario())
        assert a.engine.started == [job.id]
        money(a, account_id, succeeded=1)


def test_a_cancel_through_the_gateway_that_took_the_job_numbers_its_events_after_the_runners(
    gateways: tuple[Gateway, Gateway, str, FakeClock],
) -> None:
    """A numbered events from its own count (it wrote event 1, so its next was 2), and
    B's start had written 2: A's cancel failed to store (a 500), leaving the job
    canceled and unsettled."""
    a, b, account_id, _ = gateways
    job = submit(a, account_id, 6)
    b.engine.default = "hang"

    async def scenario() -> Job:
        await b.dispatcher.start()
        await until(lambda: b.engine.started == [job.id])
        running = await asyncio.to_thread(a.c.jobs.store.get, job.id)
        assert running is not None
        canceled = await a.dispatcher.cancel(running)
        await until(lambda: b.engine.cancelled == [job.id])
        await b.dispatcher.stop()
        return canceled

    canceled = asyncio.run(scenario())
    assert canceled.state is JobState.CANCELED and canceled.settled_at is not None
    events = a.c.jobs.store.events(job.id, after_seq=0)
    assert [(e.seq, e.kind) for e in events][:3] == [(1, "queued"), (2, "started"), (3, "canceled")]
    money(a, account_id, succeeded=0)


def test_a_gateway_back_from_trouble_leaves_a_job_taken_over(
    gateways: tuple[Gateway, Gateway, str, FakeClock],
) -> None:
    """A ran the job, lost it (its lease ran out), and B runs it now: A's repair of its
    own error once failed B's run (worker_lost)."""
    a, b, account_id, clock = gateways
    job = submit(a, account_id, 7)
    assert a.c.jobs.lifecycle.start(job) is not None  # A's, and then A is in trouble
    b.engine.default = "hang"

    async def scenario() -> None:
        clock.current += timedelta(seconds=LEASE_S + 1)
        await b.dispatcher.start()  # takes it over at its start
        await until(lambda: b.engine.started == [job.id])
        assert await asyncio.to_thread(a.dispatcher._put_right, job.id) is None
        assert state(b, job.id) is JobState.RUNNING
        b.engine.release(job.id)
        await until(lambda: state(b, job.id) is JobState.SUCCEEDED)
        await b.dispatcher.stop()

    asyncio.run(scenario())
    money(a, account_id, succeeded=1)


def test_a_gateway_stopping_leaves_a_run_taken_over_from_it(
    database_url: str, tmp_path: Path
) -> None:
    """A's run lost its lease (A stalled) and B runs the job now. A's shutdown once put
    B's run back in the queue, under an attempt B's result would then pass for."""
    shared = tmp_path / "shared"
    with two_gateways(database_url, shared, shared, lease_a_s=30.0) as pair:  # A: no renewal
        a, b, account_id, clock = pair
        job = submit(a, account_id, 8)
        a.engine.default = b.engine.default = "hang"

        async def scenario() -> None:
            await a.dispatcher.start()
            await until(lambda: a.engine.started == [job.id])
            clock.current += timedelta(seconds=31)
            await b.dispatcher.start()
            await until(lambda: b.engine.started == [job.id])
            # A's run reported progress, numbered after A's own events and not stored
            # yet: storing it would fail on B's numbers and hide what is tested here.
            a.c.jobs.events._unstored.clear()
            await a.dispatcher.stop()  # interrupts A's run: B's is not A's to requeue
            taken = await asyncio.to_thread(b.c.jobs.store.get, job.id)
            assert taken is not None
            assert (taken.state, taken.runner, taken.attempts) == (JobState.RUNNING, "gw-b", 2)
            b.engine.release(job.id)
            await until(lambda: state(b, job.id) is JobState.SUCCEEDED)
            await b.dispatcher.stop()

        asyncio.run(scenario())
        money(a, account_id, succeeded=1)
