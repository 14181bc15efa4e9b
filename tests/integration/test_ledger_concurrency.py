"""Holds racing for the last tokens, on every backend, from threads and from processes.

200 holds of 7 tokens against 1,000: exactly 142 succeed (994 tokens) and 6 remain,
whatever the interleaving. Each thread or process uses its own connection.
"""

from __future__ import annotations

import multiprocessing
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from comfygate import bootstrap
from comfygate.config import Settings
from comfygate.domain.errors import HoldNotOpenError, InsufficientBalanceError
from comfygate.services.ledger import HoldReceipt, SettleReceipt

HOLDS, EACH, FUNDS = 200, 7, 1000


def _attempt(
    container: bootstrap.Container, account_id: str, n: int, start: threading.Barrier
) -> bool:
    start.wait()
    try:
        container.ledger.place_hold(account_id=account_id, amount=EACH, idempotency_key=f"h{n}")
    except InsufficientBalanceError:
        return False
    return True


def _race_in_threads(
    url: str, account_id: str, indices: range, threads: int, batch_max: int | None = None
) -> int:
    container = bootstrap.build(Settings(database_url=url, ledger_batch_max=batch_max))
    try:
        barrier = threading.Barrier(threads)
        with ThreadPoolExecutor(max_workers=threads) as pool:
            # The barrier only lines up the first wave; later attempts still overlap.
            wave = [
                pool.submit(_attempt, container, account_id, n, barrier) for n in indices[:threads]
            ]
            rest = [
                pool.submit(_attempt, container, account_id, n, threading.Barrier(1))
                for n in indices[threads:]
            ]
            return sum(f.result() for f in wave + rest)
    finally:
        container.close()


def _funded_account(url: str) -> str:
    container = bootstrap.build(Settings(database_url=url))
    container.upgrade_database()
    account_id = container.ledger.open_account(name="race")
    container.ledger.grant(account_id=account_id, amount=FUNDS, source="topup", idempotency_key="f")
    container.close()
    return account_id


def _check_outcome(url: str, account_id: str, succeeded: int) -> None:
    container = bootstrap.build(Settings(database_url=url))
    try:
        view = container.accounts.balance(account_id=account_id)
        assert succeeded == FUNDS // EACH == 142
        assert (view.available, view.held) == (FUNDS - 142 * EACH, 142 * EACH) == (6, 994)
        assert container.accounts.reconcile().ok
    finally:
        container.close()


@pytest.mark.parametrize("batch_max", [1, 32], ids=["alone", "batched"])
def test_concurrent_holds_from_threads(database_url: str, batch_max: int) -> None:
    """Each movement alone, and movements of concurrent threads in shared transactions
    (the default on SQLite; allowed everywhere)."""
    account_id = _funded_account(database_url)
    succeeded = _race_in_threads(database_url, account_id, range(HOLDS), 32, batch_max)
    _check_outcome(database_url, account_id, succeeded)


def test_concurrent_holds_leave_a_lot_granted_ahead_alone(database_url: str) -> None:
    """Next month's lot, granted ahead, beside this month's 1,000: the race for this
    month's tokens ends as it does without it, and the lot waiting for its start
    keeps every token."""
    account_id = _funded_account(database_url)
    container = bootstrap.build(Settings(database_url=database_url))
    try:
        ahead = container.ledger.grant(
            account_id=account_id, amount=FUNDS, source="plan", idempotency_key="next",
            starts_at=datetime.now(UTC) + timedelta(days=3),
        )  # fmt: skip
    finally:
        container.close()
    succeeded = _race_in_threads(database_url, account_id, range(HOLDS), 32)
    _check_outcome(database_url, account_id, succeeded)
    container = bootstrap.build(Settings(database_url=database_url))
    try:
        lots = container.accounts.balance(account_id=account_id).lots
        assert [(x.remaining, x.started) for x in lots if x.lot_id == ahead.lot_id] == [
            (FUNDS, False)
        ]
    finally:
        container.close()


@pytest.mark.parametrize("batch_max", [1, 32], ids=["alone", "batched"])
def test_concurrent_retries_of_the_same_keys_move_tokens_once(
    database_url: str, batch_max: int
) -> None:
    """Three threads send each hold and each capture at once under the same key (a
    client retrying): all three get the first receipt, and tokens move once."""
    account_id = _funded_account(database_url)
    container = bootstrap.build(Settings(database_url=database_url, ledger_batch_max=batch_max))
    ledger, keys = container.ledger, [f"k{n}" for n in range(8)] * 3

    def hold(key: str) -> HoldReceipt:
        return ledger.place_hold(account_id=account_id, amount=EACH, idempotency_key=key)

    def capture(receipt: HoldReceipt) -> SettleReceipt:
        return ledger.capture(hold_id=receipt.hold_id, idempotency_key="done")

    try:
        with ThreadPoolExecutor(max_workers=24) as pool:
            holds = list(pool.map(hold, keys))
            settled = list(pool.map(capture, holds))
        hold_ids = {key: {h.hold_id for h, k in zip(holds, keys, strict=True) if k == key}
                    for key in keys}  # fmt: skip
        assert all(len(ids) == 1 for ids in hold_ids.values())
        settle_txns = {h.hold_id: {s.txn_id for s in settled if s.hold_id == h.hold_id}
                       for h in holds}  # fmt: skip
        assert all(len(txns) == 1 for txns in settle_txns.values())
        assert sum(not h.replayed for h in holds) == sum(not s.replayed for s in settled) == 8
        view = container.accounts.balance(account_id=account_id)
        assert (view.available, view.held) == (FUNDS - 8 * EACH, 0)
        assert container.accounts.reconcile().ok
    finally:
        container.close()


