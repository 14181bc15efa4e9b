"""The plan catalog and the periods plans grant over (pure).

Three kinds of plan:

- ``tokens``: a number of tokens each period (``calendar_month``: the month that
  contains the start, expiring at its end; ``year`` / ``month``: from the start);
- ``unlimited``: no tokens taken during the period (jobs still metered at list price)
  with a fair-use limit on concurrent jobs;
- ``topup``: a one-off grant valid for ``valid_days``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from comfygate.domain.errors import PlanNotFoundError, ValidationFailedError

KINDS = ("tokens", "unlimited", "topup")
PERIODS = ("calendar_month", "month", "year")


@dataclass(frozen=True, slots=True)
class Plan:
    name: str
    title: str
    kind: str
    tokens: int
    period: str | None
    valid_days: int | None
    max_concurrent_jobs: int | None
    price: str


@dataclass(frozen=True, slots=True)
class Period:
    start: datetime
    end: datetime


@dataclass(frozen=True, slots=True)
class PlanCatalog:
    timezone: str
    plans: Mapping[str, Plan]

    def get(self, name: str) -> Plan:
        try:
            return self.plans[name]
        except KeyError:
            known = ", ".join(sorted(self.plans))
            raise PlanNotFoundError(f"unknown plan {name!r} (plans: {known})", plan=name) from None


def parse_catalog(doc: Mapping[str, Any]) -> PlanCatalog:
    """Validate a catalog document (parsed TOML); raise with every problem at once."""
    errors: list[str] = []
    tz = str(doc.get("timezone", "UTC"))
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        errors.append(f"timezone: unknown time zone {tz!r}")
    plans: dict[str, Plan] = {}
    for name, spec in dict(doc.get("plans", {})).items():
        plan = _parse_plan(name, spec, errors)
        if plan is not None:
            plans[name] = plan
    if not plans and not errors:
        errors.append("plans: the catalog has no plans")
    if errors:
        raise ValidationFailedError("invalid plan catalog", errors=errors)
    return PlanCatalog(tz, plans)


def _parse_plan(name: str, spec: Any, errors: list[str]) -> Plan | None:
    where = f"plans.{name}"
    if not isinstance(spec, Mapping):
        errors.append(f"{where}: must be a table")
        return None
    before = len(errors)
    kind = spec.get("kind")
    if kind not in KINDS:
        errors.append(f"{where}.kind: must be one of {', '.join(KINDS)}")
    tokens = spec.get("tokens", 0)
    if kind in ("tokens", "topup") and (not isinstance(tokens, int) or tokens <= 0):
        errors.append(f"{where}.tokens: must be a positive integer")
    period = spec.get("period")
    if kind in ("tokens", "unlimited") and period not in PERIODS:
        errors.append(f"{where}.period: must be one of {', '.join(PERIODS)}")
    valid_days = spec.get("valid_days")
    if kind == "topup" and (not isinstance(valid_days, int) or valid_days <= 0):
        errors.append(f"{where}.valid_days: must be a positive integer")
    max_jobs = spec.get("max_concurrent_jobs")
    if kind == "unlimited" and (not isinstance(max_jobs, int) or max_jobs <= 0):
        errors.append(f"{where}.max_concurrent_jobs: must be a positive integer")
    if len(errors) > before:
        return None
    return Plan(
        name,
        str(spec.get("title", name)),
        str(kind),
        int(tokens),
        period,
        valid_days,
        max_jobs,
        str(spec.get("price", "")),
    )


def _add_months(moment: datetime, months: int) -> datetime:
    """Same day and time ``months`` later, clamped to the month's last day."""
    index = moment.month - 1 + months
    year, month = moment.year + index // 12, index % 12 + 1
    for day in (moment.day, 30, 29, 28):
        try:
            return moment.replace(year=year, month=month, day=day)
        except ValueError:
            continue
    raise AssertionError("unreachable")  # pragma: no cover


def period_containing(plan: Plan, start: datetime, at: datetime, tz: str) -> Period:
    """The period of a subscription begun at ``start`` that contains ``at``. Months
    are the catalog timezone's: a month from Jan 31 03:00 in Shanghai ends Feb 28
    03:00 there (counted in UTC, it was Mar 1)."""
    zone = ZoneInfo(tz)
    if plan.period == "calendar_month":
        local = at.astimezone(zone)
        first = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        return Period(first.astimezone(UTC), _add_months(first, 1).astimezone(UTC))
    months = 12 if plan.period == "year" else 1
    local_start = start.astimezone(zone)

    def boundary(n: int) -> datetime:
        return _add_months(local_start, months * n).astimezone(UTC)

    n = 0
    while boundary(n + 1) <= at:
        n += 1
    return Period(boundary(n), boundary(n + 1))


def topup_validity(plan: Plan) -> timedelta:
    """How long a top-up pack's tokens last from when they are granted."""
    assert plan.valid_days is not None
    return timedelta(days=plan.valid_days)


def _in_force(periods: Sequence[Period], at: datetime) -> Period | None:
    return next((p for p in periods if p.start <= at < p.end), None)


def _new_run(plan: Plan, at: datetime, tz: str) -> Period:
    """A subscription begun at ``at``: the calendar month, or a whole period from ``at``."""
    return period_containing(plan, at, at, tz)


def _run_start(periods: Sequence[Period], last: Period) -> datetime:
    """Where the unbroken run of periods ending with ``last`` began: its periods are
    counted from there, so a month clamped to the 28th does not pull the next ones."""
    by_end = {p.end: p for p in periods}
    first = last
    while first.start in by_end:
        first = by_end[first.start]
    return first.start


def subscription_period(plan: Plan, periods: Sequence[Period], at: datetime, tz: str) -> Period:
    """What subscribing at ``at`` grants, given the periods granted before: the one in
    force (subscribing again changes nothing), else a new run beginning at ``at``, so a
    subscription bought again after a lapse is a whole period, not the rest of one
    anchored at the first purchase."""
    return _in_force(periods, at) or _new_run(plan, at, tz)


def renewal_period(plan: Plan, periods: Sequence[Period], at: datetime, tz: str) -> Period | None:
    """What renewing at ``at`` grants (None: nothing to renew).

    The period after the one in force (renewing again in the same period grants the
    same one). When none is in force, a renewal that comes late, while the period
    after the last one is running, grants that one; a lapse longer than that starts
    a new run at ``at``.
    """
    if not periods:
        return None
    current = _in_force(periods, at)
    last = current or max(periods, key=lambda p: p.end)
    following = period_containing(plan, _run_start(periods, last), last.end, tz)
    if current is not None or following.start <= at < following.end:
        return following
    return _new_run(plan, at, tz)


def purchase_period(plan: Plan, periods: Sequence[Period], at: datetime, tz: str) -> Period:
    """What a paid order grants at ``at``: the period after the last one still to run
    (in force, or renewed ahead), so an order never pays for a period granted already
    (by an operator, say, or another order); with none, a new run beginning at ``at``."""
    ahead = [p for p in periods if p.end > at]
    if not ahead:
        return _new_run(plan, at, tz)
    last = max(ahead, key=lambda p: p.end)
    return period_containing(plan, _run_start(periods, last), last.end, tz)
