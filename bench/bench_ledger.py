"""Ledger throughput: holds placed + captured per second, beside the simplest debit.

For each backend (SQLite file, PostgreSQL) and each concurrency (1 and 16 clients,
each on its own account and connection), measures in the same run on the same database:

- ``hold+capture``: ``LedgerService.place_hold`` then ``capture`` (two transactions:
  a hold must be durable before the job is queued), wired as ``comfygate serve``
  wires it (group commit on SQLite, one transaction per movement elsewhere);
- ``baseline``: the simplest possible debit, one transaction of one conditional
  ``UPDATE wallet SET balance = balance - n WHERE balance >= n`` and one ``INSERT``,
  written the way code is written with SQLAlchemy Core: ``engine.begin()`` and two
  ``conn.execute`` of prebuilt statements;
- ``raw baseline``: the same debit with the SQLAlchemy layer taken out, as the
  ledger's own hot path does: a pooled DBAPI connection, two ``cursor.execute`` of
  the compiled SQL, ``commit``.

Prints operations per second and the ratio ours / each baseline. Usage:

    .venv/bin/python bench/bench_ledger.py [--seconds 3] [--rounds 5] [--postgres URL]

Each of the three is measured in ``--rounds`` turns of ``seconds / rounds``, taken in
a rotating order, so that a burst of other work on a shared machine weighs on all
three alike.
"""

from __future__ import annotations

import argparse
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import sqlalchemy as sa

from _databases import each_backend, postgres_argument
from comfygate import bootstrap
from comfygate.adapters.db.base import Tokens, UtcDateTime
from comfygate.adapters.db.prepared import Prepared
from comfygate.config import Settings

bench_meta = sa.MetaData()
wallet = sa.Table(
    "bench_wallet",
    bench_meta,
    sa.Column("account_id", sa.String(40), primary_key=True),
    sa.Column("balance", Tokens, nullable=False),
)
debits = sa.Table(
    "bench_debits",
    bench_meta,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column("account_id", sa.String(40), nullable=False),
    sa.Column("amount", Tokens, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
)
DEBIT = (
    wallet.update()
    .where(wallet.c.account_id == sa.bindparam("b_id"), wallet.c.balance >= sa.bindparam("n"))
    .values(balance=wallet.c.balance - sa.bindparam("n"))
)
INSERT = debits.insert().inline()


def run(clients: int, seconds: float, op: Callable[[int, int], None]) -> tuple[int, float]:
    """Run ``op(client, i)`` in ``clients`` threads for ``seconds``; how many ran, in
    how many seconds."""
    stop = time.perf_counter() + seconds
    counts = [0] * clients
    start = threading.Barrier(clients)

    def loop(client: int) -> None:
        start.wait()
        i = 0
        while time.perf_counter() < stop:
            op(client, i)
            i += 1
        counts[client] = i

    began = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(loop, range(clients)))
    return sum(counts), time.perf_counter() - began


def interleaved(
    clients: int, seconds: float, rounds: int, ops: list[Callable[[int, int], None]]
) -> list[float]:
    """Operations per second of each of ``ops``, measured in ``rounds`` short turns
    each, in a rotating order: a burst of other work on the machine falls on all of
    them alike, instead of on whichever ran at that moment."""
    done = [0] * len(ops)
    took = [0.0] * len(ops)
    for r in range(rounds):
        for k in range(len(ops)):
            j = (k + r) % len(ops)
            count, elapsed = run(clients, seconds / rounds, ops[j])
            done[j] += count
            took[j] += elapsed
    return [n / t for n, t in zip(done, took, strict=True)]


Row = tuple[str, int, float, float, float]


def bench_backend(name: str, url: str, seconds: float, rounds: int) -> list[Row]:
    container = bootstrap.build(Settings(database_url=url))
    container.upgrade_database()
    engine = container.engine
    bench_meta.create_all(engine)
    debit = Prepared(DEBIT, engine.dialect)
    insert = Prepared(INSERT, engine.dialect, columns=["account_id", "amount", "created_at"])
    begin = "BEGIN IMMEDIATE" if name == "sqlite" else None
    rows = []
    for clients in (1, 16):
        accounts = [container.ledger.open_account(name=f"bench{c}") for c in range(clients)]
        for a in accounts:
            container.ledger.grant(account_id=a, amount=10**12, source="topup",
                                   idempotency_key="fund")  # fmt: skip
        wallets = [uuid.uuid4().hex for _ in range(clients)]
        with engine.begin() as conn:
            conn.execute(wallet.insert(), [{"account_id": w, "balance": 10**12} for w in wallets])

        def ours(client: int, i: int, accounts: list[str] = accounts) -> None:
            key = f"{i}-{uuid.uuid4().hex[:8]}"
            hold = container.ledger.place_hold(account_id=accounts[client], amount=11,
                                               idempotency_key=key)  # fmt: skip
            container.ledger.capture(hold_id=hold.hold_id, idempotency_key=key)

        def baseline(client: int, i: int, wallets: list[str] = wallets) -> None:
            with engine.begin() as conn:
                done = conn.execute(DEBIT, {"b_id": wallets[client], "n": 11}).rowcount
                assert done == 1
                conn.execute(debits.insert(), {"account_id": wallets[client], "amount": 11,
                                               "created_at": datetime.now(UTC)})  # fmt: skip

        def raw_baseline(client: int, i: int, wallets: list[str] = wallets) -> None:
            pooled = engine.raw_connection()
            try:
                cursor = pooled.driver_connection.cursor()  # type: ignore[union-attr]
                if begin:
                    cursor.execute(begin)
                cursor.execute(debit.sql, debit.params({"b_id": wallets[client], "n": 11}))
                assert cursor.rowcount == 1
                cursor.execute(insert.sql, insert.params({"account_id": wallets[client],
                               "amount": 11, "created_at": datetime.now(UTC)}))  # fmt: skip
                pooled.commit()
            finally:
                pooled.close()

        mine, base, raw = interleaved(clients, seconds, rounds, [ours, baseline, raw_baseline])
        rows.append((name, clients, mine, base, raw))
    assert container.accounts.reconcile().ok
    bench_meta.drop_all(engine)
    container.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement, in all")
    parser.add_argument("--rounds", type=int, default=5, help="turns each measurement takes")
    postgres_argument(parser)
    args = parser.parse_args()
    rows = []
    for name, url in each_backend(args.postgres):
        rows += bench_backend(name, url, args.seconds, args.rounds)
    print(f"{'backend':<11} {'clients':>7} {'hold+capture/s':>15} {'baseline/s':>11} "
          f"{'ratio':>6} {'raw baseline/s':>15} {'ratio':>6}")  # fmt: skip
    for name, clients, mine, base, raw in rows:
        print(f"{name:<11} {clients:>7} {mine:>15.0f} {base:>11.0f} {mine / base:>6.2f} "
              f"{raw:>15.0f} {mine / raw:>6.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
