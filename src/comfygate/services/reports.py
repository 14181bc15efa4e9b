"""Usage reports for operators and account admins: the dashboard's figures.

``UsageReports.usage`` checks the window and the timezone, has the store count the
window's settled jobs (``UsageCounts``, an adapter's port), and leaves the arithmetic
to ``domain.analytics``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from comfygate.domain import analytics as da
from comfygate.domain.errors import InvalidInputError
from comfygate.domain.instants import EARLIEST, LATEST
from comfygate.services.clock import Clock

DEFAULT_WINDOW = timedelta(days=7)
MARGIN = timedelta(days=2)
"""How far inside the instants a datetime holds a window must be (its buckets reach
a day past its ends in a far time zone)."""
HOURLY_UP_TO = timedelta(days=2)
"""A window this long or shorter is counted per hour unless asked otherwise."""
TOP = 10


@dataclass(frozen=True, slots=True)
class WindowCounts:
    """What the store counted of one window, all from one state of the database."""

    cells: list[da.UsageCell]
    """Per UTC hour, or quarter hour, as asked."""
    bins: list[da.InferenceBins]
    failures: list[da.FailureCount]
    """The most frequent codes, at most ``top``."""
    top_accounts: list[da.AccountUsage]
    """By tokens charged, at most ``top``."""


class UsageCounts(Protocol):
    def count(
        self, *, account_id: str | None, since: datetime, until: datetime, minutes: int, top: int
    ) -> WindowCounts:
        """Settled jobs of ``[since, until)`` (of one account, or of every account for
        None), counted where they are stored, per UTC hour (``minutes`` 60) or quarter
        hour (15), in one snapshot: a job settled meanwhile is in every count or none."""
        ...


class UsageReports:
    """Reports over settled jobs (``usage_events``): one account's or everyone's."""

    def __init__(
        self, counts: UsageCounts, clock: Clock, default_timezone: Callable[[str | None], str]
    ) -> None:
        self._counts = counts
        self._clock = clock
        self._default_timezone = default_timezone

    def usage(
        self,
        *,
        account_id: str | None,
        since: datetime | None = None,
        until: datetime | None = None,
        granularity: da.Granularity | None = None,
        timezone: str | None = None,
    ) -> da.UsageAnalytics:
        """The report of ``[since, until)`` (default: the last seven days), per hour or
        day (default: per hour up to two days) in ``timezone`` (default: the timezone
        of the price book pricing the account, or of the default book for every account:
        the one its time-of-day windows are in)."""
        until = until or self._clock.now()
        _check_instant("until", until, margin=MARGIN + DEFAULT_WINDOW if since is None else MARGIN)
        since = since or until - DEFAULT_WINDOW
        _check_instant("since", since, margin=MARGIN)
        _check_window(since, until, granularity)
        if granularity is None:
            hourly = until - since <= HOURLY_UP_TO
            granularity = da.Granularity.HOUR if hourly else da.Granularity.DAY
        zone_name = timezone or self._default_timezone(account_id)
        zone = _zone(zone_name)
        counted = self._counts.count(
            account_id=account_id, since=since, until=until,
            minutes=da.cell_minutes(zone, since, until), top=TOP,
        )  # fmt: skip
        return da.analyse(
            cells=counted.cells,
            bins=counted.bins,
            failures=counted.failures,
            top_accounts=counted.top_accounts,
            since=since,
            until=until,
            zone=zone,
            zone_name=zone_name,
            granularity=granularity,
        )


def _check_instant(name: str, value: datetime, *, margin: timedelta) -> None:
    """Aware, and far enough inside what a datetime holds that the window's buckets,
    a day wider in any zone, can be counted."""
    if value.tzinfo is None:
        raise InvalidInputError(f"{name} needs a time zone (e.g. 2024-05-01T00:00:00Z)")
    if not (EARLIEST + margin <= value <= LATEST - MARGIN):
        raise InvalidInputError(f"{name} is out of range: {value.isoformat()}")


def _check_window(since: datetime, until: datetime, granularity: da.Granularity | None) -> None:
    if since >= until:
        raise InvalidInputError("since must be before until")
    longest = da.MAX_HOURLY_WINDOW if granularity is da.Granularity.HOUR else da.MAX_DAILY_WINDOW
    if until - since > longest:
        unit = "hour" if granularity is da.Granularity.HOUR else "day"
        raise InvalidInputError(
            f"a report per {unit} covers at most {longest.days} days; narrow the window"
        )


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as error:  # "America": a folder
        raise InvalidInputError(
            f"unknown timezone {name!r} (an IANA name such as Asia/Shanghai)"
        ) from error
