"""``comfygate report usage``: the dashboard's report in a terminal, or its JSON (the
same document ``GET /v1/reports/usage`` answers)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import click

from comfygate.domain.analytics import Granularity
from comfygate.entrypoints.api.schemas_reports import UsageAnalyticsOut
from comfygate.entrypoints.cli import app, emit
from comfygate.entrypoints.cli_options import iso_time

_COLUMNS = (
    ("calls", "calls", "{}"),
    ("ok", "succeeded", "{}"),
    ("failed", "failed", "{}"),
    ("canceled", "canceled", "{}"),
    ("tokens", "tokens_charged", "{}"),
    ("avg/call", "avg_tokens_per_call", "{:.2f}"),
    ("p50 s", "inference_p50_s", "{:.2f}"),
    ("p95 s", "inference_p95_s", "{:.2f}"),
    ("GPU s/token", "gpu_seconds_per_token", "{:.4f}"),
)


@click.group("report")
def report_group() -> None:
    """Reports over settled jobs."""


@report_group.command("usage")
@click.option("--since", callback=iso_time, help="ISO-8601 with offset; default: 7 days ago.")
@click.option("--until", callback=iso_time, help="ISO-8601 with offset; default: now.")
@click.option(
    "--bucket",
    type=click.Choice([g.value for g in Granularity]),
    help="Default: hour for two days or less, else day.",
)
@click.option("--tz", help="IANA timezone; default: the default price book's.")
@click.option("--account", help="One account (default: every account).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the API's document).")
@click.pass_context
def usage_cmd(
    ctx: click.Context,
    since: datetime | None,
    until: datetime | None,
    bucket: str | None,
    tz: str | None,
    account: str | None,
    as_json: bool,
) -> None:
    """Calls, outcomes, tokens, inference times and GPU seconds per token, by
    capability; the top accounts and failures. ``--json`` adds the buckets and the
    weekday-hour heatmap."""
    container = app(ctx)
    if account is not None:
        container.accounts.require(account)
    report = container.reports.usage(
        account_id=account,
        since=since,
        until=until,
        granularity=Granularity(bucket) if bucket else None,
        timezone=tz,
    )
    emit(
        UsageAnalyticsOut.of(report, account).model_dump(mode="json"),
        as_json=as_json,
        human=_describe,
    )


def _describe(report: dict[str, Any]) -> str:
    lines = [
        f"usage from {report['since']} to {report['until']}, "
        f"per {report['bucket']} in {report['timezone']}",
        f"{'capability':24}" + "".join(f"{title:>{_width(title)}}" for title, _, _ in _COLUMNS),
    ]
    rows = [*report["capabilities"], {"capability": "all", **report["totals"]}]
    for row in rows:
        cells = ("-" if row[key] is None else shape.format(row[key]) for _, key, shape in _COLUMNS)
        lines.append(f"{row['capability']:24}" + "".join(f"{cell:>12}" for cell in cells))
    if report["top_accounts"]:
        lines.append("top accounts (tokens charged):")
        lines += [
            f"  {a['name'][:30]:30} {a['account_id']:32} {a['calls']:>8} calls "
            f"{a['tokens_charged']:>10} tokens"
            for a in report["top_accounts"]
        ]
    if report["failures"]:
        lines.append(
            "failures: " + ", ".join(f"{f['code']} {f['count']}" for f in report["failures"])
        )
    return "\n".join(lines)


def _width(title: str) -> int:
    return max(9, len(title) + 2)


def register(group: click.Group) -> None:
    group.add_command(report_group)
