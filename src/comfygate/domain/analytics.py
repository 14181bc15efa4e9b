"""Usage analytics: what the operator's dashboard shows, from usage counted per hour.

The database counts settled jobs per UTC hour (per quarter hour for a zone offset by a
fraction of an hour: ``cell_minutes``), capability and outcome (``UsageCell``)
and their inference times per capability in fixed bins (``InferenceBins``); this module
turns those counts into a report in the operator's timezone: totals and figures per
capability, a dense series of hourly or daily buckets, and a heatmap of calls by local
weekday and hour. Counting happens where the rows are, so a report over a month of a
busy service reads a few thousand counts, not every job.

Every offset in use is a whole number of quarter hours, so a cell always lies in one
local hour, and one bucket.

Percentiles come from the bins as Prometheus's ``histogram_quantile`` estimates them:
by interpolation inside the bin the rank falls in, so within that bin's width.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from enum import StrEnum

SUCCEEDED, FAILED, CANCELED = "succeeded", "failed", "canceled"

INFERENCE_BOUNDS_S: tuple[float, ...] = (
    0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0,
    45.0, 60.0, 90.0, 120.0, 180.0, 300.0, 600.0,
)  # fmt: skip
"""Upper bounds of the inference-time bins: bin ``i`` counts times in
``(INFERENCE_BOUNDS_S[i - 1], INFERENCE_BOUNDS_S[i]]``; one more bin counts the rest."""

MAX_HOURLY_WINDOW = timedelta(days=31)
MAX_DAILY_WINDOW = timedelta(days=400)


class Granularity(StrEnum):
    HOUR = "hour"
    DAY = "day"


@dataclass(frozen=True, slots=True)
class UsageCell:
    """Settled jobs of one capability and outcome in one UTC hour (or quarter hour)."""

    start: datetime
    """The hour's (or quarter hour's) start, UTC."""
    capability: str
    outcome: str
    calls: int
    tokens_charged: int
    list_tokens: int
    inference_s: float
    """Summed over the jobs that report an inference time."""
    timed_list_tokens: int
    """The list tokens of those jobs: GPU seconds per token divides the two."""


@dataclass(frozen=True, slots=True)
class InferenceBins:
    """Succeeded jobs of one capability per inference-time bin (``INFERENCE_BOUNDS_S``)."""

    capability: str
    counts: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class FailureCount:
    code: str
    count: int


@dataclass(frozen=True, slots=True)
class AccountUsage:
    account_id: str
    name: str
    calls: int
    tokens_charged: int


@dataclass(frozen=True, slots=True)
class UsageStats:
    """What a set of settled jobs did and cost. Averages and percentiles are over the
    succeeded jobs (None when there are none): a failed job delivered nothing."""

    calls: int
    succeeded: int
    failed: int
    canceled: int
    tokens_charged: int
    list_tokens: int
    avg_tokens_per_call: float | None
    """List tokens per succeeded call: the price of what was delivered (a VIP's too)."""
    inference_p50_s: float | None
    inference_p95_s: float | None
    gpu_seconds_per_token: float | None


@dataclass(frozen=True, slots=True)
class CapabilityStats:
    capability: str
    stats: UsageStats


@dataclass(frozen=True, slots=True)
class Series:
    """One capability's counts per bucket, aligned with ``UsageAnalytics.buckets``."""

    capability: str
    calls: tuple[int, ...]
    succeeded: tuple[int, ...]
    failed: tuple[int, ...]
    canceled: tuple[int, ...]
    tokens_charged: tuple[int, ...]
    list_tokens: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class UsageAnalytics:
    since: datetime
    until: datetime
    granularity: Granularity
    timezone: str
    totals: UsageStats
    capabilities: tuple[CapabilityStats, ...]
    buckets: tuple[datetime, ...]
    """Every bucket's start in the report's timezone, from the one holding ``since``."""
    series: tuple[Series, ...]
    heatmap: tuple[tuple[int, ...], ...]
    """Calls by local weekday (0 is Monday) and hour."""
    failures: tuple[FailureCount, ...]
    top_accounts: tuple[AccountUsage, ...]


def percentile(counts: Sequence[int], q: float) -> float | None:
    """The ``q`` quantile (0 < q <= 1) of values counted in ``INFERENCE_BOUNDS_S`` bins,
    interpolated inside its bin; values past the last bound count as that bound."""
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, count in enumerate(counts):
        if count and seen + count >= rank:
            if i >= len(INFERENCE_BOUNDS_S):
                return INFERENCE_BOUNDS_S[-1]
            low = INFERENCE_BOUNDS_S[i - 1] if i else 0.0
            return low + (INFERENCE_BOUNDS_S[i] - low) * (rank - seen) / count
        seen += count
    return INFERENCE_BOUNDS_S[-1]  # unreachable: the counts sum to total


def bin_of(seconds: float) -> int:
    """The bin an inference time falls in (the database does the same in SQL)."""
    return bisect.bisect_left(INFERENCE_BOUNDS_S, seconds)


def bucket_start(instant: datetime, zone: tzinfo, granularity: Granularity) -> datetime:
    """The start, in ``zone``, of the hour or day holding ``instant``.

    An hour of a zone offset by a fraction of an hour starts at that fraction past the
    UTC hour; a day starts at local midnight (or, where a clock change skips midnight,
    the first instant of that date)."""
    local = instant.astimezone(zone)
    if granularity is Granularity.HOUR:
        return local.replace(minute=0, second=0, microsecond=0)
    return _day_start(local.date(), zone)


def cell_minutes(zone: tzinfo, since: datetime, until: datetime) -> int:
    """How finely the database must count for ``zone`` over ``[since, until)``: per
    hour (60) if the zone's offset is whole hours throughout, else per quarter hour."""
    at = since.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    while at < until:
        offset = at.astimezone(zone).utcoffset()
        if offset is not None and offset % timedelta(hours=1):
            return 15
        at += timedelta(hours=1)
    return 60


def buckets(
    since: datetime, until: datetime, zone: tzinfo, granularity: Granularity
) -> list[datetime]:
    """The starts of every bucket from the one holding ``since`` to before ``until``."""
    starts: list[datetime] = []
    start = bucket_start(since, zone, granularity)
    while start < until:
        starts.append(start)
        if granularity is Granularity.HOUR:
            start = (start.astimezone(UTC) + timedelta(hours=1)).astimezone(zone)
        else:
            start = _day_start(start.date() + timedelta(days=1), zone)
    return starts


def _day_start(day: date, zone: tzinfo) -> datetime:
    midnight = datetime(day.year, day.month, day.day, tzinfo=zone)
    # A wall time a clock change skipped maps past the gap and back again: take the
    # real instant, normalised, so a day of 23 hours starts when it really starts.
    return midnight.astimezone(UTC).astimezone(zone)


class _Tally:
    """Running sums of cells, by outcome."""

    __slots__ = ("by_outcome", "inference_s", "list_tokens", "timed_list_tokens", "tokens")

    def __init__(self) -> None:
        self.by_outcome = {SUCCEEDED: 0, FAILED: 0, CANCELED: 0}
        self.tokens = self.list_tokens = self.timed_list_tokens = 0
        self.inference_s = 0.0

    def add(self, cell: UsageCell) -> None:
        self.by_outcome[cell.outcome] = self.by_outcome.get(cell.outcome, 0) + cell.calls
        self.tokens += cell.tokens_charged
        if cell.outcome == SUCCEEDED:
            self.list_tokens += cell.list_tokens
            self.inference_s += cell.inference_s
            self.timed_list_tokens += cell.timed_list_tokens

    def stats(self, bins: Sequence[int]) -> UsageStats:
        succeeded = self.by_outcome[SUCCEEDED]
        return UsageStats(
            calls=sum(self.by_outcome.values()),
            succeeded=succeeded,
            failed=self.by_outcome[FAILED],
            canceled=self.by_outcome[CANCELED],
            tokens_charged=self.tokens,
            list_tokens=self.list_tokens,
            avg_tokens_per_call=round(self.list_tokens / succeeded, 2) if succeeded else None,
            inference_p50_s=_rounded(percentile(bins, 0.5)),
            inference_p95_s=_rounded(percentile(bins, 0.95)),
            gpu_seconds_per_token=(
                round(self.inference_s / self.timed_list_tokens, 4)
                if self.timed_list_tokens
                else None
            ),
        )


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def analyse(
    *,
    cells: Iterable[UsageCell],
    bins: Iterable[InferenceBins],
    failures: Sequence[FailureCount],
    top_accounts: Sequence[AccountUsage],
    since: datetime,
    until: datetime,
    zone: tzinfo,
    zone_name: str,
    granularity: Granularity,
) -> UsageAnalytics:
    """The report of the cells of ``[since, until)`` in ``zone``."""
    starts = buckets(since, until, zone, granularity)
    starts_utc = [start.astimezone(UTC) for start in starts]
    totals = _Tally()
    per_capability: dict[str, _Tally] = {}
    series: dict[str, dict[str, list[int]]] = {}
    heatmap = [[0] * 24 for _ in range(7)]
    for cell in cells:
        totals.add(cell)
        per_capability.setdefault(cell.capability, _Tally()).add(cell)
        # The bucket the cell starts in (a cell starting before the window, as one cut
        # mid-hour, holds jobs from ``since`` on: the first bucket's).
        i = max(bisect.bisect_right(starts_utc, cell.start) - 1, 0)
        _add_to_series(series, cell, i, len(starts))
        local = cell.start.astimezone(zone)
        heatmap[local.weekday()][local.hour] += cell.calls
    bins_of = {b.capability: b.counts for b in bins}
    all_bins = [sum(column) for column in zip(*bins_of.values(), strict=True)]
    return UsageAnalytics(
        since=since,
        until=until,
        granularity=granularity,
        timezone=zone_name,
        totals=totals.stats(all_bins),
        capabilities=tuple(
            CapabilityStats(name, tally.stats(bins_of.get(name, ())))
            for name, tally in sorted(per_capability.items())
        ),
        buckets=tuple(starts),
        series=tuple(_series(name, series[name]) for name in sorted(series)),
        heatmap=tuple(tuple(row) for row in heatmap),
        failures=tuple(failures),
        top_accounts=tuple(top_accounts),
    )


_SERIES_FIELDS = ("calls", SUCCEEDED, FAILED, CANCELED, "tokens_charged", "list_tokens")


def _add_to_series(
    series: dict[str, dict[str, list[int]]], cell: UsageCell, i: int, size: int
) -> None:
    lines = series.get(cell.capability)
    if lines is None:
        lines = series[cell.capability] = {name: [0] * size for name in _SERIES_FIELDS}
    lines["calls"][i] += cell.calls
    if cell.outcome in lines:
        lines[cell.outcome][i] += cell.calls
    lines["tokens_charged"][i] += cell.tokens_charged
    if cell.outcome == SUCCEEDED:
        lines["list_tokens"][i] += cell.list_tokens


def _series(capability: str, lines: Mapping[str, list[int]]) -> Series:
    return Series(capability, *(tuple(lines[name]) for name in _SERIES_FIELDS))
