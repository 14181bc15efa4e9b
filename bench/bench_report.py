"""The usage report (``GET /v1/reports/usage``): what it costs over a busy month.

For each backend (SQLite file, PostgreSQL), ``--events`` settled jobs spread over 30
days, 50 accounts and two capabilities. Measured in the same run, in alternating
turns, the best of ``--repeat``:

- ``report``: ``UsageReports.usage`` for every account over 7 days (per day) and
  over 30 days, and for one account over 30 days;
- ``baseline``: the least any report of a window reads, one
  ``SELECT count(*), sum(tokens_charged)`` over the same range of ``created_at``;
- ``rows``: fetching the window's rows into Python, which a report computed in
  Python rather than counted by the database would start with.

Prints milliseconds and the ratios report / baseline and rows / report.

    .venv/bin/python bench/bench_report.py [--events 100000] [--repeat 5] [--postgres URL]
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import sqlalchemy as sa

from _databases import each_backend, postgres_argument
from comfygate import bootstrap
from comfygate.adapters.db.tables_jobs import jobs, usage_events
from comfygate.config import Settings
from comfygate.domain.analytics import Granularity
from comfygate.domain.ids import new_id

NOW = datetime(2026, 11, 28, tzinfo=UTC)
MONTH = timedelta(days=30)


def fill(container: bootstrap.Container, events: int) -> list[str]:
    """``events`` settled jobs over the last 30 days; the accounts' ids."""
    rng = random.Random(1)
    accounts = [container.ledger.open_account(name=f"bench{i}") for i in range(50)]
    for start in range(0, events, 10_000):
        job_rows, usage_rows = [], []
        for _ in range(min(10_000, events - start)):
            job_id, account = new_id("job"), rng.choice(accounts)
            at = NOW - timedelta(seconds=rng.randint(1, int(MONTH.total_seconds())))
            outcome = rng.choice(["succeeded"] * 8 + ["failed", "canceled"])
            capability = rng.choice(["colorize.person", "colorize.building"])
            job_rows.append({
                "id": job_id, "account_id": account, "user_id": "user_1",
                "capability": capability, "options": "{}", "options_key": "k",
                "state": outcome, "tier": 1, "sha256": "ab" * 32, "md5": "cd" * 16,
                "size_bytes": 1, "image_format": "png", "width": 800, "height": 600,
                "tokens": 11, "list_tokens": 11, "hold_id": new_id("hold"),
                "hold_expires_at": at, "price_book_version": "v", "breakdown": "[]",
                "input_name": "in.png", "attempts": 1, "created_at": at,
                "result_metadata": "{}",
            })  # fmt: skip
            usage_rows.append({
                "id": new_id("use"), "job_id": job_id, "account_id": account,
                "user_id": "user_1", "capability": capability, "outcome": outcome,
                "tokens_charged": 11 if outcome == "succeeded" else 0, "list_tokens": 11,
                "width": 800, "height": 600, "queue_wait_s": 0.2,
                "inference_s": rng.lognormvariate(1, 0.5), "engine": "preview",
                "price_book_version": "v", "gpu_peak_mb": None,
                "failure_code": "timeout" if outcome == "failed" else None, "created_at": at,
            })  # fmt: skip
        with container.engine.begin() as conn:
            conn.execute(jobs.insert(), job_rows)
            conn.execute(usage_events.insert(), usage_rows)
    return accounts


def read(engine: sa.Engine, query: sa.Select[Any]) -> object:
    with engine.connect() as conn:
        return conn.execute(query).all()


def best_ms(repeat: int, runs: list[Callable[[], object]]) -> list[float]:
    best = [float("inf")] * len(runs)
    for _ in range(repeat):
        for i, run in enumerate(runs):
            began = time.perf_counter()
            run()
            best[i] = min(best[i], (time.perf_counter() - began) * 1000)
    return best


def bench_backend(name: str, url: str, events: int, repeat: int) -> list[tuple[str, ...]]:
    container = bootstrap.build(Settings(database_url=url))
    container.upgrade_database()
    try:
        accounts = fill(container, events)
        if name == "postgresql":  # as autovacuum would have by now
            with container.engine.begin() as conn:
                conn.exec_driver_sql("ANALYZE")
        u = usage_events.c
        rows = []
        for label, days, account in (
            ("all, 7 days", 7, None), ("all, 30 days", 30, None), ("one, 30 days", 30, accounts[0]),
        ):  # fmt: skip
            since = NOW - timedelta(days=days)
            window = [u.created_at >= since, u.created_at < NOW]
            if account is not None:
                window.append(u.account_id == account)
            counted = sa.select(sa.func.count(), sa.func.sum(u.tokens_charged)).where(*window)
            fetched = sa.select(usage_events).where(*window)

            def report(account: str | None = account, since: datetime = since) -> object:
                return container.reports.usage(
                    account_id=account, since=since, until=NOW, granularity=Granularity.DAY
                )

            runs = [
                report,
                partial(read, container.engine, counted),
                partial(read, container.engine, fetched),
            ]
            took, baseline, fetch = best_ms(repeat, runs)
            rows.append((name, label, took, baseline, fetch))
        return rows
    finally:
        container.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000, help="settled jobs in 30 days")
    parser.add_argument("--repeat", type=int, default=5)
    postgres_argument(parser)
    args = parser.parse_args()
    rows = []
    for name, url in each_backend(args.postgres):
        rows += bench_backend(name, url, args.events, args.repeat)
    print(f"{args.events} settled jobs in 30 days, 50 accounts; ms, best of {args.repeat}")
    print(f"{'backend':<11} {'window':<13} {'report':>8} {'baseline':>9} {'ratio':>6} "
          f"{'rows':>8} {'rows/report':>12}")  # fmt: skip
    for name, label, report, baseline, fetch in rows:
        print(f"{name:<11} {label:<13} {report:>8.1f} {baseline:>9.1f} {report / baseline:>6.2f} "
              f"{fetch:>8.1f} {fetch / report:>12.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
