"""Usage counted by each backend (``SqlUsageCounts``): per UTC hour, capability and
outcome, inference-time bins, failures and top accounts, within the window and the
account asked for; and the report built on them matches one computed in Python from
the same jobs."""

from __future__ import annotations

import random
from collections import Counter
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from comfygate.adapters.db import sql_reports
from comfygate.adapters.db.sql_reports import SqlUsageCounts
from comfygate.domain import analytics as da
from comfygate.services.reports import UsageReports
from tests.fakes import FakeClock
from tests.reports_support import T0, Use, new_account, store_usage

HOUR = timedelta(hours=1)


def _random_uses(rng: random.Random, accounts: list[str], n: int) -> list[Use]:
    uses = []
    for _ in range(n):
        outcome = rng.choice([da.SUCCEEDED] * 6 + [da.FAILED] * 2 + [da.CANCELED])
        price = rng.randint(10, 30)
        uses.append(
            Use(
                account_id=rng.choice(accounts),
                capability=rng.choice(["colorize.person", "colorize.building"]),
                outcome=outcome,
                tokens_charged=price if outcome == da.SUCCEEDED and rng.random() < 0.8 else 0,
                list_tokens=price,
                inference_s=round(rng.uniform(0.05, 700), 3) if rng.random() < 0.9 else None,
                failure_code=rng.choice(["timeout", "comfyui_error", None])
                if outcome == da.FAILED
                else None,
                at=T0 + timedelta(seconds=rng.randint(0, 3 * 86400 - 1)),
            )
        )
    return uses


def test_counts_match_the_jobs_counted_in_python(engine: sa.Engine) -> None:
    rng = random.Random(7)
    accounts = [new_account(engine, f"a{i}") for i in range(3)]
    uses = _random_uses(rng, accounts, 400)
    store_usage(engine, uses)
    counts = SqlUsageCounts(engine)
    since, until = T0 + timedelta(hours=5, minutes=30), T0 + timedelta(days=2, hours=7)
    for account_id in (None, accounts[1]):
        inside = [
            u for u in uses
            if since <= u.at < until and account_id in (None, u.account_id)
        ]  # fmt: skip
        window = {"account_id": account_id, "since": since, "until": until}

        for minutes in (60, 15):
            expected: Counter[tuple[datetime, str, str]] = Counter()
            tokens: Counter[tuple[datetime, str, str]] = Counter()
            for u in inside:
                start = u.at.replace(minute=u.at.minute - u.at.minute % minutes, second=0)
                expected[start, u.capability, u.outcome] += 1
                tokens[start, u.capability, u.outcome] += u.tokens_charged
            counted = counts.count(**window, minutes=minutes, top=10)
            cells = counted.cells
            assert {(c.start, c.capability, c.outcome): c.calls for c in cells} == expected
            got = {(c.start, c.capability, c.outcome): c.tokens_charged for c in cells}
            assert got == tokens
        timed = [u for u in inside if u.inference_s is not None]
        assert sum(c.inference_s for c in cells) == pytest.approx(
            sum(u.inference_s or 0 for u in timed)
        )
        assert sum(c.timed_list_tokens for c in cells) == sum(u.list_tokens for u in timed)

        bins = {b.capability: b.counts for b in counted.bins}
        for capability in ("colorize.person", "colorize.building"):
            seconds = [
                u.inference_s for u in timed
                if u.capability == capability and u.outcome == da.SUCCEEDED
            ]  # fmt: skip
            expected_bins = Counter(da.bin_of(s) for s in seconds if s is not None)
            got = bins.get(capability, ())
            assert {i: n for i, n in enumerate(got) if n} == dict(expected_bins)

        failures = Counter(u.failure_code or "unknown" for u in inside if u.outcome == da.FAILED)
        assert [(f.code, f.count) for f in counted.failures] == sorted(
            failures.items(), key=lambda item: (-item[1], item[0])
        )

        top = counts.count(**window, minutes=60, top=2).top_accounts
        per_account: Counter[str] = Counter()
        for u in inside:
            per_account[u.account_id] += u.tokens_charged
        assert [a.tokens_charged for a in top] == sorted(per_account.values(), reverse=True)[:2]
        assert all(a.name.startswith("a") for a in top)


