"""What a query costs, as the databases count it: the instructions SQLite's VM runs,
and the rows PostgreSQL and MariaDB say they read. The same on every run, however
busy the machine is."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa


class SqliteSteps:
    """Counts the instructions SQLite's VM runs on ``engine``'s connections checked
    out from now on (in ``steps``, which a caller sets back to 0)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.steps = 0
        sa.event.listen(engine, "checkout", self._count)

    def _step(self) -> int:
        self.steps += 1
        return 0  # go on

    def _count(self, driver: Any, *_: Any) -> None:
        driver.set_progress_handler(self._step, 1)


def rows_touched(conn: sa.Connection, sql: str, params: Any) -> int:
    """Rows the server read to answer ``sql`` (PostgreSQL's and MariaDB's own
    accounts of running it: each plan node's rows, and those it filtered out)."""
    if conn.dialect.name == "postgresql":
        plan = conn.exec_driver_sql("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, params).scalar()
        nodes, total = [plan[0]["Plan"]], 0.0
        while nodes:
            node = nodes.pop()
            if "Scan" in node["Node Type"]:
                read = node["Actual Rows"] + node.get("Rows Removed by Filter", 0)
                total += read * node["Actual Loops"]
            nodes += node.get("Plans", [])
        return int(total)
    report = json.loads(conn.exec_driver_sql("ANALYZE FORMAT=JSON " + sql, params).scalar())
    return int(sum((t.get("r_rows") or 0) * (t.get("r_loops") or 0) for t in _tables(report)))


def _tables(report: Any) -> Iterator[dict[str, Any]]:
    if isinstance(report, dict):
        if "table_name" in report:
            yield report
        for value in report.values():
            yield from _tables(value)
    elif isinstance(report, list):
        for value in report:
            yield from _tables(value)
