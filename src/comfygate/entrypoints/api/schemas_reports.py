"""The usage report's JSON (``GET /v1/reports/usage``): the operator dashboard's data."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from comfygate.domain import analytics as da


class UsageStatsOut(BaseModel):
    calls: int = Field(description="settled jobs, whatever their outcome")
    succeeded: int
    failed: int
    canceled: int
    tokens_charged: int = Field(description="revenue: tokens captured")
    list_tokens: int = Field(description="what the succeeded jobs cost at list price")
    avg_tokens_per_call: float | None = Field(
        description="list tokens per succeeded call (null without one)"
    )
    inference_p50_s: float | None = Field(
        description="median inference time of succeeded jobs, estimated from time bins"
    )
    inference_p95_s: float | None
    gpu_seconds_per_token: float | None = Field(
        description="inference seconds per list token, over succeeded jobs that report a time"
    )


class CapabilityUsageOut(UsageStatsOut):
    capability: str


class SeriesOut(BaseModel):
    capability: str
    calls: list[int] = Field(description="one value per bucket, aligned with `buckets`")
    succeeded: list[int]
    failed: list[int]
    canceled: list[int]
    tokens_charged: list[int]
    list_tokens: list[int]


class FailureOut(BaseModel):
    code: str
    count: int


class AccountUsageOut(BaseModel):
    account_id: str
    name: str
    calls: int
    tokens_charged: int


class UsageAnalyticsOut(BaseModel):
    since: datetime
    until: datetime
    bucket: Literal["hour", "day"]
    timezone: str
    account_id: str | None
    totals: UsageStatsOut
    capabilities: list[CapabilityUsageOut]
    buckets: list[datetime] = Field(description="each bucket's start, in `timezone`")
    series: list[SeriesOut]
    heatmap: list[list[int]] = Field(
        description="calls by local weekday (0 is Monday) and hour: 7 rows of 24"
    )
    failures: list[FailureOut] = Field(description="failed jobs by code, most frequent first")
    top_accounts: list[AccountUsageOut] = Field(description="by tokens charged, at most 10")

    @classmethod
    def of(cls, report: da.UsageAnalytics, account_id: str | None) -> UsageAnalyticsOut:
        return cls(
            since=report.since,
            until=report.until,
            bucket=report.granularity.value,
            timezone=report.timezone,
            account_id=account_id,
            totals=UsageStatsOut(**asdict(report.totals)),
            capabilities=[
                CapabilityUsageOut(capability=c.capability, **asdict(c.stats))
                for c in report.capabilities
            ],
            buckets=list(report.buckets),
            series=[SeriesOut(**asdict(s)) for s in report.series],
            heatmap=[list(row) for row in report.heatmap],
            failures=[FailureOut(**asdict(f)) for f in report.failures],
            top_accounts=[AccountUsageOut(**asdict(a)) for a in report.top_accounts],
        )