def test_a_bin_bound_counts_in_its_own_bin(engine: sa.Engine) -> None:
    """A time equal to a bound is in the bin that bound closes, in SQL as in Python,
    0.1 s included (MariaDB kept it in single precision, as 0.10000000149: bin 1)."""
    account_id = new_account(engine, "edges")
    times = [0.1, 0.25, 0.5, 600.0, 600.5, 0.0, 2.0000001]
    store_usage(engine, [
        Use(account_id, "colorize.person", da.SUCCEEDED, 10, 10, s, None, T0) for s in times
    ])  # fmt: skip
    bins = (
        SqlUsageCounts(engine)
        .count(account_id=account_id, since=T0, until=T0 + HOUR, minutes=60, top=10)
        .bins
    )
    expected = Counter(da.bin_of(s) for s in times)
    assert {i: n for i, n in enumerate(bins[0].counts) if n} == dict(expected)
    last = len(da.INFERENCE_BOUNDS_S)
    assert expected == {0: 2, 1: 1, 2: 1, 7: 1, last - 1: 1, last: 1}


def test_the_report_in_shanghai_time(engine: sa.Engine) -> None:
    """Local days and hours on a real database: a job at 23:30 UTC is the next day's,
    at 07:30 in the morning, in Shanghai."""
    account_id = new_account(engine, "acme")
    late = T0 + timedelta(hours=23, minutes=30)
    store_usage(engine, [
        Use(account_id, "colorize.person", da.SUCCEEDED, 11, 11, 2.0, None, late),
        Use(account_id, "colorize.person", da.FAILED, 0, 11, None, "timeout", T0 + HOUR),
    ])  # fmt: skip
    reports = UsageReports(SqlUsageCounts(engine), FakeClock(), lambda _: "Asia/Shanghai")
    report = reports.usage(
        account_id=account_id, since=T0, until=T0 + timedelta(days=2),
        granularity=da.Granularity.DAY,
    )  # fmt: skip
    shanghai = ZoneInfo("Asia/Shanghai")
    assert report.buckets[0] == datetime(2026, 11, 27, tzinfo=shanghai)
    assert report.series[0].succeeded == (0, 1, 0)
    assert report.series[0].failed == (1, 0, 0)
    assert report.heatmap[late.astimezone(shanghai).weekday()][7] == 1
    assert report.top_accounts == (da.AccountUsage(account_id, "acme", 2, 11),)
    assert report.failures == (da.FailureCount("timeout", 1),)
    assert report.totals.gpu_seconds_per_token == round(2.0 / 11, 4)


def test_the_counts_are_of_one_state_of_the_database(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job settled while the counts are read is in none of them: the hourly counts
    said 1 and the failures 2, for one report, when each query read afresh."""
    account_id = new_account(engine, "acme")
    failed = Use(account_id, "colorize.person", da.FAILED, 0, 11, None, "timeout", T0)
    store_usage(engine, [failed])
    counting_failures = sql_reports._failures

    def failures_after_another_settles(*args: object) -> list[da.FailureCount]:
        store_usage(engine, [failed])  # committed on another connection, meanwhile
        return counting_failures(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(sql_reports, "_failures", failures_after_another_settles)
    counted = SqlUsageCounts(engine).count(
        account_id=account_id, since=T0, until=T0 + HOUR, minutes=60, top=10
    )
    assert sum(c.calls for c in counted.cells) == 1
    assert counted.failures == [da.FailureCount("timeout", 1)]
    assert [a.calls for a in counted.top_accounts] == [1]
