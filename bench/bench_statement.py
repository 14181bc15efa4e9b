"""Statement pages: what a page of 50 costs with a long history behind it.

For each backend (SQLite file, PostgreSQL), two accounts in one database: ``short``
with 20 transactions, ``long`` with ``--history`` (holds and their captures, made
through the ledger). Measured in the same run, in alternating turns: the newest
page of each, and a page of ``long`` from the middle of its history (the cursor a
client paging back would send). Prints milliseconds a page (the best of
``--repeat``) and the ratio long / short: 1.0 means the history costs nothing.

    .venv/bin/python bench/bench_statement.py [--history 20000] [--repeat 30] [--postgres URL]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from _databases import each_backend, postgres_argument
from comfygate import bootstrap
from comfygate.config import Settings

PAGE = 50


def fill(container: bootstrap.Container, name: str, transactions: int) -> str:
    ledger = container.ledger
    account = ledger.open_account(name=name)
    ledger.grant(account_id=account, amount=10**12, source="topup", idempotency_key="fund")
    for i in range((transactions - 1) // 2):
        hold = ledger.place_hold(account_id=account, amount=11, idempotency_key=f"{i}")
        ledger.capture(hold_id=hold.hold_id, idempotency_key=f"{i}")
    return account


def best_ms(repeat: int, pages: list[Callable[[], object]]) -> list[float]:
    """The best time of each of ``pages`` over ``repeat`` alternating turns."""
    best = [float("inf")] * len(pages)
    for _ in range(repeat):
        for i, page in enumerate(pages):
            began = time.perf_counter()
            page()
            best[i] = min(best[i], (time.perf_counter() - began) * 1000)
    return best


def bench_backend(name: str, url: str, history: int, repeat: int) -> tuple[str, list[float]]:
    container = bootstrap.build(Settings(database_url=url))
    container.upgrade_database()
    try:
        short, long = fill(container, "short", 20), fill(container, "long", history)
        if name == "postgresql":  # as autovacuum would have by now
            with container.engine.begin() as conn:
                conn.exec_driver_sql("ANALYZE")
        statement = container.accounts.statement
        middle = container.ledger_store.statement(long, limit=history // 2, before=None)[-1].txn_id
        times = best_ms(
            repeat,
            [
                lambda: statement(account_id=short, limit=PAGE),
                lambda: statement(account_id=long, limit=PAGE),
                lambda: statement(account_id=long, limit=PAGE, before=middle),
            ],
        )
        return name, times
    finally:
        container.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--history", type=int, default=20_000, help="transactions of 'long'")
    parser.add_argument("--repeat", type=int, default=30)
    postgres_argument(parser)
    args = parser.parse_args()
    rows = []
    for name, url in each_backend(args.postgres):
        rows.append(bench_backend(name, url, args.history, args.repeat))
    print(f"history: {args.history} transactions; a page: {PAGE}; ms, best of {args.repeat}")
    print(f"{'backend':<11} {'short':>7} {'long':>7} {'ratio':>6} "
          f"{'long, middle':>13} {'ratio':>6}")  # fmt: skip
    for name, (short, newest, middle) in rows:
        print(f"{name:<11} {short:>7.2f} {newest:>7.2f} {newest / short:>6.2f} "
              f"{middle:>13.2f} {middle / short:>6.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
