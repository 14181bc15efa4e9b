"""Plan catalog validation and the periods plans grant over."""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime
from importlib import resources

import pytest

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
    following = dp.next_period(monthly, at, at, TZ)
    assert following.start == period.end
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
