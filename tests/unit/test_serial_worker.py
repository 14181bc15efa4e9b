"""The hot path's serial worker: order, results, errors, context, lanes, restarts."""

from __future__ import annotations

import asyncio
import contextvars
import threading

import pytest

from comfygate.adapters.serial import SerialWorker

REQUEST = contextvars.ContextVar("REQUEST", default="none")


def test_calls_run_in_order_on_one_thread_and_return_their_results() -> None:
    worker = SerialWorker("test", lanes=1)
    seen: list[tuple[int, str]] = []

    def call(n: int) -> int:
        seen.append((n, threading.current_thread().name))
        return n * n

    async def scenario() -> list[int]:
        return await asyncio.gather(*(worker.call(call, n) for n in range(20)))

    try:
        assert asyncio.run(scenario()) == [n * n for n in range(20)]
    finally:
        worker.close()
    assert [n for n, _ in seen] == list(range(20))
    assert {name for _, name in seen} == {"test-0"}


def test_an_error_reaches_its_caller_only() -> None:
    worker = SerialWorker("test")

    def boom() -> None:
        raise ValueError("no")

    async def scenario() -> tuple[BaseException | int, ...]:
        return tuple(
            await asyncio.gather(worker.run(boom), worker.run(lambda: 7), return_exceptions=True)
        )

    try:
        failed, fine = asyncio.run(scenario())
    finally:
        worker.close()
    assert isinstance(failed, ValueError) and fine == 7


def test_calls_see_the_callers_context_variables() -> None:
    worker = SerialWorker("test")

    async def scenario() -> str:
        REQUEST.set("req-1")
        return await worker.run(REQUEST.get)

    try:
        assert asyncio.run(scenario()) == "req-1"
    finally:
        worker.close()


def test_a_blocked_lane_does_not_hold_up_another() -> None:
    worker = SerialWorker("test", lanes=2)
    release = threading.Event()

    async def scenario() -> list[str]:
        blocked = asyncio.ensure_future(worker.run(lambda: "blocked" if release.wait() else ""))
        await asyncio.sleep(0)  # the blocked call takes lane 0
        free = await worker.run(lambda: "free")  # would wait forever on lane 0
        release.set()
        return [free, await blocked]

    try:
        assert asyncio.run(scenario()) == ["free", "blocked"]
    finally:
        release.set()
        worker.close()


def test_close_finishes_queued_calls_and_a_later_call_restarts_the_thread() -> None:
    worker = SerialWorker("test")
    assert asyncio.run(worker.run(lambda: 1)) == 1
    worker.close()
    assert asyncio.run(worker.run(lambda: 2)) == 2
    worker.close()
    assert [t for t in threading.enumerate() if t.name.startswith("test-")] == []


def test_lanes_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least one lane"):
        SerialWorker("test", lanes=0)
