"""Response bodies of the job and usage routes (OpenAPI), and their converters.

Tokens are integers, times ISO-8601 UTC. ``engine`` is always shown so a ``preview``
result is never mistaken for DDColor.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from comfygate.services.job_ports import Job, UsageEvent, UsageTotals


class ImageOut(BaseModel):
    width: int
    height: int
    format: str
    size_bytes: int
    sha256: str
    md5: str


class ResultOut(BaseModel):
    url: str
    engine: str | None
    width: int | None
    height: int | None
    expires_at: datetime | None


class FailureOut(BaseModel):
    code: str
    reason: str | None


class JobOut(BaseModel):
    id: str
    state: str
    capability: str
    options: dict[str, Any]
    account_id: str
    user_id: str
    image: ImageOut
    tokens: int = Field(description="tokens on hold; what success charges (0 on unlimited plans)")
    list_tokens: int = Field(description="the list price, recorded even when nothing is taken")
    tokens_charged: int | None = Field(description="set when the job is settled")
    price_book_version: str
    breakdown: list[dict[str, str]]
    quote_id: str | None
    engine: str | None
    attempts: int
    failure: FailureOut | None
    result: ResultOut | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    settled_at: datetime | None
    events_url: str
    duplicate_of: str | None = Field(
        default=None, description="set when this submission returned an earlier job"
    )

    @classmethod
    def of(cls, job: Job, *, duplicate_of: str | None = None) -> JobOut:
        result = None
        if job.result_available:
            result = ResultOut(
                url=f"/v1/jobs/{job.id}/result",
                engine=job.engine,
                width=job.result_width,
                height=job.result_height,
                expires_at=job.result_expires_at,
            )
        failure = None
        if job.failure_code is not None:
            failure = FailureOut(code=job.failure_code, reason=job.failure_reason)
        return cls(
            id=job.id,
            state=job.state.value,
            capability=job.capability,
            options=dict(job.options),
            account_id=job.account_id,
            user_id=job.user_id,
            image=ImageOut(
                width=job.width,
                height=job.height,
                format=job.image_format,
                size_bytes=job.size_bytes,
                sha256=job.sha256,
                md5=job.md5,
            ),
            tokens=job.tokens,
            list_tokens=job.list_tokens,
            tokens_charged=job.tokens_charged,
            price_book_version=job.price_book_version,
            breakdown=[dict(line) for line in job.breakdown],
            quote_id=job.quote_id,
            engine=job.engine,
            attempts=job.attempts,
            failure=failure,
            result=result,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            settled_at=job.settled_at,
            events_url=f"/v1/jobs/{job.id}/events",
            duplicate_of=duplicate_of,
        )


class JobPageOut(BaseModel):
    items: list[JobOut]
    next_cursor: str | None


class ShareIn(BaseModel):
    expires_in_s: int | None = Field(
        default=None, gt=0, description="lifetime of the link (default: a day)"
    )


class ShareOut(BaseModel):
    url: str
    token: str
    expires_at: datetime


class UsageOut(BaseModel):
    id: str
    job_id: str
    account_id: str
    user_id: str
    capability: str
    outcome: str
    tokens_charged: int
    list_tokens: int
    width: int
    height: int
    megapixels: float
    queue_wait_s: float | None
    inference_s: float | None
    engine: str | None
    price_book_version: str
    gpu_peak_mb: int | None
    failure_code: str | None
    created_at: datetime

    @classmethod
    def of(cls, event: UsageEvent) -> UsageOut:
        fields = {name: getattr(event, name) for name in cls.model_fields if name != "megapixels"}
        return cls(**fields, megapixels=round(event.megapixels, 6))


class UsageTotalsOut(BaseModel):
    jobs: int = Field(description="settled jobs, whatever their outcome")
    succeeded: int
    tokens_charged: int
    list_tokens: int = Field(description="what the succeeded jobs cost at list price")

    @classmethod
    def of(cls, totals: UsageTotals) -> UsageTotalsOut:
        return cls(**asdict(totals))


class UsageReportOut(BaseModel):
    items: list[UsageOut]
    totals: UsageTotalsOut | None = Field(
        description="over the whole range, on the first page (null on the pages after)"
    )
    next_cursor: str | None


USAGE_CSV_COLUMNS = tuple(UsageOut.model_fields)
