"""``pricing fit``: what fitting the cost models of a busy month costs.

For each backend (SQLite file, PostgreSQL), ``--jobs`` succeeded jobs over 30 days, two
capabilities, five sizes and three upscale factors, each with an inference time of
``a + b x MP + c x (upscale > 1)`` plus noise and a few slow outliers. Measured in the
same run, in alternating turns, the best of ``--repeat``:

- ``fit``: ``CostFitting.fit`` as ``comfygate pricing fit`` runs it: read the window's
  jobs, fit both capabilities (twice: the outliers are left out), the memory models,
  the proposal and its example prices;
- ``read``: the same join of the window's rows fetched into Python, which any fit
  starts with;
- ``line``: ``statistics.linear_regression`` of seconds on megapixels over those rows
  in memory, the least a fit can be.

Prints milliseconds, ``fit / read`` and the fitting's own share ``(fit - read) / line``.

    .venv/bin/python bench/bench_fit.py [--jobs 100000] [--repeat 3] [--postgres URL]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from _databases import each_backend, postgres_argument
from bench_report import best_ms
from comfygate import bootstrap
from comfygate.adapters.db.tables_jobs import jobs, usage_events
from comfygate.config import Settings
from comfygate.domain.ids import new_id
from comfygate.services.clock import Clock

NOW = datetime(2026, 11, 28, tzinfo=UTC)
MONTH = timedelta(days=30)
SIZES = [(800, 600), (1920, 1080), (3000, 2000), (640, 480), (1200, 1600)]


class Fixed(Clock):
    def now(self) -> datetime:
        return NOW


def fill(container: bootstrap.Container, count: int) -> None:
    rng = random.Random(1)
    account = container.ledger.open_account(name="bench")
    for start in range(0, count, 10_000):
        job_rows, usage_rows = [], []
        for _ in range(min(10_000, count - start)):
            job_id = new_id("job")
            at = NOW - timedelta(seconds=rng.randint(1, int(MONTH.total_seconds())))
            capability, base = rng.choice([("colorize.person", 0.9), ("colorize.building", 2.4)])
            (width, height), upscale = rng.choice(SIZES), rng.choice([1, 2, 4])
            seconds = base + 0.35 * width * height / 1e6 + 1.2 * (upscale > 1)
            seconds += rng.gauss(0, 0.08) + (4.0 if rng.random() < 0.01 else 0.0)
            job_rows.append({
                "id": job_id, "account_id": account, "user_id": "user_1",
                "capability": capability, "options": json.dumps({"upscale": upscale}),
                "options_key": "k", "state": "succeeded", "tier": 1, "sha256": "ab" * 32,
                "md5": "cd" * 16, "size_bytes": 1, "image_format": "png", "width": width,
                "height": height, "tokens": 11, "list_tokens": 11, "hold_id": new_id("hold"),
                "hold_expires_at": at, "price_book_version": "v", "breakdown": "[]",
                "input_name": "in.png", "attempts": 1, "created_at": at,
                "result_metadata": "{}",
            })  # fmt: skip
            usage_rows.append({
                "id": new_id("use"), "job_id": job_id, "account_id": account,
                "user_id": "user_1", "capability": capability, "outcome": "succeeded",
                "tokens_charged": 11, "list_tokens": 11, "width": width, "height": height,
                "queue_wait_s": 0.2, "inference_s": max(seconds, 0.01), "engine": "comfyui",
                "price_book_version": "v", "gpu_peak_mb": round(1500 + 420 * width * height / 1e6),
                "failure_code": None, "created_at": at,
            })  # fmt: skip
        with container.engine.begin() as conn:
            conn.execute(jobs.insert(), job_rows)
            conn.execute(usage_events.insert(), usage_rows)


def bench_backend(name: str, url: str, count: int, repeat: int) -> tuple[str, float, float, float]:
    container = bootstrap.build(Settings(database_url=url), clock=Fixed())
    container.upgrade_database()
    try:
        fill(container, count)
        if name == "postgresql":  # as autovacuum would have by now
            with container.engine.begin() as conn:
                conn.exec_driver_sql("ANALYZE")
        u = usage_events.c
        query = (
            sa.select(u.capability, u.width, u.height, u.inference_s, u.gpu_peak_mb, jobs.c.options)
            .join(jobs, jobs.c.id == u.job_id)
            .where(u.created_at >= NOW - MONTH, u.created_at < NOW)
        )

        def read() -> list[Any]:
            with container.engine.connect() as conn:
                return list(conn.execute(query).all())

        rows = read()
        mp = [r.width * r.height / 1e6 for r in rows]
        seconds = [r.inference_s for r in rows]
        fit, took_read, line = best_ms(
            repeat,
            [
                container.cost_fit.fit,
                read,
                lambda: statistics.linear_regression(mp, seconds),
            ],
        )
        return name, fit, took_read, line
    finally:
        container.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000, help="succeeded jobs in 30 days")
    parser.add_argument("--repeat", type=int, default=3)
    postgres_argument(parser)
    args = parser.parse_args()
    results = []
    for name, url in each_backend(args.postgres):
        results.append(bench_backend(name, url, args.jobs, args.repeat))
    print(f"{args.jobs} succeeded jobs in 30 days; ms, best of {args.repeat}")
    print(f"{'backend':<11} {'fit':>8} {'read':>8} {'fit/read':>9} {'line':>7} "
          f"{'(fit-read)/line':>16}")  # fmt: skip
    for name, fit, took_read, line in results:
        print(f"{name:<11} {fit:>8.0f} {took_read:>8.0f} {fit / took_read:>9.2f} {line:>7.0f} "
              f"{(fit - took_read) / line:>16.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
