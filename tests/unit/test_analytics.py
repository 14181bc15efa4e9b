"""The usage report's arithmetic (``domain.analytics``) and its service's checks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from comfygate.domain import analytics as da
from comfygate.domain.errors import InvalidInputError
from comfygate.services.reports import UsageReports, WindowCounts
from tests.fakes import FakeClock

SHANGHAI = ZoneInfo("Asia/Shanghai")
NEW_YORK = ZoneInfo("America/New_York")
T0 = datetime(2026, 11, 27, tzinfo=UTC)
BINS = len(da.INFERENCE_BOUNDS_S) + 1


def cell(hour: datetime, outcome: str = da.SUCCEEDED, calls: int = 1, **kw: object) -> da.UsageCell:
    values: dict[str, object] = {
        "capability": "colorize.person", "tokens_charged": 11 * calls, "list_tokens": 11 * calls,
        "inference_s": 2.0 * calls, "timed_list_tokens": 11 * calls,
    }  # fmt: skip
    values.update(kw)
    return da.UsageCell(start=hour, outcome=outcome, calls=calls, **values)  # type: ignore[arg-type]


def analyse(cells: list[da.UsageCell], **kw: object) -> da.UsageAnalytics:
    args: dict[str, object] = {
        "bins": [], "failures": [], "top_accounts": [], "since": T0,
        "until": T0 + timedelta(days=2), "zone": UTC, "zone_name": "UTC",
        "granularity": da.Granularity.DAY,
    }  # fmt: skip
    args.update(kw)
    return da.analyse(cells=cells, **args)  # type: ignore[arg-type]


def bins(**counts: int) -> tuple[int, ...]:
    """Bin counts by bound: ``bins(b1=3)`` is three times in (0.75, 1.0]."""
    out = [0] * BINS
    for name, n in counts.items():
        out[da.INFERENCE_BOUNDS_S.index(float(name[1:].replace("_", ".")))] = n
    return tuple(out)


class TestPercentile:
    def test_none_without_values(self) -> None:
        assert da.percentile([0] * BINS, 0.5) is None
        assert da.percentile([], 0.95) is None

    def test_interpolates_inside_the_bin(self) -> None:
        # four times in (1.0, 1.5]: the median is halfway through the bin
        assert da.percentile(bins(b1_5=4), 0.5) == pytest.approx(1.25)
        # one in (0, 0.1], three in (1.5, 2]: p50 is in the second bin, 1/6 of the way
        counts = list(bins(b2=3))
        counts[0] = 1
        assert da.percentile(counts, 0.5) == pytest.approx(1.5 + 0.5 * (2 - 1) / 3)
        assert da.percentile(counts, 0.25) == pytest.approx(0.1)

    def test_times_past_the_last_bound_are_that_bound(self) -> None:
        counts = [0] * BINS
        counts[-1] = 5
        assert da.percentile(counts, 0.95) == da.INFERENCE_BOUNDS_S[-1]

    def test_bins_close_on_their_bound(self) -> None:
        assert da.bin_of(0.1) == 0
        assert da.bin_of(0.1001) == 1
        assert da.bin_of(600.0) == BINS - 2
        assert da.bin_of(601.0) == BINS - 1


class TestBuckets:
    def test_hours_and_days_from_the_one_holding_since(self) -> None:
        since = T0 + timedelta(hours=5, minutes=30)
        hours = da.buckets(since, since + timedelta(hours=2), UTC, da.Granularity.HOUR)
        assert hours == [T0 + timedelta(hours=h) for h in (5, 6, 7)]
        days = da.buckets(since, since + timedelta(days=1), SHANGHAI, da.Granularity.DAY)
        assert days == [
            datetime(2026, 11, 27, tzinfo=SHANGHAI),
            datetime(2026, 11, 28, tzinfo=SHANGHAI),
        ]

    def test_a_day_of_23_hours_and_one_of_25(self) -> None:
        spring = da.buckets(
            datetime(2026, 3, 7, 12, tzinfo=NEW_YORK), datetime(2026, 3, 9, 12, tzinfo=NEW_YORK),
            NEW_YORK, da.Granularity.DAY,
        )  # fmt: skip
        assert [b.day for b in spring] == [7, 8, 9]
        assert spring[2].astimezone(UTC) - spring[1].astimezone(UTC) == timedelta(hours=23)
        hours = da.buckets(
            datetime(2026, 11, 1, 4, tzinfo=UTC), datetime(2026, 11, 1, 8, tzinfo=UTC),
            NEW_YORK, da.Granularity.HOUR,
        )  # fmt: skip
        # 01:00 comes twice (EDT, then EST): four distinct instants, an hour apart
        assert [h.hour for h in hours] == [0, 1, 1, 2]
        assert len({h.astimezone(UTC) for h in hours}) == 4

    def test_a_day_whose_midnight_was_skipped_starts_when_it_starts(self) -> None:
        santiago = ZoneInfo("America/Santiago")  # clocks go from 00:00 to 01:00
        start = da.bucket_start(datetime(2026, 9, 6, 12, tzinfo=UTC), santiago, da.Granularity.DAY)
        assert (start.hour, start.astimezone(UTC)) == (1, datetime(2026, 9, 6, 4, tzinfo=UTC))

    def test_half_hour_zones_start_hours_at_the_half_hour(self) -> None:
        kolkata = ZoneInfo("Asia/Kolkata")
        start = da.bucket_start(T0 + timedelta(minutes=50), kolkata, da.Granularity.HOUR)
        assert start.astimezone(UTC) == T0 + timedelta(minutes=30)


class TestAnalyse:
    def test_totals_per_capability_and_series(self) -> None:
        cells = [
            cell(T0 + timedelta(hours=1), calls=3),
            cell(T0 + timedelta(hours=2), da.FAILED, calls=2, tokens_charged=0),
            cell(T0 + timedelta(hours=25), capability="colorize.building", calls=1,
                 tokens_charged=0, list_tokens=15, timed_list_tokens=15, inference_s=6.0),
            cell(T0 + timedelta(hours=26), da.CANCELED, capability="colorize.building", calls=1,
                 tokens_charged=0, list_tokens=15),
        ]  # fmt: skip
        report = analyse(cells, bins=[
            da.InferenceBins("colorize.person", bins(b2=3)),
            da.InferenceBins("colorize.building", bins(b7_5=1)),
        ])  # fmt: skip
        t = report.totals
        assert (t.calls, t.succeeded, t.failed, t.canceled) == (7, 4, 2, 1)
        # failed and canceled jobs cost nothing and delivered nothing at list price
        assert (t.tokens_charged, t.list_tokens) == (33, 48)
        assert t.avg_tokens_per_call == 12.0
        assert t.gpu_seconds_per_token == round(12.0 / 48, 4)
        assert t.inference_p50_s == pytest.approx(1.5 + 0.5 * 2 / 3, abs=1e-3)
        building, person = report.capabilities
        assert building.capability == "colorize.building"
        assert (building.stats.calls, building.stats.tokens_charged) == (2, 0)
        assert building.stats.avg_tokens_per_call == 15.0  # a VIP's job: list price all the same
        assert building.stats.inference_p95_s == pytest.approx(5 + 2.5 * 0.95)
        assert person.stats.inference_p50_s == pytest.approx(1.75)
        assert report.buckets == (T0, T0 + timedelta(days=1))
        series = {s.capability: s for s in report.series}
        assert series["colorize.person"].calls == (5, 0)
        assert series["colorize.person"].failed == (2, 0)
        assert series["colorize.building"].calls == (0, 2)
        assert series["colorize.building"].canceled == (0, 1)
        assert series["colorize.building"].list_tokens == (0, 15)

    def test_no_jobs(self) -> None:
        report = analyse([])
        assert report.totals == da.UsageStats(0, 0, 0, 0, 0, 0, None, None, None, None)
        assert report.series == () and report.capabilities == ()
        assert len(report.buckets) == 2 and sum(map(sum, report.heatmap)) == 0

    def test_heatmap_is_local_weekday_and_hour(self) -> None:
        friday_late = datetime(2026, 11, 27, 23, tzinfo=UTC)  # Saturday 07:00 in Shanghai
        report = analyse([cell(friday_late, calls=4)], zone=SHANGHAI, zone_name="Asia/Shanghai")
        assert report.heatmap[5][7] == 4
        assert sum(map(sum, report.heatmap)) == 4
        assert report.series[0].calls == (0, 4, 0)  # the Shanghai days of 27, 28 and 29

    def test_an_hour_begun_before_the_window_counts_in_its_first_bucket(self) -> None:
        kolkata = ZoneInfo("Asia/Kolkata")
        since = T0 + timedelta(minutes=45)  # 06:15 in Kolkata; the first bucket is 06:00
        report = analyse(
            [cell(T0, calls=2)], since=since, until=since + timedelta(hours=3), zone=kolkata,
            zone_name="Asia/Kolkata", granularity=da.Granularity.HOUR,
        )  # fmt: skip
        assert report.series[0].calls[0] == 2


# Days around clock changes: New York's spring and autumn, Lord Howe's half-hour
# change (back to +10:30), Chatham's +12:45 to +13:45; and a plain week.
BASES = [datetime(2026, 3, 7, tzinfo=UTC), datetime(2026, 10, 31, tzinfo=UTC),
         datetime(2026, 4, 4, tzinfo=UTC), datetime(2026, 9, 26, tzinfo=UTC), T0]  # fmt: skip
ZONES = ["UTC", "Asia/Shanghai", "America/New_York", "Asia/Kolkata", "Asia/Kathmandu",
         "Australia/Lord_Howe", "Pacific/Chatham"]  # fmt: skip


@st.composite
def windows(draw: st.DrawFn) -> tuple[list[da.UsageCell], datetime, datetime, str, da.Granularity]:
    """A window of about three days at a clock change, and cells inside it as fine as
    the database would count them for the zone (``cell_minutes``)."""
    base, zone_name = draw(st.sampled_from(BASES)), draw(st.sampled_from(ZONES))
    since = base + timedelta(minutes=draw(st.integers(0, 59)))
    until = base + timedelta(hours=72)
    minutes = da.cell_minutes(ZoneInfo(zone_name), since, until)
    first = since.replace(minute=since.minute - since.minute % minutes)
    steps = int((until - first) / timedelta(minutes=minutes))
    cells = draw(st.lists(st.builds(
        cell,
        hour=st.integers(0, steps - 1).map(lambda k: first + k * timedelta(minutes=minutes)),
        outcome=st.sampled_from([da.SUCCEEDED, da.FAILED, da.CANCELED]),
        calls=st.integers(1, 50),
        capability=st.sampled_from(["colorize.person", "colorize.building", "denoise"]),
    ), max_size=40))  # fmt: skip
    return cells, since, until, zone_name, draw(st.sampled_from(list(da.Granularity)))


@settings(max_examples=300, deadline=None)
@given(windows())
def test_every_call_is_counted_once_in_the_bucket_and_hour_it_happened(
    window: tuple[list[da.UsageCell], datetime, datetime, str, da.Granularity],
) -> None:
    """Whatever the zone, clock changes included: each cell's calls land in the bucket
    whose span holds the cell (or the first, for one begun before the window), and in
    the heatmap at its local weekday and hour; totals count every call once."""
    cells, since, until, zone_name, granularity = window
    zone = ZoneInfo(zone_name)
    report = analyse(cells, since=since, until=until, zone=zone, zone_name=zone_name,
                     granularity=granularity)  # fmt: skip
    spans = [b.astimezone(UTC) for b in report.buckets] + [datetime.max.replace(tzinfo=UTC)]
    expected: dict[str, list[int]] = {}
    heat = [[0] * 24 for _ in range(7)]
    for c in cells:
        i = next(i for i in range(len(spans) - 1) if c.start < spans[i + 1])
        assert i == 0 or spans[i] <= c.start  # (a cell never straddles two buckets)
        expected.setdefault(c.capability, [0] * len(report.buckets))[i] += c.calls
        local = c.start.astimezone(zone)
        end = (c.start + timedelta(minutes=14)).astimezone(zone)
        assert (end.weekday(), end.hour) == (local.weekday(), local.hour) or (
            da.cell_minutes(zone, since, until) == 60
        )
        heat[local.weekday()][local.hour] += c.calls
    assert {s.capability: list(s.calls) for s in report.series} == expected
    assert [list(row) for row in report.heatmap] == heat
    calls = sum(c.calls for c in cells)
    assert report.totals.calls == sum(c.stats.calls for c in report.capabilities) == calls
    for s in report.series:
        sums = [a + b + c for a, b, c in zip(s.succeeded, s.failed, s.canceled, strict=True)]
        assert sums == list(s.calls)
    assert len({b.astimezone(UTC) for b in report.buckets}) == len(report.buckets)


class TestQuarterHourZones:
    def test_which_zones_need_quarter_hours(self) -> None:
        week = (T0, T0 + timedelta(days=7))
        assert da.cell_minutes(SHANGHAI, *week) == 60
        assert da.cell_minutes(NEW_YORK, *week) == 60
        assert da.cell_minutes(ZoneInfo("Asia/Kolkata"), *week) == 15
        assert da.cell_minutes(ZoneInfo("Asia/Kathmandu"), *week) == 15
        lord_howe = ZoneInfo("Australia/Lord_Howe")  # +11 in its summer, +10:30 after
        january = datetime(2026, 1, 10, tzinfo=UTC)
        assert da.cell_minutes(lord_howe, january, january + timedelta(days=7)) == 60
        april = datetime(2026, 4, 1, tzinfo=UTC)
        assert da.cell_minutes(lord_howe, april, april + timedelta(days=7)) == 15

    def test_india_counts_its_own_days_and_hours(self) -> None:
        """One job every ten minutes for three days of Kolkata time: 144 a day, and 6 an
        hour, whatever the window (per UTC hour, each day gained or lost half an hour)."""
        kolkata = ZoneInfo("Asia/Kolkata")
        start = datetime(2026, 5, 1, tzinfo=kolkata)
        jobs = [start + timedelta(minutes=10 * k) for k in range(3 * 144)]
        quarters: dict[datetime, int] = {}
        for at in jobs:
            utc = at.astimezone(UTC)
            key = utc.replace(minute=utc.minute - utc.minute % 15)
            quarters[key] = quarters.get(key, 0) + 1
        cells = [cell(key, calls=n) for key, n in quarters.items()]
        until = start + timedelta(days=3)
        assert da.cell_minutes(kolkata, start, until) == 15
        days = analyse(cells, since=start, until=until, zone=kolkata, zone_name="Asia/Kolkata")
        assert days.series[0].calls == (144, 144, 144)
        noon = datetime(2026, 5, 2, 15, tzinfo=kolkata)
        inside = [c for c in cells if noon <= c.start < noon + timedelta(hours=3)]
        hours = analyse(inside, since=noon, until=noon + timedelta(hours=3), zone=kolkata,
                        zone_name="Asia/Kolkata", granularity=da.Granularity.HOUR)  # fmt: skip
        assert hours.series[0].calls == (6, 6, 6)
        assert hours.heatmap[noon.weekday()][15:18] == (6, 6, 6)


class FakeCounts:
    """Counts nothing, and remembers what it was asked for."""

    def __init__(self) -> None:
        self.windows: list[tuple[str | None, datetime, datetime]] = []
        self.minutes: list[int] = []

    def count(
        self, *, account_id: str | None, since: datetime, until: datetime, minutes: int, top: int
    ) -> WindowCounts:
        self.windows.append((account_id, since, until))
        self.minutes.append(minutes)
        return WindowCounts([], [], [], [])


class TestUsageReports:
    def reports(self) -> tuple[UsageReports, FakeCounts, FakeClock]:
        counts, clock = FakeCounts(), FakeClock()
        zones = {"acct_ny": "America/New_York"}
        books = lambda account: zones.get(account or "", "Asia/Shanghai")  # noqa: E731
        return UsageReports(counts, clock, books), counts, clock

    def test_defaults_last_week_per_day_in_the_price_books_zone(self) -> None:
        reports, counts, clock = self.reports()
        report = reports.usage(account_id="acct_1")
        assert counts.windows == [("acct_1", clock.now() - timedelta(days=7), clock.now())]
        assert (report.granularity, report.timezone) == (da.Granularity.DAY, "Asia/Shanghai")

    def test_an_accounts_report_is_in_its_own_price_books_zone(self) -> None:
        reports, _, _ = self.reports()
        assert reports.usage(account_id="acct_ny").timezone == "America/New_York"
        assert reports.usage(account_id=None).timezone == "Asia/Shanghai"

    def test_the_database_counts_quarter_hours_for_a_half_hour_zone(self) -> None:
        reports, counts, _ = self.reports()
        reports.usage(account_id=None)
        reports.usage(account_id=None, timezone="Asia/Kolkata")
        assert counts.minutes == [60, 15]

    def test_two_days_or_less_are_per_hour(self) -> None:
        reports, _, clock = self.reports()
        report = reports.usage(account_id=None, since=clock.now() - timedelta(days=2))
        assert report.granularity is da.Granularity.HOUR and len(report.buckets) in (48, 49)

    @pytest.mark.parametrize(
        ("since", "until", "granularity", "message"),
        [
            (datetime(2026, 1, 1), None, None, "since needs a time zone"),
            (T0, T0, None, "since must be before until"),
            (T0, T0 + timedelta(days=32), da.Granularity.HOUR, "per hour covers at most 31 days"),
            (T0, T0 + timedelta(days=401), None, "per day covers at most 400 days"),
            (None, datetime(1, 1, 3, tzinfo=UTC), None, "until is out of range"),
            (
                datetime(9999, 12, 29, tzinfo=UTC),
                datetime(9999, 12, 30, 23, tzinfo=UTC),
                None,
                "until is out of range",
            ),
            (datetime(1, 1, 2, tzinfo=UTC), T0, None, "since is out of range"),
        ],
    )
    def test_bad_windows(
        self, since: datetime | None, until: datetime | None, granularity: da.Granularity | None,
        message: str,
    ) -> None:  # fmt: skip
        reports, counts, _ = self.reports()
        with pytest.raises(InvalidInputError, match=message):
            reports.usage(account_id=None, since=since, until=until or T0 + timedelta(days=1),
                          granularity=granularity)  # fmt: skip
        assert counts.windows == []

    @pytest.mark.parametrize(
        "name", ["Mars/Olympus", "../etc/passwd", "", "Asia/Shanghai\x00", "America", "Etc"]
    )
    def test_unknown_timezones(self, name: str) -> None:
        reports, counts, _ = self.reports()
        with pytest.raises(InvalidInputError, match="unknown timezone"):
            reports.usage(account_id=None, timezone=name or " ")
        assert counts.windows == []
