"""Pages of jobs, usage and the audit log cost the page, not the history behind it.

An account with years of finished jobs is listed as fast as a new one: each list's
filter has an index ending with the id, so a page is a range of it. Counted in
SQLite's VM instructions (the same on every run, however busy the machine), for an
account with 20 rows against one with 2,000, on a database where other accounts
have more.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from comfygate import bootstrap
from comfygate.adapters.db.sql_identity import SqlAuditStore
from comfygate.adapters.db.sql_jobs import SqlJobStore
from comfygate.adapters.db.tables_identity import audit_log
from comfygate.adapters.db.tables_jobs import jobs, usage_events
from comfygate.adapters.db.tables_ledger import ledger_transactions
from comfygate.config import Settings
from comfygate.domain.ids import new_id
from comfygate.domain.jobs import JobState
from comfygate.services.job_ports import DuplicateRule
from tests.integration.query_costs import SqliteSteps, rows_touched

LONG, SHORT = 4000, 400
PAGE = 10
USERS = 4  # per account
T0 = datetime(2025, 1, 1, tzinfo=UTC)


@dataclass
class History:
    engine: sa.Engine
    short: str
    long: str
    users: dict[str, list[str]]  # account: its users
    counter: SqliteSteps

    def cost(self, read: Callable[[], list[Any]]) -> int:
        """VM instructions ``read`` runs; it must return a whole page."""
        self.counter.steps = 0
        assert len(read()) == PAGE
        return self.counter.steps


def _job(account_id: str, users: list[str], i: int, n: int) -> dict[str, Any]:
    """The ``i``th of an account's ``n`` finished jobs; its result deleted long ago,
    but for one in 200 still kept. The first user made the oldest quarter, and has
    not been back since; the others share the rest. One in five of the oldest eighth
    failed, and none since: a page of failed jobs is deep in the history."""
    at = T0 + timedelta(minutes=i)
    kept = i % 200 == 0
    failed = i < n // 8 and i % 5 == 0
    state = JobState.FAILED if failed else JobState.SUCCEEDED
    user = users[0] if i < n // 4 else users[1 + i % 3]
    return {
        "id": new_id("job"), "account_id": account_id, "user_id": user,
        "capability": "colorize.person", "options": "{}", "options_key": "x",
        "state": state.value, "tier": 0, "sha256": f"{i:064x}",
        "md5": f"{i:032x}", "size_bytes": 1000, "image_format": "png", "width": 64,
        "height": 48, "tokens": 10, "list_tokens": 10, "hold_id": new_id("hold"),
        "hold_expires_at": at, "price_book_version": "v1", "breakdown": "[]",
        "quote_id": None, "idempotency_key": None, "input_name": "in.png", "attempts": 1,
        "created_at": at, "settled_at": at, "tokens_charged": 10,
        "result_expires_at": at + timedelta(days=30),
        "result_deleted_at": None if kept else at + timedelta(days=30),
        "result_metadata": "{}",
    }  # fmt: skip


def _usage(job: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": new_id("use"), "job_id": job["id"], "account_id": job["account_id"],
        "user_id": job["user_id"], "capability": job["capability"], "outcome": "succeeded",
        "tokens_charged": 10, "list_tokens": 10, "width": 64, "height": 48,
        "price_book_version": "v1", "created_at": job["created_at"],
    }  # fmt: skip


def _audit(account_id: str, i: int) -> dict[str, Any]:
    return {
        "id": new_id("aud"), "at": T0 + timedelta(minutes=i), "actor": "operator",
        "actor_account_id": None, "action": "grant", "target": account_id,
        "account_id": account_id, "details": "{}",
    }  # fmt: skip


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[History]:
    path: Path = tmp_path_factory.mktemp("history") / "history.db"
    container = bootstrap.build(Settings(database_url=f"sqlite:///{path}"))
    container.upgrade_database()
    sizes = {"short": SHORT, "long": LONG, "other": 3 * LONG}
    accounts = {name: container.ledger.open_account(name=name) for name in sizes}
    users = {account: [new_id("user") for _ in range(USERS)] for account in accounts.values()}
    with container.engine.begin() as conn:
        for name, n in sizes.items():
            account = accounts[name]
            rows = [_job(account, users[account], i, n) for i in range(n)]
            conn.execute(jobs.insert(), rows)
            conn.execute(usage_events.insert(), [_usage(row) for row in rows])
            conn.execute(audit_log.insert(), [_audit(account, i) for i in range(n)])
    container.close()
    engine = container.engine
    yield History(engine, accounts["short"], accounts["long"], users, SqliteSteps(engine))
    engine.dispose()


def _pages(h: History) -> dict[str, Callable[[str], Callable[[], list[Any]]]]:
    store, audit = SqlJobStore(h.engine), SqlAuditStore(h.engine)

    def jobs_of(account: str, **kw: Any) -> Callable[[], list[Any]]:
        args = {"account_id": account, "user_id": None, "state": None, "before": None} | kw
        return lambda: store.list_jobs(limit=PAGE, **args)

    def usage_of(account: str, **kw: Any) -> Callable[[], list[Any]]:
        args = {"account_id": account, "user_id": None, "since": None, "until": None} | kw
        return lambda: store.usage(limit=PAGE, before=None, **args)

    return {
        "jobs": jobs_of,
        "jobs in a state": lambda a: jobs_of(a, state=JobState.SUCCEEDED),
        "jobs in a rare state": lambda a: jobs_of(a, state=JobState.FAILED),
        "a user's jobs": lambda a: jobs_of(a, user_id=h.users[a][0]),
        "a user's jobs in a rare state": lambda a: jobs_of(
            a, user_id=h.users[a][0], state=JobState.FAILED
        ),
        "jobs before a cursor": lambda a: jobs_of(
            a,
            before=store.list_jobs(
                account_id=a, user_id=None, state=None, limit=SHORT // 2, before=None
            )[-1].id,
        ),
        "usage": usage_of,
        "a user's usage": lambda a: usage_of(a, user_id=h.users[a][0]),
        "the audit log": lambda a: lambda: audit.entries(account_id=a, limit=PAGE, before=None),
    }


PAGES = [
    "jobs",
    "jobs in a state",
    "jobs in a rare state",
    "a user's jobs",
    "a user's jobs in a rare state",
    "jobs before a cursor",
    "usage",
    "a user's usage",
    "the audit log",
]


@pytest.mark.parametrize("page", PAGES)
def test_a_page_costs_the_same_for_a_long_history(history: History, page: str) -> None:
    """Within half again what the short account's page costs, and that within three
    times its plain page of jobs (where a page read every other account's rows
    too, both would cost alike)."""
    read = _pages(history)[page]
    short = history.cost(read(history.short))
    assert history.cost(read(history.long)) < 1.5 * short
    assert short < 3 * history.cost(_pages(history)["jobs"](history.short))


def test_an_operator_s_page_of_one_state_costs_a_page(history: History) -> None:
    """All accounts' failed jobs (old ones, among 16,400): a range of (state, id)."""
    store = SqlJobStore(history.engine)
    cost = history.cost(
        lambda: store.list_jobs(
            account_id=None, user_id=None, state=JobState.FAILED, limit=PAGE, before=None
        )
    )
    assert cost < 1.5 * history.cost(_pages(history)["jobs"](history.short))


