"""Dispatch over HTTP: cancel (queued and running), retries, engine errors, VIP plans
(nothing taken, list price recorded, fair-use limit) and plan-tier priority."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from comfygate import bootstrap
from comfygate.services import dispatcher
from tests.jobs_support import (
    Customer,
    FakeEngine,
    build,
    finished,
    new_customer,
    png_bytes,
    run,
    running_app,
    submit,
)


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def container(tmp_path: Path, engine: FakeEngine) -> Iterator[bootstrap.Container]:
    built = build(
        f"sqlite:///{tmp_path / 'db.sqlite'}",
        tmp_path / "data",
        engines=[engine],
        job_concurrency=1,
    )
    yield built
    built.close()


async def _until(predicate: Any) -> None:
    """Yield to the event loop until ``predicate()`` holds (bounded by the test timeout)."""
    while not predicate():
        await asyncio.sleep(0.01)


def _failing_first(real: Callable[..., Any], failures: list[Exception]) -> Callable[..., Any]:
    """``real``, raising each of ``failures`` first (the database, away for a moment)."""

    def call(*args: Any, **kwargs: Any) -> Any:
        if failures:
            raise failures.pop()
        return real(*args, **kwargs)

    return call


async def _put_right(
    container: bootstrap.Container, client: httpx.AsyncClient, customer: Customer, job_id: str
) -> dict[str, Any]:
    """The job once it finishes (orphaned, it never would) and its dispatcher errors
    are forgotten."""
    done = await asyncio.wait_for(finished(client, customer, job_id), 30)
    await asyncio.wait_for(_until(lambda: not container.jobs.dispatcher._troubles), 30)
    return done


def _one_job_put_right(container: bootstrap.Container, customer: Customer) -> dict[str, Any]:
    """Submit one job: it, once finished and its dispatcher errors forgotten."""

    async def scenario() -> dict[str, Any]:
        async with running_app(container) as client:
            job = (await submit(client, customer, png_bytes())).json()
            return await _put_right(container, client, customer, job["id"])

    return run(scenario)


def _balance(container: bootstrap.Container, customer: Customer) -> tuple[int, int]:
    view = container.accounts.balance(account_id=customer.account_id)
    return view.available, view.held


def test_cancel_queued_and_running_jobs_releases_their_holds(
    container: bootstrap.Container, engine: FakeEngine
) -> None:
    customer = new_customer(container, tokens=100)
    engine.default = "hang"

    async def scenario() -> list[Any]:
        async with running_app(container) as client:
            running = (await submit(client, customer, png_bytes(seed=1))).json()
            queued = (await submit(client, customer, png_bytes(seed=2))).json()
            await _until(lambda: running["id"] in engine.started)
            held = _balance(container, customer)
            h = customer.headers
            cancel_q = await client.post(f"/v1/jobs/{queued['id']}/cancel", headers=h)
            cancel_r = await client.post(f"/v1/jobs/{running['id']}/cancel", headers=h)
            again = await client.post(f"/v1/jobs/{running['id']}/cancel", headers=h)
            return [held, cancel_q, cancel_r, again]

    held, cancel_q, cancel_r, again = run(scenario)
    assert held == (80, 20)
    assert cancel_q.status_code == 200 and cancel_q.json()["state"] == "canceled"
    assert cancel_r.status_code == 200 and cancel_r.json()["state"] == "canceled"
    assert cancel_r.json()["tokens_charged"] == 0
    assert cancel_q.json()["id"] not in engine.started
    assert cancel_r.json()["id"] in engine.cancelled
    assert again.status_code == 409 and again.json()["code"] == "invalid_job_state"
    assert _balance(container, customer) == (100, 0)
    assert container.accounts.reconcile().ok


def test_retryable_error_is_retried_once_then_fails_released(
    container: bootstrap.Container, engine: FakeEngine
) -> None:
    customer = new_customer(container, tokens=100)
    engine.default = "retryable"

    async def scenario() -> dict[str, Any]:
        async with running_app(container) as client:
            job = (await submit(client, customer, png_bytes())).json()
            return await finished(client, customer, job["id"])

    job = run(scenario)
    assert job["state"] == "failed" and job["attempts"] == 2
    assert job["failure"]["code"] == "worker_unavailable"
    assert engine.started.count(job["id"]) == 2
    assert _balance(container, customer) == (100, 0)


def test_a_cancel_while_a_failed_attempt_goes_back_to_the_queue_is_not_lost(
    container: bootstrap.Container, engine: FakeEngine
) -> None:
    """The cancel arrives while a retryable failure is being queued again. It once
    answered ``queued``, and the retry then ran and was charged."""
    customer = new_customer(container, tokens=100)
    engine.default = "retryable"
    lifecycle = container.jobs.lifecycle
    requeue = lifecycle.requeue
    requeuing = threading.Event()

    def requeue_once_canceled(job: Any, **kwargs: Any) -> Any:
        requeuing.set()
        engine.default = "succeed"  # the retry would succeed, and be charged
        deadline = time.monotonic() + 10
        while job.id not in engine.cancelled and time.monotonic() < deadline:
            time.sleep(0.005)  # the cancel has reached the dispatcher
        return requeue(job, **kwargs)

    lifecycle.requeue = requeue_once_canceled  # type: ignore[method-assign]

    async def scenario() -> tuple[httpx.Response, dict[str, Any]]:
        async with running_app(container) as client:
            job = (await submit(client, customer, png_bytes())).json()
            await _until(requeuing.is_set)
            cancel = await client.post(f"/v1/jobs/{job['id']}/cancel", headers=customer.headers)
            return cancel, await finished(client, customer, job["id"])

    cancel, job = run(scenario)
    assert cancel.status_code == 200 and cancel.json()["state"] == "canceled"
    assert job["state"] == "canceled" and job["tokens_charged"] == 0
    assert engine.started.count(job["id"]) == 1
    assert _balance(container, customer) == (100, 0)
    assert container.accounts.reconcile().ok


def test_a_cancel_that_read_the_job_running_finds_it_back_in_the_queue(
    container: bootstrap.Container, engine: FakeEngine
) -> None:
    """The caller read the job ``running``; by the cancel it had failed and waits in the
    queue for its retry. It is canceled there (it once got "only queued or running
    jobs can be canceled")."""
    customer = new_customer(container, tokens=100)
    engine.default = "retryable"
    lifecycle = container.jobs.lifecycle
    requeue = lifecycle.requeue
    requeuing, other_queued = threading.Event(), threading.Event()
    seen_running: list[Any] = []

    def requeue_behind_another(job: Any, **kwargs: Any) -> Any:
        seen_running.append(job)
        engine.default = "hang"  # the other job keeps the one slot
        requeuing.set()
        other_queued.wait(10)
        return requeue(job, **kwargs)

    lifecycle.requeue = requeue_behind_another  # type: ignore[method-assign]

    async def scenario() -> Any:
        async with running_app(container) as client:
            first = (await submit(client, customer, png_bytes(seed=1))).json()
            await _until(requeuing.is_set)
            other = (await submit(client, customer, png_bytes(seed=2))).json()
            other_queued.set()
            await _until(lambda: other["id"] in engine.started)
            (stale,) = seen_running
            assert stale.id == first["id"] and stale.state.value == "running"
            canceled = await container.jobs.dispatcher.cancel(stale)
            held = _balance(container, customer)
            await client.post(f"/v1/jobs/{other['id']}/cancel", headers=customer.headers)
            return canceled, held

    canceled, held = run(scenario)
    assert canceled.state.value == "canceled" and canceled.tokens_charged == 0
    assert held == (90, 10)  # only the other job's hold is left
    assert engine.started.count(canceled.id) == 1
    assert _balance(container, customer) == (100, 0)


def test_a_cancel_gives_up_on_a_job_that_keeps_moving_and_moves_nothing(
    container: bootstrap.Container, engine: FakeEngine
) -> None:
    """Each time the cancel finds the job queued, it has just been taken to run, and
    each time it looks again the job is back in the queue. After ``CANCEL_TRIES`` the
    caller is told to try again (409), the hold stays, and a later cancel works."""
    customer = new_customer(container, tokens=100)
    engine.default = "hang"
    lifecycle = container.jobs.lifecycle
    cancel = lifecycle.cancel
    missed: list[str] = []

    def taken_just_before(job: Any, **kwargs: Any) -> Any:
        missed.append(job.id)
        return None  # as when the dispatcher started it a moment before

    async def scenario() -> tuple[httpx.Response, tuple[int, int], httpx.Response]:
        async with running_app(container) as client:
            blocker = (await submit(client, customer, png_bytes(seed=1))).json()
            await _until(lambda: blocker["id"] in engine.started)
            queued = (await submit(client, customer, png_bytes(seed=2))).json()
            lifecycle.cancel = taken_just_before  # type: ignore[method-assign]
            url, h = f"/v1/jobs/{queued['id']}/cancel", customer.headers
            refused = await client.post(url, headers=h)
            held = _balance(container, customer)
            lifecycle.cancel = cancel  # type: ignore[method-assign]
            again = await client.post(url, headers=h)
            await client.post(f"/v1/jobs/{blocker['id']}/cancel", headers=h)
            return refused, held, again

    refused, held, again = run(scenario)
    assert refused.status_code == 409 and refused.json()["code"] == "invalid_job_state"
    assert "try again" in refused.json()["detail"]
    assert len(missed) == dispatcher.CANCEL_TRIES
    assert held == (80, 20)
    assert again.status_code == 200 and again.json()["state"] == "canceled"
    assert _balance(container, customer) == (100, 0)
    assert container.accounts.reconcile().ok


@pytest.mark.parametrize(
    ("step", "errors", "attempts"),
    [("start", 1, 1), ("start", 3, 1), ("succeed", 1, 2), ("settle", 1, 1)],
)
def test_a_database_error_in_the_dispatcher_does_not_orphan_the_job(
    container: bootstrap.Container,
    engine: FakeEngine,
    monkeypatch: pytest.MonkeyPatch,
    step: str,
    errors: int,
    attempts: int,
) -> None:
    """One failed write while starting a job (it stays queued) or recording its success
    (it stays running). The job once waited there for the next restart, answering
    resubmissions as their duplicate, while its hold ran out; now it is looked at
    again as a restart would: queued again, or retried."""
    monkeypatch.setattr(dispatcher, "REPAIR_DELAY_S", 0.01)
    customer = new_customer(container, tokens=100)
    lifecycle = container.jobs.lifecycle
    real = getattr(lifecycle, step)
    failures = [
        sa.exc.OperationalError("UPDATE jobs", {}, Exception("database is locked"))
        for _ in range(errors)
    ]

    monkeypatch.setattr(lifecycle, step, _failing_first(real, failures))

    job = _one_job_put_right(container, customer)
    assert not failures
    assert job["state"] == "succeeded" and job["tokens_charged"] == 10
    assert job["attempts"] == attempts and engine.started.count(job["id"]) == attempts
    assert _balance(container, customer) == (90, 0)
    assert container.accounts.reconcile().ok


class _FlakyGets:
    """The dispatcher's store, whose ``get`` fails first with each of ``failures``."""

    def __init__(self, store: Any, failures: list[Exception]) -> None:
        self._store = store
        self.get = _failing_first(store.get, failures)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def test_a_repair_looks_again_while_the_database_stays_away(
    container: bootstrap.Container, engine: FakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The start fails, then the repair's own reads fail twice: it keeps looking."""
    monkeypatch.setattr(dispatcher, "REPAIR_DELAY_S", 0.01)
    monkeypatch.setattr(dispatcher, "REPAIR_MAX_DELAY_S", 0.05)
    customer = new_customer(container, tokens=100)
    lifecycle, jobs = container.jobs.lifecycle, container.jobs.dispatcher
    failures = [sa.exc.OperationalError("SELECT", {}, Exception("gone")) for _ in range(3)]
    monkeypatch.setattr(lifecycle, "start", _failing_first(lifecycle.start, failures[:1]))
    gets = failures[1:]
    monkeypatch.setattr(jobs, "_store", _FlakyGets(jobs._store, gets))

    job = _one_job_put_right(container, customer)
    assert not gets
    assert job["state"] == "succeeded" and job["tokens_charged"] == 10 and job["attempts"] == 1
    assert _balance(container, customer) == (90, 0)


def test_a_job_repaired_at_its_last_attempt_fails_with_its_hold_released(
    container: bootstrap.Container, engine: FakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its first attempt failed (retryable); recording its second one's success failed:
    no attempt is left, so the repair fails it, and nothing is charged."""
    monkeypatch.setattr(dispatcher, "REPAIR_DELAY_S", 0.01)
    customer = new_customer(container, tokens=100)
    engine.default = "retryable"
    lifecycle = container.jobs.lifecycle
    requeue = lifecycle.requeue

    def then_succeed(job: Any, **kwargs: Any) -> Any:
        engine.default = "succeed"
        return requeue(job, **kwargs)

    failures = [sa.exc.OperationalError("UPDATE jobs", {}, Exception("database is locked"))]
    monkeypatch.setattr(lifecycle, "requeue", then_succeed)
    monkeypatch.setattr(lifecycle, "succeed", _failing_first(lifecycle.succeed, failures))

    job = _one_job_put_right(container, customer)
    assert job["state"] == "failed" and job["attempts"] == 2
    assert job["failure"]["code"] == "worker_lost"
    assert job["failure"]["reason"] == dispatcher.UNRECORDED
    assert job["tokens_charged"] == 0 and _balance(container, customer) == (100, 0)


def test_a_cancel_whose_own_write_fails_is_carried_out_by_the_repair(
    container: bootstrap.Container, engine: FakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cancel came while a failed attempt went back to the queue, and its write
    failed (the database): the repair once queued the job again, which ran and was
    charged. A second repair would be forgotten afterwards."""
    monkeypatch.setattr(dispatcher, "REPAIR_DELAY_S", 0.01)
    customer = new_customer(container, tokens=100)
    engine.default = "retryable"
    lifecycle = container.jobs.lifecycle
    requeue, cancel = lifecycle.requeue, lifecycle.cancel
    requeuing = threading.Event()
    failures = [sa.exc.OperationalError("UPDATE jobs", {}, Exception("database is locked"))]

    def requeue_once_canceled(job: Any, **kwargs: Any) -> Any:
        requeuing.set()
        engine.default = "succeed"
        deadline = time.monotonic() + 10
        while job.id not in engine.cancelled and time.monotonic() < deadline:
            time.sleep(0.005)
        return requeue(job, **kwargs)

    monkeypatch.setattr(lifecycle, "requeue", requeue_once_canceled)
    monkeypatch.setattr(lifecycle, "cancel", _failing_first(cancel, failures))

    async def scenario() -> dict[str, Any]:
        async with running_app(container) as client:
            job = (await submit(client, customer, png_bytes())).json()
            await _until(requeuing.is_set)
            await client.post(f"/v1/jobs/{job['id']}/cancel", headers=customer.headers)
            return await _put_right(container, client, customer, job["id"])

    job = run(scenario)
    assert not failures
    assert job["state"] == "canceled" and job["tokens_charged"] == 0
    assert engine.started.count(job["id"]) == 1
    assert _balance(container, customer) == (100, 0)


@pytest.mark.parametrize(("fate", "code"), [("fail", "workflow_error"), ("crash", "engine_error")])
def test_engine_errors_fail_the_job_and_release(
    container: bootstrap.Container, engine: FakeEngine, fate: str, code: str
) -> None:
    customer = new_customer(container, tokens=100)
    engine.default = fate

    async def scenario() -> dict[str, Any]:
        async with running_app(container) as client:
            job = (await submit(client, customer, png_bytes())).json()
            return await finished(client, customer, job["id"])

    job = run(scenario)
    assert job["state"] == "failed" and job["attempts"] == 1
    assert job["failure"]["code"] == code and job["failure"]["reason"]
    assert _balance(container, customer) == (100, 0)
    assert container.accounts.reconcile().ok


def test_vip_pays_nothing_records_list_price_and_has_a_fair_use_limit(
    container: bootstrap.Container, engine: FakeEngine
) -> None:
    customer = new_customer(container, tokens=30)
    container.plans.subscribe(account_id=customer.account_id, plan="vip")
    engine.default = "hang"

    async def scenario() -> list[Any]:
        async with running_app(container) as client:
            first = (await submit(client, customer, png_bytes(seed=1))).json()
            second = await submit(client, customer, png_bytes(seed=2))
            third = await submit(client, customer, png_bytes(seed=3))
            for job_id in (first["id"], second.json()["id"]):
                engine.release(job_id)
            done = [await finished(client, customer, first["id"])]
            done.append(await finished(client, customer, second.json()["id"]))
            usage = (await client.get("/v1/usage", headers=customer.headers)).json()
            return [first, third, done, usage]

    first, third, done, usage = run(scenario)
    assert (first["tokens"], first["list_tokens"]) == (0, 10)
    assert third.status_code == 429 and third.json()["code"] == "concurrency_limit"
    assert all(j["state"] == "succeeded" and j["tokens_charged"] == 0 for j in done)
    assert usage["totals"] == {"jobs": 2, "succeeded": 2, "tokens_charged": 0, "list_tokens": 20}
    assert _balance(container, customer) == (30, 0)


def test_vip_jobs_jump_the_queue(container: bootstrap.Container, engine: FakeEngine) -> None:
    standard = new_customer(container, tokens=100, name="standard")
    vip = new_customer(container, tokens=0, name="vip")
    container.plans.subscribe(account_id=vip.account_id, plan="vip")
    engine.default = "hang"

    async def scenario() -> list[str]:
        async with running_app(container) as client:
            blocker = (await submit(client, standard, png_bytes(seed=1))).json()["id"]
            await _until(lambda: blocker in engine.started)
            waiting = (await submit(client, standard, png_bytes(seed=2))).json()["id"]
            urgent = (await submit(client, vip, png_bytes(seed=3))).json()["id"]
            engine.default = "succeed"
            engine.release(blocker)
            await finished(client, standard, waiting)
            return [blocker, urgent, waiting]

    expected = run(scenario)
    assert engine.started == expected
    assert engine.max_running == 1


def test_cancel_of_another_accounts_job_is_not_found(
    container: bootstrap.Container, engine: FakeEngine
) -> None:
    owner = new_customer(container, tokens=100, name="owner")
    stranger = new_customer(container, tokens=100, name="stranger")
    engine.default = "hang"

    async def scenario() -> tuple[httpx.Response, dict[str, Any]]:
        async with running_app(container) as client:
            job = (await submit(client, owner, png_bytes())).json()
            refused = await client.post(f"/v1/jobs/{job['id']}/cancel", headers=stranger.headers)
            engine.release(job["id"])
            return refused, await finished(client, owner, job["id"])

    refused, job = run(scenario)
    assert refused.status_code == 404 and refused.json()["code"] == "job_not_found"
    assert job["state"] == "succeeded"
