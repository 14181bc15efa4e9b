"""Long-lived threads that run the hot path's short blocking calls, each in order.

The container owns one ``SerialWorker``: the API runs quotes and job submissions on
it, the dispatcher starts and settles jobs on it.

Why not ``anyio.to_thread.run_sync``: every call there wakes an idle pool thread and
hands its result back with a wake-up of its own, and on the small, shared machines
comfygate runs on a thread hand-off costs 0.1-0.15 ms of CPU, as much as the quote
it runs. Here a thread (a *lane*) drains a queue: while it is busy, new calls are
picked up without waking anything, and the results of everything it ran in one pass
go back to the event loop in one callback. So under load a call costs no hand-off.

SQLite serialises writers anyway, so it gets one lane. A database server gets
several (``lanes``): a call goes to the lane with the fewest calls outstanding, so
one call waiting on a row lock or a round trip does not hold up the others.

Only short calls belong here (a quote, a job submission, a settlement: a few
milliseconds of database work). A call's exception is raised to its awaiter. A call
whose awaiter was cancelled still runs to its end (as with ``run_sync``): what it
started, it finishes.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_Call = tuple[
    asyncio.AbstractEventLoop, "asyncio.Future[Any]", contextvars.Context, Callable[[], Any]
]
_Outcome = tuple["asyncio.Future[Any]", Any, BaseException | None]


class _Lane:
    """One daemon thread and its queue; the thread starts with the first call."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.outstanding = 0
        self._calls: deque[_Call] = deque()
        self._wake = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None
        self._stopping = False

    def submit(self, call: _Call) -> None:
        with self._wake:
            self._calls.append(call)
            self.outstanding += 1
            if self._thread is None:
                self._stopping = False
                self._thread = threading.Thread(target=self._main, name=self.name, daemon=True)
                self._thread.start()
            self._wake.notify()

    def stop(self) -> None:
        """Finish the calls already queued, then end the thread."""
        with self._wake:
            self._stopping = True
            thread = self._thread
            self._wake.notify()
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _main(self) -> None:
        while True:
            with self._wake:
                while not self._calls and not self._stopping:
                    self._wake.wait()
                if not self._calls:
                    self._thread = None  # a later call starts a new thread
                    return
                calls = list(self._calls)
                self._calls.clear()
            _run_all(calls)
            with self._wake:
                self.outstanding -= len(calls)


class SerialWorker:
    """Runs blocking calls on ``lanes`` threads, each lane's calls one after the other."""

    def __init__(self, name: str, *, lanes: int = 1) -> None:
        if lanes < 1:
            raise ValueError("a worker needs at least one lane")
        self._lanes = [_Lane(f"{name}-{index}") for index in range(lanes)]

    async def run(self, fn: Callable[[], T]) -> T:
        """``fn()`` on a lane's thread, with the caller's context variables."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        lane = min(self._lanes, key=lambda candidate: candidate.outstanding)
        lane.submit((loop, future, contextvars.copy_context(), fn))
        return await future

    async def call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` on a lane's thread (``asyncio.to_thread``'s signature)."""
        return await self.run(functools.partial(fn, *args, **kwargs))

    def close(self) -> None:
        """Finish the calls already queued, then stop the threads (a later ``run``
        starts them again)."""
        for lane in self._lanes:
            lane.stop()


def _run_all(calls: list[_Call]) -> None:
    done: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
    for loop, future, context, fn in calls:
        try:
            outcome: _Outcome = (future, context.run(fn), None)
        except BaseException as exc:  # handed to the awaiter, which raises it
            outcome = (future, None, exc)
        done.setdefault(loop, []).append(outcome)
    for loop, outcomes in done.items():
        # A closed loop raises RuntimeError: nobody is waiting there any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_deliver, outcomes)


def _deliver(outcomes: list[_Outcome]) -> None:
    for future, result, error in outcomes:
        if future.done():  # the awaiter was cancelled
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
