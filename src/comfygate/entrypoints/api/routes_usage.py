"""``GET /v1/usage``: one line per settled job, with totals; ``?format=csv`` exports.
``GET /v1/reports/usage``: the same jobs counted per capability, hour or day, weekday
and hour, failure and account: the operator dashboard's data.

A user sees its own jobs, an admin its account's, an operator any account
(``?account_id=``) or all of them. Reports are for admins and operators.
"""

from __future__ import annotations

import csv
import functools
import io
from datetime import datetime
from typing import Annotated, Literal

import anyio.to_thread
from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, Response

from comfygate.domain.analytics import Granularity
from comfygate.domain.errors import InvalidInputError
from comfygate.domain.instants import in_range
from comfygate.entrypoints.api.deps import (
    AdminDep,
    ContainerDep,
    CursorQuery,
    PrincipalDep,
    check_account_filter,
)
from comfygate.entrypoints.api.schemas_jobs import (
    USAGE_CSV_COLUMNS,
    UsageOut,
    UsageReportOut,
    UsageTotalsOut,
)
from comfygate.entrypoints.api.schemas_reports import UsageAnalyticsOut
from comfygate.services.job_queries import UsageReport

router = APIRouter(prefix="/v1", tags=["usage"])


def _aware(value: datetime | None, name: str) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise InvalidInputError(f"{name} needs a time zone (e.g. 2024-05-01T00:00:00Z)")
    if not in_range(value):  # converted to UTC, it would overflow
        raise InvalidInputError(f"{name} is out of range: {value.isoformat()}")
    return value


def _csv(report: UsageReport) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=USAGE_CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for event in report.events:
        writer.writerow(UsageOut.of(event).model_dump(mode="json"))
    return out.getvalue()


@router.get(
    "/usage",
    response_model=UsageReportOut,
    summary="Usage per settled job and totals (JSON, or CSV with ?format=csv)",
    responses={200: {"content": {"text/csv": {}}}},
)
async def usage(
    container: ContainerDep,
    principal: PrincipalDep,
    cursor: CursorQuery,
    since: Annotated[datetime | None, Query(description="inclusive, ISO-8601 with zone")] = None,
    until: Annotated[datetime | None, Query(description="exclusive, ISO-8601 with zone")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    account_id: Annotated[str | None, Query(max_length=40)] = None,
    format: Annotated[Literal["json", "csv"], Query()] = "json",
) -> Response:
    read = functools.partial(
        container.jobs.queries.usage,
        principal=principal,
        account_id=account_id,
        since=_aware(since, "since"),
        until=_aware(until, "until"),
        limit=limit,
        cursor=cursor,
        totals=format == "json",
    )
    render = _csv_response if format == "csv" else _json_response

    def answer() -> Response:  # off the event loop: 10,000 lines take a quarter second
        check_account_filter(container, principal, account_id)
        return render(read())

    return await anyio.to_thread.run_sync(answer)


def _csv_response(report: UsageReport) -> Response:
    headers = {"Content-Disposition": 'attachment; filename="usage.csv"'}
    if report.next_cursor:
        headers["X-Next-Cursor"] = report.next_cursor
    return Response(_csv(report), media_type="text/csv; charset=utf-8", headers=headers)


def _json_response(report: UsageReport) -> Response:
    body = UsageReportOut(
        items=[UsageOut.of(e) for e in report.events],
        totals=None if report.totals is None else UsageTotalsOut.of(report.totals),
        next_cursor=report.next_cursor,
    )
    return JSONResponse(body.model_dump(mode="json"))


@router.get(
    "/reports/usage",
    response_model=UsageAnalyticsOut,
    summary="Usage counted per capability, hour or day, weekday and hour (admins, operators)",
)
async def usage_report(
    container: ContainerDep,
    principal: AdminDep,
    since: Annotated[
        datetime | None, Query(description="inclusive, ISO-8601 with zone; default: 7 days ago")
    ] = None,
    until: Annotated[
        datetime | None, Query(description="exclusive, ISO-8601 with zone; default: now")
    ] = None,
    bucket: Annotated[
        Granularity | None, Query(description="default: hour for two days or less, else day")
    ] = None,
    tz: Annotated[
        str | None,
        Query(max_length=64, description="IANA zone; default: the default price book's"),
    ] = None,
    account_id: Annotated[
        str | None, Query(max_length=40, description="operators: one account (default: all)")
    ] = None,
) -> UsageAnalyticsOut:
    scope = account_id if principal.is_operator else principal.account_id

    def answer() -> UsageAnalyticsOut:  # off the event loop: the database counts
        check_account_filter(container, principal, account_id)
        report = container.reports.usage(
            account_id=scope,
            since=_aware(since, "since"),
            until=_aware(until, "until"),
            granularity=bucket,
            timezone=tz,
        )
        return UsageAnalyticsOut.of(report, scope)

    return await anyio.to_thread.run_sync(answer)
