"""``UsageCounts`` on SQL: settled jobs counted by the database, per UTC hour (or
quarter hour).

Every query is a ``GROUP BY`` over one range of ``usage_events.created_at`` (or of
``account_id, created_at`` for one account), so a month of a busy service comes back
as a few thousand counts. The hour is cut from the stored UTC instant as text,
``YYYY-MM-DD HH`` (and the quarter, ``:0`` to ``:3``), the one expression that
differs per backend (``_utc_hour``, ``_utc_quarter``).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import FunctionElement

from comfygate.adapters.db.engine import read_only
from comfygate.adapters.db.tables_jobs import jobs, usage_events
from comfygate.adapters.db.tables_ledger import accounts
from comfygate.domain import analytics as da
from comfygate.domain.cost_model import CostSample
from comfygate.domain.pricing_options import JsonScalar
from comfygate.services.reports import WindowCounts

_u = usage_events.c
_SUCCEEDED = _u.outcome == da.SUCCEEDED
_TIMED = _u.inference_s.is_not(None)


class _utc_hour(FunctionElement[str]):
    """The hour of a stored UTC instant as ``YYYY-MM-DD HH``."""

    type = sa.String()
    inherit_cache = True


@compiles(_utc_hour, "sqlite")
def _utc_hour_sqlite(element: _utc_hour, compiler: SQLCompiler, **kw: Any) -> str:
    # SQLite keeps instants as text, "YYYY-MM-DD HH:MM:SS.ffffff" (base.UtcDateTime).
    return f"substr({compiler.process(element.clauses, **kw)}, 1, 13)"


@compiles(_utc_hour, "postgresql")
def _utc_hour_postgresql(element: _utc_hour, compiler: SQLCompiler, **kw: Any) -> str:
    return f"to_char({compiler.process(element.clauses, **kw)}, 'YYYY-MM-DD HH24')"


@compiles(_utc_hour, "mysql")
def _utc_hour_mysql(element: _utc_hour, compiler: SQLCompiler, **kw: Any) -> str:
    return f"date_format({compiler.process(element.clauses, **kw)}, '%%Y-%%m-%%d %%H')"


class _utc_quarter(FunctionElement[str]):
    """The quarter hour of a stored UTC instant as ``YYYY-MM-DD HH:Q``, Q from 0 to 3."""

    type = sa.String()
    inherit_cache = True


@compiles(_utc_quarter, "sqlite")
def _utc_quarter_sqlite(element: _utc_quarter, compiler: SQLCompiler, **kw: Any) -> str:
    column = compiler.process(element.clauses, **kw)
    return f"substr({column}, 1, 13) || ':' || (CAST(substr({column}, 15, 2) AS INTEGER) / 15)"


@compiles(_utc_quarter, "postgresql")
def _utc_quarter_postgresql(element: _utc_quarter, compiler: SQLCompiler, **kw: Any) -> str:
    column = compiler.process(element.clauses, **kw)
    return (
        f"to_char({column}, 'YYYY-MM-DD HH24') || ':' "
        f"|| (CAST(extract(minute FROM {column}) AS INTEGER) / 15)"
    )


@compiles(_utc_quarter, "mysql")
def _utc_quarter_mysql(element: _utc_quarter, compiler: SQLCompiler, **kw: Any) -> str:
    column = compiler.process(element.clauses, **kw)
    return f"concat(date_format({column}, '%%Y-%%m-%%d %%H'), ':', minute({column}) DIV 15)"


def _cell_start(text: str) -> datetime:
    hour, _, quarter = text.partition(":")
    start = datetime.strptime(hour, "%Y-%m-%d %H").replace(tzinfo=UTC)
    return start + timedelta(minutes=15 * int(quarter)) if quarter else start


def _bin() -> sa.ColumnElement[int]:
    """The bin of ``inference_s`` (``domain.analytics.bin_of`` in SQL)."""
    bounds = da.INFERENCE_BOUNDS_S
    whens = [(_u.inference_s <= bound, i) for i, bound in enumerate(bounds)]
    return sa.case(*whens, else_=len(bounds))


def _sum(value: Any) -> sa.ColumnElement[Any]:
    return sa.func.coalesce(sa.func.sum(value), 0)


class SqlUsageCounts:
    """``services.reports.UsageCounts`` on ``usage_events``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def count(
        self, *, account_id: str | None, since: datetime, until: datetime, minutes: int, top: int
    ) -> WindowCounts:
        window = _window(account_id, since, until)
        with self._snapshot() as conn:
            return WindowCounts(
                cells=_cells(conn, window, minutes),
                bins=_inference_bins(conn, window),
                failures=_failures(conn, window, top),
                top_accounts=_top_accounts(conn, window, top),
            )

    @contextmanager
    def _snapshot(self) -> Iterator[sa.Connection]:
        """One read-only transaction that sees one state of the database throughout,
        so that a job settled meanwhile is in every count or in none: a SQLite read
        transaction does; PostgreSQL and MariaDB need REPEATABLE READ for it."""
        conn = read_only(self.engine.connect())
        if conn.dialect.name != "sqlite":
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn, conn.begin():
            yield conn


