"""Plan catalog validation and the periods plans grant over."""

from __future__ import annotations

import itertools
import tomllib
from datetime import UTC, datetime, timedelta
from importlib import resources

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from comfygate.domain import plans as dp
from comfygate.domain.errors import PlanNotFoundError, ValidationFailedError

TZ = "Asia/Shanghai"


def shipped() -> dp.PlanCatalog:
    text = resources.files("comfygate.data").joinpath("plans.toml").read_text("utf-8")
    return dp.parse_catalog(tomllib.loads(text))


def test_shipped_catalog_has_the_seed_plans() -> None:
    catalog = shipped()
    assert catalog.get("monthly").tokens == 1000
    assert catalog.get("yearly").tokens == 10000
    vip = catalog.get("vip")
    assert (vip.kind, vip.max_concurrent_jobs) == ("unlimited", 2)
    with pytest.raises(PlanNotFoundError):
        catalog.get("platinum")


def test_validation_reports_every_problem_at_once() -> None:
    doc = {
        "timezone": "Mars/Olympus",
        "plans": {
            "a": {"kind": "tokens", "tokens": -1, "period": "fortnight"},
            "b": {"kind": "unlimited", "period": "month"},
            "c": {"kind": "gift"},
        },
    }
    with pytest.raises(ValidationFailedError) as err:
        dp.parse_catalog(doc)
    assert len(err.value.errors) == 5
    joined = "\n".join(err.value.errors)
    for fragment in (
        "timezone",
        "plans.a.tokens",
        "plans.a.period",
        "max_concurrent",
        "plans.c.kind",
    ):
        assert fragment in joined


def test_monthly_period_is_the_calendar_month_in_the_catalog_timezone() -> None:
    monthly = shipped().get("monthly")
    # 2026-11-30 17:00 UTC is already December 1st in Shanghai.
    at = datetime(2026, 11, 30, 17, 0, tzinfo=UTC)
    period = dp.period_containing(monthly, at, at, TZ)
    assert period.start == datetime(2026, 11, 30, 16, 0, tzinfo=UTC)
    assert period.end == datetime(2026, 12, 31, 16, 0, tzinfo=UTC)
    following = dp.renewal_period(monthly, [period], at, TZ)
    assert following is not None and following.start == period.end
    assert following.end == datetime(2027, 1, 31, 16, 0, tzinfo=UTC)


def test_yearly_and_vip_periods_run_from_the_start() -> None:
    catalog = shipped()
    start = datetime(2026, 1, 31, 9, 30, tzinfo=UTC)
    later = datetime(2026, 3, 15, tzinfo=UTC)
    year = dp.period_containing(catalog.get("yearly"), start, later, TZ)
    assert (year.start, year.end) == (start, datetime(2027, 1, 31, 9, 30, tzinfo=UTC))
    vip = dp.period_containing(catalog.get("vip"), start, later, TZ)
    # Jan 31 + 1 month clamps to Feb 28; + 2 months is Mar 31.
    assert vip.start == datetime(2026, 2, 28, 9, 30, tzinfo=UTC)
    assert vip.end == datetime(2026, 3, 31, 9, 30, tzinfo=UTC)


def test_subscribing_again_keeps_the_period_in_force_and_after_a_lapse_starts_anew() -> None:
    yearly = shipped().get("yearly")
    start = datetime(2026, 1, 31, 9, 30, tzinfo=UTC)
    first = dp.subscription_period(yearly, [], start, TZ)
    assert (first.start, first.end) == (start, datetime(2027, 1, 31, 9, 30, tzinfo=UTC))
    assert dp.subscription_period(yearly, [first], datetime(2026, 6, 1, tzinfo=UTC), TZ) == first
    # Bought again in June 2028, after a lapse: a whole year from then (once 214 days).
    again = datetime(2028, 6, 1, tzinfo=UTC)
    assert dp.subscription_period(yearly, [first], again, TZ) == dp.Period(
        again, datetime(2029, 6, 1, tzinfo=UTC)
    )


