"""Group commit of concurrent movements: who leads, what shares a transaction, and
what happens to a batch when one of its operations cannot share it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import pytest

from comfygate.domain.errors import HoldNotOpenError, InsufficientBalanceError
from comfygate.services.ledger_batches import Deferred, MovementBatcher, Operation
from comfygate.services.ledger_ports import DuplicateIdempotencyKeyError


class FakeUnitOfWork:
    def __init__(self, store: FakeStore) -> None:
        self.store = store
        self.appends = 0
        self.written: list[str] = []

    def write(self, what: str) -> None:
        self.appends += 1
        self.written.append(what)

    def commit(self) -> None:
        if any(w in self.store.taken for w in self.written) or len(set(self.written)) < len(
            self.written
        ):
            raise DuplicateIdempotencyKeyError("taken")  # the journal's unique index
        self.store.committed.append(list(self.written))
        self.store.taken.update(self.written)


class FakeStore:
    """Transactions as lists of the keys written; a key can be written once."""

    def __init__(self) -> None:
        self.committed: list[list[str]] = []
        self.taken: set[str] = set()
        self.opened = 0
        self.gate = threading.Event()
        self.gate.set()

    @contextmanager
    def unit_of_work(self) -> Iterator[FakeUnitOfWork]:
        self.opened += 1
        self.gate.wait(5)
        yield FakeUnitOfWork(self)


def op(key: str, *, fail_before: Exception | None = None) -> Operation[str]:
    def body(uow: Any) -> str:
        if fail_before is not None:
            raise fail_before
        uow.write(key)
        return f"receipt {key}"

    return Operation(body, lambda: f"replayed {key}")


def run_concurrently(batcher: MovementBatcher, ops: list[Operation[str]]) -> list[Any]:
    """Submit ``ops`` from as many threads, while the first transaction is held open,
    so that every later one queues behind it."""
    store: FakeStore = batcher._store  # type: ignore[assignment]
    store.gate.clear()

    def submit(o: Operation[str]) -> Any:
        try:
            return batcher.run(o)
        except Exception as error:
            return error

    with ThreadPoolExecutor(len(ops)) as pool:
        first = pool.submit(submit, ops[0])
        while store.opened == 0:  # the first submitter now leads, held at the gate
            threading.Event().wait(0.001)
        rest = [pool.submit(submit, o) for o in ops[1:]]
        while len(batcher._queue) < len(ops) - 1:
            threading.Event().wait(0.001)
        store.gate.set()
        return [first.result(), *(f.result() for f in rest)]


def test_alone_each_operation_is_its_own_transaction() -> None:
    store = FakeStore()
    batcher = MovementBatcher(store=store, max_batch=32)  # type: ignore[arg-type]
    assert batcher.run(op("a")) == "receipt a"
    assert batcher.run(op("b")) == "receipt b"
    assert store.committed == [["a"], ["b"]]


def test_operations_queued_behind_a_transaction_share_the_next() -> None:
    store = FakeStore()
    batcher = MovementBatcher(store=store, max_batch=32)  # type: ignore[arg-type]
    results = run_concurrently(batcher, [op(k) for k in "abcdef"])
    assert results == [f"receipt {k}" for k in "abcdef"]
    assert store.committed[0] == ["a"]
    assert sorted(store.committed[1]) == list("bcdef")  # one transaction for the rest
    assert len(store.committed) == 2


def test_a_batch_is_at_most_max_batch_long() -> None:
    store = FakeStore()
    batcher = MovementBatcher(store=store, max_batch=2)  # type: ignore[arg-type]
    run_concurrently(batcher, [op(k) for k in "abcde"])
    assert [len(t) for t in store.committed] == [1, 2, 2]


def test_a_refusal_before_writing_stays_with_its_operation() -> None:
    store = FakeStore()
    batcher = MovementBatcher(store=store, max_batch=32)  # type: ignore[arg-type]
    refused = InsufficientBalanceError("no", available=0, required=1)
    results = run_concurrently(batcher, [op("a"), op("b"), op("x", fail_before=refused), op("c")])
    assert results[2] is refused
    assert sorted(store.committed[1]) == ["b", "c"]


def test_deferred_keeps_the_writes_and_raises_the_error() -> None:
    store = FakeStore()
    batcher = MovementBatcher(store=store, max_batch=32)  # type: ignore[arg-type]
    expired = HoldNotOpenError("expired")
    calls = iter(range(10))

    def body(uow: Any) -> str:
        uow.write(f"expiry{next(calls)}")
        raise Deferred(expired)

    results = run_concurrently(batcher, [op("a"), Operation(body, lambda: "?"), op("b")])
    assert results[1] is expired
    assert sorted(store.committed[1]) == ["b", "expiry0"]
    with pytest.raises(HoldNotOpenError):
        batcher.run(Operation(body, lambda: "?"))  # alone too: committed, then raised
    assert store.committed[-1] == ["expiry1"]


def test_a_reused_key_rolls_the_batch_back_and_each_runs_alone() -> None:
    store = FakeStore()
    batcher = MovementBatcher(store=store, max_batch=32)  # type: ignore[arg-type]
    batcher.run(op("used"))
    results = run_concurrently(batcher, [op("a"), op("b"), op("used"), op("c"), op("b")])
    assert results == ["receipt a", "receipt b", "replayed used", "receipt c", "replayed b"]
    assert store.committed[2:] == [["b"], ["c"]]  # after the batch failed: one by one


def test_an_error_after_writing_rolls_the_batch_back() -> None:
    store = FakeStore()
    batcher = MovementBatcher(store=store, max_batch=32)  # type: ignore[arg-type]

    def half_done(uow: Any) -> str:
        uow.write("half")
        raise HoldNotOpenError("changed its mind")

    results = run_concurrently(batcher, [op("a"), op("b"), Operation(half_done, str), op("c")])
    assert isinstance(results[2], HoldNotOpenError)
    assert "half" not in store.taken
    assert store.committed[1:] == [["b"], ["c"]]


def test_waiting_threads_are_released_when_the_leader_dies() -> None:
    store = FakeStore()
    batcher = MovementBatcher(store=store, max_batch=32)  # type: ignore[arg-type]

    def dies(uow: Any) -> str:
        raise KeyboardInterrupt

    def submit(o: Operation[str]) -> Any:
        try:
            return batcher.run(o)
        except BaseException as error:
            return error

    store.gate.clear()
    with ThreadPoolExecutor(3) as pool:
        first = pool.submit(submit, op("a"))
        while store.opened == 0:
            threading.Event().wait(0.001)
        others = [pool.submit(submit, Operation(dies, str)), pool.submit(submit, op("b"))]
        while len(batcher._queue) < 2:
            threading.Event().wait(0.001)
        store.gate.set()
        outcomes = [first.result(5), *(f.result(5) for f in others)]
    assert outcomes[0] == "receipt a"
    assert all(isinstance(o, KeyboardInterrupt) for o in outcomes[1:])
    assert batcher.run(op("c")) == "receipt c"  # and the batcher still works


def test_without_batching_threads_run_their_transactions_in_parallel() -> None:
    inside = threading.Barrier(4, timeout=5)

    class ParallelStore(FakeStore):
        @contextmanager
        def unit_of_work(self) -> Iterator[FakeUnitOfWork]:
            inside.wait()  # all four transactions open at once, or this times out
            yield FakeUnitOfWork(self)

    batcher = MovementBatcher(store=ParallelStore(), max_batch=1)  # type: ignore[arg-type]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(batcher.run, [op(k) for k in "abcd"]))
    assert results == [f"receipt {k}" for k in "abcd"]
