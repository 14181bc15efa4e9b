"""A batch commits exactly what its operations would have committed one by one.

Hypothesis draws rounds of operations that could arrive at the same moment: grants,
holds (some under keys used before, for the same or another amount), and captures
and releases of holds from earlier rounds (some twice in one round). Each round runs
twice, on two databases:

- on A as one batch, through the batcher's shared transaction;
- on B one operation at a time, each in its own transaction (no batching).

Every operation must get the same answer on both, the same receipt figures or the
same error, and after every round both ledgers must hold the same balances and
reconcile.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from comfygate import bootstrap
from comfygate.config import Settings
from comfygate.services.ledger import HoldReceipt, LedgerService
from comfygate.services.ledger_batches import Operation, _Submitted
from tests.fakes import FakeClock


@dataclass(frozen=True)
class Grant:
    account: int
    amount: int


@dataclass(frozen=True)
class Hold:
    account: int
    amount: int
    key: int


@dataclass(frozen=True)
class Settle:
    hold: int  # index into the holds placed in earlier rounds
    capture: int | None  # tokens to capture; None releases
    key: int


OPERATION = st.one_of(
    st.builds(Grant, st.integers(0, 1), st.integers(1, 40)),
    st.builds(Hold, st.integers(0, 1), st.integers(0, 30), st.integers(0, 5)),
    st.builds(
        Settle, st.integers(0, 30), st.one_of(st.none(), st.integers(0, 30)), st.integers(0, 1)
    ),
)
ROUNDS = st.lists(st.lists(OPERATION, min_size=1, max_size=8), min_size=1, max_size=5)


class Side:
    """One database, its two accounts, and the holds placed on it so far."""

    def __init__(self, root: Path, name: str, batch_max: int) -> None:
        clock = FakeClock()
        url = f"sqlite:///{root / name}.db"
        self.container = bootstrap.build(
            Settings(database_url=url, ledger_batch_max=batch_max), clock=clock
        )
        self.container.upgrade_database()
        self.ledger: LedgerService = self.container.ledger
        self.accounts = [self.ledger.open_account(name=f"{name}{n}") for n in (0, 1)]
        self.holds: list[str] = []

    def call(self, op: Grant | Hold | Settle, n: int) -> Callable[[], Any] | None:
        """The ledger call ``op`` makes, or None if it names a hold that is not there."""
        ledger = self.ledger
        if isinstance(op, Grant):
            account = self.accounts[op.account]
            return lambda: ledger.grant(account_id=account, amount=op.amount,
                                        source="topup", idempotency_key=f"g{n}")  # fmt: skip
        if isinstance(op, Hold):
            account = self.accounts[op.account]
            return lambda: ledger.place_hold(account_id=account, amount=op.amount,
                                             idempotency_key=f"h{op.key}")  # fmt: skip
        if op.hold >= len(self.holds):
            return None
        hold_id = self.holds[op.hold]
        if op.capture is None:
            return lambda: ledger.release(hold_id=hold_id, idempotency_key=f"s{op.key}",
                                          reason="test")  # fmt: skip
        return lambda: ledger.capture(hold_id=hold_id, idempotency_key=f"s{op.key}",
                                      amount=op.capture)  # fmt: skip

    def balances(self) -> list[tuple[int, int]]:
        views = [self.container.accounts.balance(account_id=a) for a in self.accounts]
        return [(v.available, v.held) for v in views]


def _batched(side: Side, calls: list[Callable[[], Any]]) -> list[tuple[Any, Any]]:
    """Run ``calls`` as one batch: collect their operations, then run them together."""
    batcher = side.ledger._batcher
    collected: list[Operation[Any]] = []

    class Collect:
        def run(self, operation: Operation[Any]) -> None:
            collected.append(operation)

    side.ledger._batcher = Collect()  # type: ignore[assignment]
    try:
        for call in calls:
            call()
    finally:
        side.ledger._batcher = batcher
    submitted = [_Submitted(operation, threading.Event()) for operation in collected]
    batcher._run_batch(submitted)
    return [(s.result, s.error) for s in submitted]


def _alone(calls: list[Callable[[], Any]]) -> list[tuple[Any, Any]]:
    outcomes: list[tuple[Any, Any]] = []
    for call in calls:
        try:
            outcomes.append((call(), None))
        except Exception as error:
            outcomes.append((None, error))
    return outcomes


def _figures(outcome: tuple[Any, Any]) -> tuple[Any, ...]:
    """What must agree: the error's type, or the receipt without its ids."""
    result, error = outcome
    if error is not None:
        return (type(error).__name__,)
    fields = ("amount", "list_tokens", "state", "captured", "released", "replayed")
    return tuple(getattr(result, f, None) for f in fields)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rounds=ROUNDS)
def test_a_batch_commits_what_its_operations_commit_one_by_one(
    tmp_path_factory: Any, rounds: list[list[Grant | Hold | Settle]]
) -> None:
    root = tmp_path_factory.mktemp("batches")
    a, b = Side(root, "a", batch_max=32), Side(root, "b", batch_max=1)
    try:
        for ops in rounds:
            pairs = [(a.call(op, n), b.call(op, n)) for n, op in enumerate(ops)]
            live = [(x, y) for x, y in pairs if x is not None and y is not None]
            batched = _batched(a, [x for x, _ in live])
            alone = _alone([y for _, y in live])
            assert [_figures(o) for o in batched] == [_figures(o) for o in alone]
            for (placed_a, _), (placed_b, _) in zip(batched, alone, strict=True):
                if isinstance(placed_a, HoldReceipt) and not placed_a.replayed:
                    a.holds.append(placed_a.hold_id)
                    b.holds.append(placed_b.hold_id)
            assert a.balances() == b.balances()
            assert a.container.accounts.reconcile().ok
            assert b.container.accounts.reconcile().ok
    finally:
        a.container.close()
        b.container.close()