def _cells(conn: sa.Connection, window: Window, minutes: int) -> list[da.UsageCell]:
    cut = _utc_hour if minutes == 60 else _utc_quarter
    start = cut(_u.created_at).label("start")
    query = (
        sa.select(
            start,
            _u.capability,
            _u.outcome,
            sa.func.count(),
            _sum(_u.tokens_charged),
            _sum(_u.list_tokens),
            _sum(_u.inference_s),
            _sum(sa.case((_TIMED, _u.list_tokens), else_=0)),
        )
        .where(*window)
        .group_by(start, _u.capability, _u.outcome)
    )
    return [
        da.UsageCell(
            _cell_start(row[0]),
            row[1],
            row[2],
            int(row[3]),
            int(row[4]),
            int(row[5]),
            float(row[6]),
            int(row[7]),
        )
        for row in conn.execute(query)
    ]


def _inference_bins(conn: sa.Connection, window: Window) -> list[da.InferenceBins]:
    which = _bin().label("bin")
    query = (
        sa.select(_u.capability, which, sa.func.count())
        .where(_SUCCEEDED, _TIMED, *window)
        .group_by(_u.capability, which)
    )
    counts: dict[str, list[int]] = defaultdict(lambda: [0] * (len(da.INFERENCE_BOUNDS_S) + 1))
    for capability, i, count in conn.execute(query):
        counts[capability][int(i)] += int(count)
    return [da.InferenceBins(name, tuple(bins)) for name, bins in sorted(counts.items())]


def _failures(conn: sa.Connection, window: Window, limit: int) -> list[da.FailureCount]:
    code = sa.func.coalesce(_u.failure_code, "unknown").label("code")
    count = sa.func.count().label("n")
    query = (
        sa.select(code, count)
        .where(_u.outcome == da.FAILED, *window)
        .group_by(code)
        .order_by(count.desc(), code)
        .limit(limit)
    )
    return [da.FailureCount(row[0], int(row[1])) for row in conn.execute(query)]


def _top_accounts(conn: sa.Connection, window: Window, limit: int) -> list[da.AccountUsage]:
    tokens = _sum(_u.tokens_charged).label("tokens")
    calls = sa.func.count().label("calls")
    by_account = (
        sa.select(_u.account_id, calls, tokens).where(*window).group_by(_u.account_id).subquery()
    )
    row = by_account.c
    query = (
        sa.select(row.account_id, accounts.c.name, row.calls, row.tokens)
        .join(accounts, accounts.c.id == row.account_id)
        .order_by(row.tokens.desc(), row.calls.desc(), row.account_id)
        .limit(limit)
    )
    return [da.AccountUsage(r[0], r[1], int(r[2]), int(r[3])) for r in conn.execute(query)]


Window = list[sa.ColumnElement[bool]]


def _window(
    account_id: str | None, since: datetime, until: datetime
) -> list[sa.ColumnElement[bool]]:
    """The conditions of the jobs settled in ``[since, until)`` (in one account)."""
    window = [_u.created_at >= since, _u.created_at < until]
    return window if account_id is None else [*window, _u.account_id == account_id]


class SqlCostSamples:
    """``services.cost_fit.CostSamples``: succeeded, timed jobs of ``usage_events``, with
    the options recorded on their ``jobs`` row, newest first."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def samples(
        self,
        *,
        since: datetime,
        until: datetime,
        engines: Sequence[str] | None,
        exclude_engines: Sequence[str],
        limit: int,
        account_id: str | None = None,
    ) -> list[CostSample]:
        which = (
            _u.engine.in_(engines)
            if engines is not None
            else sa.or_(_u.engine.is_(None), _u.engine.not_in(exclude_engines))
        )
        query = (
            sa.select(
                _u.capability,
                _u.width,
                _u.height,
                _u.inference_s,
                _u.gpu_peak_mb,
                jobs.c.options,
            )
            .join(jobs, jobs.c.id == _u.job_id)
            .where(
                _u.created_at >= since,
                _u.created_at < until,
                _SUCCEEDED,
                _TIMED,
                which,
                *([] if account_id is None else [_u.account_id == account_id]),
            )
            .order_by(_u.created_at.desc())
            .limit(limit)
        )
        with read_only(self.engine.connect()) as conn:
            rows = conn.execute(query).all()
        parsed: dict[str, dict[str, JsonScalar]] = {}  # jobs share a few sets of options

        def options(text: str) -> dict[str, JsonScalar]:
            found = parsed.get(text)
            if found is None:
                found = parsed[text] = json.loads(text)
            return found

        return [
            CostSample(
                capability=row.capability,
                width=row.width,
                height=row.height,
                options=options(row.options),
                seconds=float(row.inference_s),
                gpu_peak_mb=row.gpu_peak_mb,
            )
            for row in rows
        ]
