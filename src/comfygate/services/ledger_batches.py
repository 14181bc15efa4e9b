"""Concurrent movements of one process, committed together (group commit).

Every movement is one ``Operation``: a body that runs inside a unit of work and
returns its receipt. Run alone, an operation gets a transaction of its own. When
threads of this process submit movements while one is being committed, the next
transaction takes all of them: one ``BEGIN``, one ``COMMIT``, and on SQLite one write
of each B-tree page the batch touched, however many movements touched it.

A batch is all or nothing, and nothing about it is visible to a caller until it has
committed. Bodies run one after the other on the leading thread; each sees what the
ones before it wrote (a unit of work's reads see its queued writes), exactly as if
they had committed one by one in that order. So:

- a body that refuses with a domain error before writing anything (insufficient
  balance, a hold not open ...) gets that error, and the batch goes on;
- a body that asks for its writes to be kept and an error raised (``Deferred``) gets
  both;
- anything else (a reused idempotency key caught by the journal's unique index, a
  database error, a body failing after it wrote) rolls the whole batch back, and each
  of its operations runs again alone, where it fails or replays exactly as it would
  have without batching.

Leadership passes from thread to thread: the submitter that finds no transaction
running leads one batch (its own operation first), then hands over to the oldest
waiting submitter, so no thread serves others for longer than one batch.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, NamedTuple, TypeVar

from comfygate.domain.errors import ComfygateError
from comfygate.services.ledger_ports import (
    DuplicateIdempotencyKeyError,
    LedgerStore,
    LedgerUnitOfWork,
)

_R = TypeVar("_R")


class Deferred(Exception):
    """Raised by a body: keep what it wrote (e.g. an expired hold's release), then
    raise ``error`` to its caller."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


class Operation(NamedTuple, Generic[_R]):
    body: Callable[[LedgerUnitOfWork], _R]
    """Lock, read, append; return the receipt or raise (see the module's rules)."""
    after_conflict: Callable[[], _R]
    """The answer when the journal says the operation's key was used before."""


@dataclass(eq=False, slots=True)
class _Submitted:
    """An operation queued behind a running batch, and the thread waiting for it."""

    operation: Operation[Any]
    wake: threading.Event
    done: bool = False
    result: Any = None
    error: BaseException | None = None

    def finish(self, result: Any = None, error: BaseException | None = None) -> None:
        self.result, self.error, self.done = result, error, True
        self.wake.set()


def _outcome(submitted: _Submitted, _operation: Operation[_R]) -> _R:
    """The receipt ``submitted`` got (typed as its operation's), or its error raised."""
    if submitted.error is not None:
        raise submitted.error
    result: _R = submitted.result
    return result


class MovementBatcher:
    """Runs operations in shared transactions of at most ``max_batch``."""

    def __init__(self, *, store: LedgerStore, max_batch: int) -> None:
        self._store = store
        self._max_batch = max(1, max_batch)
        self._lock = threading.Lock()
        self._queue: list[_Submitted] = []
        self._busy = False  # a leader is running; then every queued one waits for it

    def run(self, operation: Operation[_R]) -> _R:
        """Run ``operation`` (alone or in a batch); its receipt, or its error raised."""
        if self._max_batch == 1:  # no batching: every thread runs its own, in parallel
            return self._alone(operation)
        with self._lock:
            leads = not self._busy  # nothing running, so nothing queued: a batch of one
            if leads:
                self._busy = True
            else:  # only a submitter that waits makes something to wait on
                me = _Submitted(operation, threading.Event())
                self._queue.append(me)
        if leads:
            try:
                return self._alone(operation)
            finally:
                self._hand_over()
        me.wake.wait()
        if not me.done:  # made leader: my operation is first in the queue
            self._lead()
        return _outcome(me, operation)

    def _lead(self) -> None:
        with self._lock:
            batch = self._queue[: self._max_batch]
            del self._queue[: self._max_batch]
        try:
            self._run_batch(batch)
        except BaseException as error:  # never leave a waiting thread waiting
            for submitted in batch:
                if not submitted.done:
                    submitted.finish(error=error)
            raise
        finally:
            self._hand_over()

    def _hand_over(self) -> None:
        """Make the oldest waiting submitter the next leader, or stand down."""
        with self._lock:
            if self._queue:
                self._queue[0].wake.set()  # not done: it leads the next batch
            else:
                self._busy = False

    def _run_batch(self, batch: list[_Submitted]) -> None:
        if len(batch) > 1:
            outcomes = self._try_together(batch)
            if outcomes is not None:
                for submitted, (result, error) in zip(batch, outcomes, strict=True):
                    submitted.finish(result, error)
                return
        for submitted in batch:
            self._run_alone(submitted)

    def _try_together(self, batch: list[_Submitted]) -> list[tuple[Any, Exception | None]] | None:
        """Every outcome, committed; None if the batch had to be rolled back."""
        outcomes: list[tuple[Any, Exception | None]] = []
        try:
            with self._store.unit_of_work() as uow:
                for submitted in batch:
                    before = uow.appends
                    try:
                        outcomes.append((submitted.operation.body(uow), None))
                    except Deferred as deferred:
                        outcomes.append((None, deferred.error))
                    except ComfygateError as error:
                        if uow.appends != before:
                            return None  # wrote, then failed: only a rollback undoes it
                        outcomes.append((None, error))
                uow.commit()
        except Exception:
            return None
        return outcomes

    def _run_alone(self, submitted: _Submitted) -> None:
        try:
            result = self._alone(submitted.operation)
        except Exception as error:
            submitted.finish(error=error)
        else:
            submitted.finish(result)

    def _alone(self, operation: Operation[_R]) -> _R:
        """Run ``operation`` in a transaction of its own; its receipt, or its error."""
        try:
            with self._store.unit_of_work() as uow:
                try:
                    result = operation.body(uow)
                except Deferred as deferred:
                    uow.commit()
                    raise deferred.error from None
                uow.commit()
        except DuplicateIdempotencyKeyError:
            return operation.after_conflict()
        return result