def _process_main(
    url: str, account_id: str, start: int, stop: int, out: multiprocessing.Queue
) -> None:  # type: ignore[type-arg]
    out.put(_race_in_threads(url, account_id, range(start, stop), threads=16))


def test_concurrent_holds_from_two_processes(database_url: str) -> None:
    account_id = _funded_account(database_url)
    ctx = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue = ctx.Queue()  # type: ignore[type-arg]
    half = HOLDS // 2
    procs = [
        ctx.Process(target=_process_main, args=(database_url, account_id, lo, hi, results))
        for lo, hi in ((0, half), (half, HOLDS))
    ]
    for p in procs:
        p.start()
    succeeded = sum(results.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    _check_outcome(database_url, account_id, succeeded)


def test_racing_settlements_of_one_hold_settle_it_once(database_url: str) -> None:
    """Captures and releases of one hold under different keys, at once: one wins.

    Each settlement reads the hold after taking the account's lock; reading it in the
    locking statement itself would see the hold as it was before the winner committed.
    """
    account_id = _funded_account(database_url)
    container = bootstrap.build(Settings(database_url=database_url))
    try:
        ledger = container.ledger
        for round_ in range(5):
            hold = ledger.place_hold(account_id=account_id, amount=10, idempotency_key=f"r{round_}")
            start = threading.Barrier(8)

            def settle(
                n: int, hold_id: str = hold.hold_id, start: threading.Barrier = start
            ) -> str:
                start.wait()
                try:
                    if n % 2:
                        ledger.release(hold_id=hold_id, idempotency_key=f"s{n}", reason="race")
                    else:
                        ledger.capture(hold_id=hold_id, idempotency_key=f"s{n}", amount=n + 1)
                except HoldNotOpenError:
                    return "refused"
                return "settled"

            with ThreadPoolExecutor(max_workers=8) as pool:
                outcomes = list(pool.map(settle, range(8)))
            assert outcomes.count("settled") == 1
        view = container.accounts.balance(account_id=account_id)
        assert view.held == 0
        assert container.accounts.reconcile().ok
    finally:
        container.close()


def test_holds_waiting_on_grants_see_the_new_lots(database_url: str) -> None:
    """Each thread grants 7 tokens, then holds 7, on one empty account: every hold fits.

    In any serial order the grants committed before a hold cover every hold before it,
    so a refusal would mean a hold priced against lots read before the lock was won.
    """
    container = bootstrap.build(Settings(database_url=database_url))
    container.upgrade_database()
    try:
        ledger = container.ledger
        account_id = ledger.open_account(name="interleaved")
        start = threading.Barrier(16)

        def grant_then_hold(n: int) -> None:
            start.wait()
            ledger.grant(account_id=account_id, amount=EACH, source="topup",
                         idempotency_key=f"g{n}")  # fmt: skip
            ledger.place_hold(account_id=account_id, amount=EACH, idempotency_key=f"h{n}")

        with ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(grant_then_hold, range(64)))
        view = container.accounts.balance(account_id=account_id)
        assert (view.available, view.held) == (0, 64 * EACH)
        assert container.accounts.reconcile().ok
    finally:
        container.close()


def test_expiry_racing_captures_of_due_holds_never_deadlocks(
    container: bootstrap.Container, clock: Any
) -> None:
    """Captures locked a hold and then its balance on MariaDB, expire the other way
    round: dozens of deadlocks a run. Now every capture locks the balance first."""
    ledger = container.ledger
    failures: list[BaseException] = []
    for round_ in range(3):
        account = ledger.open_account(name=f"expiring {round_}")
        ledger.grant(account_id=account, amount=1000, source="topup", idempotency_key="g")
        due = [
            ledger.place_hold(account_id=account, amount=10, idempotency_key=f"h{i}", ttl_s=60)
            for i in range(16)
        ]
        clock.advance(seconds=61)
        calls = [lambda h=h: ledger.capture(hold_id=h.hold_id, idempotency_key="c") for h in due]
        calls += [ledger.expire] * 4
        start = threading.Barrier(len(calls))

        def run(call: Any, start: threading.Barrier = start) -> None:
            start.wait()
            try:
                call()
            except HoldNotOpenError:
                pass  # expired first: the capture is refused, as it should be
            except BaseException as error:  # a deadlock is what this looks for
                failures.append(error)

        with ThreadPoolExecutor(len(calls)) as pool:
            list(pool.map(run, calls))
        balance = container.accounts.balance(account_id=account)
        assert balance.held == 0 and balance.available == 1000  # all released: they were due
    assert failures == []
    assert container.accounts.reconcile().ok