def test_result_retention_reads_the_results_still_kept(history: History) -> None:
    """Expired results to delete are found among those kept, not among every result
    ever deleted: 82 kept of 16,400, and the sweep reads about as much as its page."""
    store = SqlJobStore(history.engine)
    history.counter.steps = 0
    due = store.results_due(before=T0 + timedelta(days=400), limit=100)
    assert len(due) == 82 and all(job.result_deleted_at is None for job in due)
    assert history.counter.steps < 82 * 300


def test_the_duplicate_check_reads_the_image_s_jobs_only(history: History) -> None:
    store = SqlJobStore(history.engine)
    cost = {}
    for account in (history.short, history.long):
        history.counter.steps = 0
        found = store.find_duplicates(
            account_id=account, sha256=f"{7:064x}", capability="colorize.person",
            options_key="x", rule=DuplicateRule(None, T0, lambda earlier: None),
        )  # fmt: skip
        assert found == []  # its one job succeeded and its result is gone: blocks nothing
        cost[account] = history.counter.steps
    assert cost[history.long] < 1.5 * cost[history.short]


def test_pages_read_their_rows_only_on_postgresql_and_mariadb(database_url: str) -> None:
    """An account quiet while others wrote 14,000 rows since, and pages deep into a
    busy account's history: each is a range of its index. With the keys as
    equalities, PostgreSQL walked the primary key (or another index ending with the
    id) back past the others' rows (14,050 read for a page of the quiet account's
    audit log), and MariaDB read every row newer than the page (4,100)."""
    if database_url.startswith("sqlite"):
        pytest.skip("SQLite: counted in VM instructions by the tests above")
    c = bootstrap.build(Settings(database_url=database_url))
    c.upgrade_database()
    quiet, busy, other = (c.ledger.open_account(name=n) for n in ("quiet", "busy", "other"))
    order = [quiet] * 2500 + [busy, other] * 6000 + [other] * 2000
    n = {account: order.count(account) for account in (quiet, busy, other)}
    users = {account: [new_id("user") for _ in range(USERS)] for account in n}
    seen = dict.fromkeys(n, 0)
    txns, job_rows = [], []
    for account in order:
        txns.append(
            {"id": new_id("txn"), "kind": "grant", "account_id": account, "idempotency_key": None,
             "request_hash": None, "hold_id": None, "created_at": T0, "memo": "{}", "result": "{}"}
        )  # fmt: skip
        job_rows.append(_job(account, users[account], seen[account], n[account]))
        seen[account] += 1
    with c.engine.begin() as conn:
        conn.execute(ledger_transactions.insert(), txns)
        conn.execute(audit_log.insert(), [_audit(a, i) for i, a in enumerate(order)])
        conn.execute(jobs.insert(), job_rows)
        conn.execute(usage_events.insert(), [_usage(row) for row in job_rows])
    with c.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for table in ("ledger_transactions", "audit_log", "jobs", "usage_events"):
            conn.exec_driver_sql(("ANALYZE " if conn.dialect.name == "postgresql" else
                                  "ANALYZE TABLE ") + table)  # fmt: skip
    deep = [r["id"] for r in txns if r["account_id"] == busy][-4000]
    deep_job = [r["id"] for r in job_rows if r["account_id"] == busy][-4000]
    sent: list[tuple[str, Any]] = []
    sa.event.listen(c.engine, "before_cursor_execute", lambda *a: sent.append((a[2], a[3])))
    audit, store = SqlAuditStore(c.engine), SqlJobStore(c.engine)

    def jobs_of(account: str, **kw: Any) -> Callable[[], list[Any]]:
        args = {"account_id": account, "user_id": None, "state": None, "before": None} | kw
        return lambda: store.list_jobs(limit=50, **args)

    failed, first_user = JobState.FAILED, users[quiet][0]
    pages = {
        "quiet statement": lambda: c.ledger_store.statement(quiet, limit=50, before=None),
        "deep statement": lambda: c.ledger_store.statement(busy, limit=50, before=deep),
        "quiet audit": lambda: audit.entries(account_id=quiet, limit=50, before=None),
        "quiet jobs": jobs_of(quiet),
        "deep jobs": jobs_of(busy, before=deep_job),
        "busy failed jobs": jobs_of(busy, state=failed),
        "a user's failed jobs": jobs_of(quiet, user_id=first_user, state=failed),
        "failed jobs": jobs_of(None, state=failed),  # type: ignore[arg-type]
        "quiet usage": lambda: store.usage(account_id=quiet, user_id=None, since=None,
                                           until=None, limit=50, before=None),
        "a user's usage": lambda: store.usage(account_id=quiet, user_id=first_user, since=None,
                                              until=None, limit=50, before=None),
    }  # fmt: skip
    try:
        touched = {}
        for name, read in pages.items():
            sent.clear()
            assert len(read()) == 50, name
            with c.engine.connect() as conn:
                touched[name] = rows_touched(conn, *sent[-1])
        assert all(n <= 4 * 50 for n in touched.values()), touched
    finally:
        c.close()