def test_a_renewal_grants_the_period_after_the_one_in_force_even_when_late() -> None:
    monthly = shipped().get("monthly")
    january = dp.subscription_period(monthly, [], datetime(2026, 1, 10, tzinfo=UTC), TZ)
    assert dp.renewal_period(monthly, [], datetime(2026, 1, 10, tzinfo=UTC), TZ) is None
    february = dp.renewal_period(monthly, [january], datetime(2026, 1, 20, tzinfo=UTC), TZ)
    assert february is not None and february.start == january.end
    # Renewing again in January grants February again (the grant is keyed by it) ...
    assert dp.renewal_period(monthly, [january], datetime(2026, 1, 25, tzinfo=UTC), TZ) == february
    # ... and renewing five minutes into February, unrenewed, grants February, not March.
    five_past = january.end + timedelta(minutes=5)
    assert dp.renewal_period(monthly, [january], five_past, TZ) == february
    # Renewed months ahead: the period after the one in force is already granted.
    march = dp.renewal_period(monthly, [january, february], five_past, TZ)
    assert march is not None and march.start == february.end
    # Lapsed for longer than a month: a new run, the month containing now.
    june = datetime(2026, 6, 15, tzinfo=UTC)
    assert dp.renewal_period(monthly, [january], june, TZ) == dp.subscription_period(
        monthly, [], june, TZ
    )


def test_renewals_count_from_the_start_of_the_run_so_a_clamped_month_does_not_drift() -> None:
    vip = shipped().get("vip")
    start = datetime(2026, 1, 31, 9, 30, tzinfo=UTC)
    periods = [dp.subscription_period(vip, [], start, TZ)]
    for _ in range(2):
        following = dp.renewal_period(vip, periods, periods[-1].start, TZ)
        assert following is not None
        periods.append(following)
    assert [p.start.day for p in periods] == [31, 28, 31]  # Jan 31, Feb 28, Mar 31
    assert all(a.end == b.start for a, b in itertools.pairwise(periods))


def test_a_month_of_vip_is_a_month_in_the_catalog_timezone() -> None:
    vip = shipped().get("vip")
    start = datetime(2026, 1, 30, 19, 0, tzinfo=UTC)  # Jan 31 03:00 in Shanghai
    period = dp.subscription_period(vip, [], start, TZ)
    assert period.end == datetime(2026, 2, 27, 19, 0, tzinfo=UTC)  # Feb 28 03:00 there


@settings(max_examples=300, deadline=None)
@given(
    plan=st.sampled_from(["monthly", "yearly", "vip"]),
    steps=st.lists(
        st.tuples(st.integers(0, 400 * 24), st.sampled_from(["subscribe", "renew", "purchase"])),
        min_size=1,
        max_size=25,
    ),
)
def test_granted_periods_never_overlap_and_each_is_one_whole_period(
    plan: str, steps: list[tuple[int, str]]
) -> None:
    """Whatever order and timing subscribes, renewals and paid orders come in, the
    periods granted (each recorded once, as the store does) never overlap: no tokens
    are granted twice for the same time, every period is one plan period long, and a
    paid order always buys one not granted before."""
    spec = shipped().get(plan)
    at = datetime(2026, 1, 31, 3, 0, tzinfo=UTC)
    periods: list[dp.Period] = []
    for hours, action in steps:
        at += timedelta(hours=hours)
        if action == "subscribe":
            chosen: dp.Period | None = dp.subscription_period(spec, periods, at, TZ)
            assert chosen is not None and chosen.start <= at < chosen.end
        elif action == "purchase":  # a paid order: always a period of its own
            chosen = dp.purchase_period(spec, periods, at, TZ)
            assert chosen not in periods and chosen.end > at
        else:
            chosen = dp.renewal_period(spec, periods, at, TZ)
            if chosen is None:
                assert not periods
                continue
            assert chosen.end > at
        if chosen not in periods:
            periods.append(chosen)
    ordered = sorted(periods, key=lambda p: p.start)
    assert all(a.end <= b.start for a, b in itertools.pairwise(ordered))
    low, high = (365, 366) if plan == "yearly" else (28, 31)
    assert all(low <= (p.end - p.start).days + (p.end - p.start).seconds / 86400 <= high + 0.05
               for p in periods)  # fmt: skip
