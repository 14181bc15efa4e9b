"""The job store on SQL (SQLite, PostgreSQL, MariaDB) with SQLAlchemy Core.

State changes are one ``UPDATE ... WHERE id = ? AND state = ?``: whoever changes the
row first wins, the other sees zero rows and is told so. Reads use ``read_only`` so
on SQLite they never take the write lock. The audit entries of a job's hold and of
its settlement are written in the same transaction as the job row and the
settlement record.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import fields, replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from comfygate.adapters.db.base import newest_first
from comfygate.adapters.db.engine import read_only
from comfygate.adapters.db.sql_identity import INSERT_AUDIT, audit_row
from comfygate.adapters.db.tables_jobs import job_events, jobs, usage_events
from comfygate.adapters.db.tables_ledger import balances
from comfygate.domain.errors import (
    ConcurrencyLimitError,
    IdempotencyConflictError,
    JobNotFoundError,
)
from comfygate.domain.jobs import TERMINAL_STATES, JobState
from comfygate.services.audit import AuditEntry
from comfygate.services.job_ports import (
    DuplicateRule,
    DuplicateSubmission,
    Job,
    JobEvent,
    UsageEvent,
    UsageTotals,
)

_JSON_FIELDS = frozenset({"options", "breakdown", "result_metadata"})
_JOB_FIELDS = tuple(f.name for f in fields(Job))
_ACTIVE = (JobState.QUEUED.value, JobState.RUNNING.value)

# The submit path's statements, built once (SQLAlchemy then reuses their compiled form).
_GET = sa.select(jobs).where(jobs.c.id == sa.bindparam("job_id"))
_BY_KEY = sa.select(jobs).where(
    jobs.c.account_id == sa.bindparam("account_id"),
    jobs.c.idempotency_key == sa.bindparam("key"),
)
_BLOCKING = sa.or_(
    jobs.c.state.in_(_ACTIVE),
    sa.and_(
        jobs.c.state == JobState.SUCCEEDED.value,
        jobs.c.result_name.is_not(None),
        jobs.c.result_deleted_at.is_(None),
        jobs.c.created_at >= sa.bindparam("succeeded_since"),
    ),
)
# The duplicate rule as a query (domain.jobs.blocks_resubmission, and what the key may
# see): filtering after the limit let 20 newer jobs of other users hide a running one.
_DUPLICATES_IN_ACCOUNT = (
    sa.select(jobs)
    .where(
        jobs.c.account_id == sa.bindparam("account_id"),
        jobs.c.sha256 == sa.bindparam("sha256"),
        jobs.c.capability == sa.bindparam("capability"),
        jobs.c.options_key == sa.bindparam("options_key"),
        _BLOCKING,
    )
    .order_by(jobs.c.id.desc())
    .limit(20)
)
_DUPLICATES_OF_USER = _DUPLICATES_IN_ACCOUNT.where(jobs.c.user_id == sa.bindparam("user_id"))
_COUNT_ACTIVE = sa.select(sa.func.count()).where(
    jobs.c.account_id == sa.bindparam("account_id"), jobs.c.state.in_(_ACTIVE)
)
_LOCK_ACCOUNT = (
    sa.select(balances.c.account_id)
    .where(balances.c.account_id == sa.bindparam("account_id"))
    .with_for_update()
)
_INSERT_JOB = jobs.insert()
_INSERT_EVENTS = job_events.insert()
_INSERT_USAGE = usage_events.insert()
_SETTLE = (
    jobs.update()
    .where(jobs.c.id == sa.bindparam("b_id"), jobs.c.settled_at.is_(None))
    .values(tokens_charged=sa.bindparam("b_charged"), settled_at=sa.bindparam("b_at"))
)


@functools.cache
def _transition_statement(columns: frozenset[str]) -> sa.Update:
    """``UPDATE jobs SET <columns> WHERE id = ? AND state = ? AND attempts = ? AND
    runner IS NOT DISTINCT FROM ?``, one per column set (a handful: each lifecycle step
    always sets the same columns). The attempt and the runner are compared too: a
    gateway that lost a job (its lease ran out) and comes back finds it running again
    under another attempt or another gateway, and moves nothing."""
    return (
        jobs.update()
        .where(
            jobs.c.id == sa.bindparam("b_id"),
            jobs.c.state == sa.bindparam("b_state"),
            jobs.c.attempts == sa.bindparam("b_attempts"),
            jobs.c.runner.is_not_distinct_from(sa.bindparam("b_runner", type_=sa.String)),
        )
        .values({name: sa.bindparam(name) for name in sorted(columns)})
    )


def _job_row(job: Job) -> dict[str, Any]:
    return _encode({name: getattr(job, name) for name in _JOB_FIELDS})


def _encode(values: Mapping[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for name, value in values.items():
        if name in _JSON_FIELDS:
            row[name] = json.dumps(value if name != "breakdown" else list(value), sort_keys=True)
        elif isinstance(value, JobState):
            row[name] = value.value
        else:
            row[name] = value
    return row


def _job(row: sa.Row[Any]) -> Job:
    data = row._asdict()
    for name in _JSON_FIELDS:
        data[name] = json.loads(data[name])
    data["breakdown"] = tuple(data["breakdown"])
    data["state"] = JobState(data["state"])
    return Job(**data)


def _event(row: sa.Row[Any]) -> JobEvent:
    return JobEvent(row.job_id, row.seq, row.kind, json.loads(row.data), row.created_at)


def _usage(row: sa.Row[Any]) -> UsageEvent:
    return UsageEvent(**row._asdict())


def _usage_filter(
    query: sa.Select[Any],
    account_id: str | None,
    user_id: str | None,
    since: datetime | None,
    until: datetime | None,
) -> sa.Select[Any]:
    u = usage_events.c
    if account_id is not None:
        query = query.where(u.account_id == account_id)
    if user_id is not None:
        query = query.where(u.user_id == user_id)
    if since is not None:
        query = query.where(u.created_at >= since)
    if until is not None:
        query = query.where(u.created_at < until)
    return query


def _in(row_account: str, account_id: str | None) -> bool:
    """Whether a row listed by its user's index is in the account asked for: always,
    as a user's rows are all in its account (checked all the same, not by the query,
    where the account's index would be taken)."""
    return account_id is None or row_account == account_id


class SqlJobStore:
    """``JobStore`` on a SQLAlchemy engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._dialect = engine.dialect

    def _read(
        self, query: sa.Executable, params: Mapping[str, Any] | None = None
    ) -> list[sa.Row[Any]]:
        with read_only(self.engine.connect()) as conn:
            return list(conn.execute(query, dict(params or {})))

    def add(
        self,
        job: Job,
        first_event: JobEvent,
        audit: AuditEntry | None = None,
        *,
        max_active: int | None = None,
        duplicate_rule: DuplicateRule | None = None,
    ) -> Job:
        try:
            with self.engine.begin() as conn:
                if max_active is not None or duplicate_rule is not None:
                    # The account's balance row, as the ledger locks it (on SQLite the
                    # write transaction itself): one gateway's submission at a time sees
                    # the jobs the others stored.
                    conn.execute(_LOCK_ACCOUNT, {"account_id": job.account_id})
                if duplicate_rule is not None:
                    query, params = _duplicates_query(
                        duplicate_rule, account_id=job.account_id, sha256=job.sha256,
                        capability=job.capability, options_key=job.options_key,
                    )  # fmt: skip
                    earlier = [_job(r) for r in conn.execute(query, params)]
                    if (duplicate := duplicate_rule.duplicate_of(earlier)) is not None:
                        raise DuplicateSubmission(duplicate)
                if max_active is not None:
                    active = conn.execute(_COUNT_ACTIVE, {"account_id": job.account_id})
                    if (count := int(active.scalar_one())) >= max_active:
                        raise ConcurrencyLimitError(
                            f"this plan runs at most {max_active} jobs at a time; wait for "
                            "one to finish",
                            limit=max_active,
                            active=count,
                        )
                conn.execute(_INSERT_JOB, _job_row(job))
                conn.execute(_INSERT_EVENTS, _event_row(first_event))
                if audit is not None:
                    conn.execute(INSERT_AUDIT, audit_row(audit))
        except sa.exc.IntegrityError:
            if job.idempotency_key is not None:
                existing = self.by_idempotency_key(job.account_id, job.idempotency_key)
                if existing is not None:
                    raise IdempotencyConflictError(
                        "another request took this idempotency key",
                        idempotency_key=job.idempotency_key,
                        job_id=existing.id,
                    ) from None
            raise
        return job

    def get(self, job_id: str) -> Job | None:
        rows = self._read(_GET, {"job_id": job_id})
        return _job(rows[0]) if rows else None

    def by_idempotency_key(self, account_id: str, key: str) -> Job | None:
        rows = self._read(_BY_KEY, {"account_id": account_id, "key": key})
        return _job(rows[0]) if rows else None

    def find_duplicates(
        self,
        *,
        account_id: str,
        sha256: str,
        capability: str,
        options_key: str,
        rule: DuplicateRule,
    ) -> list[Job]:
        query, params = _duplicates_query(
            rule, account_id=account_id, sha256=sha256, capability=capability,
            options_key=options_key,
        )  # fmt: skip
        return [_job(r) for r in self._read(query, params)]

    def count_active(self, account_id: str) -> int:
        return int(self._read(_COUNT_ACTIVE, {"account_id": account_id})[0][0])

    def transition(
        self,
        job: Job,
        *,
        target: JobState,
        changes: Mapping[str, Any],
        events: Sequence[JobEvent] = (),
    ) -> Job | None:
        values = _encode({**changes, "state": target})
        statement = _transition_statement(frozenset(values))
        with self.engine.connect() as conn, conn.begin() as txn:
            compared = {
                "b_id": job.id,
                "b_state": job.state.value,
                "b_attempts": job.attempts,
                "b_runner": job.runner,
            }
            result = conn.execute(statement, {**values, **compared})
            if result.rowcount != 1:
                txn.rollback()
                return None
            if events:
                conn.execute(_INSERT_EVENTS, [_event_row(e) for e in events])
        return replace(job, state=target, **changes)

    def record_settlement(
        self,
        job: Job,
        *,
        tokens_charged: int,
        settled_at: datetime,
        usage: UsageEvent,
        events: Sequence[JobEvent],
        audit: AuditEntry | None = None,
    ) -> tuple[Job, bool]:
        params = {"b_id": job.id, "b_charged": tokens_charged, "b_at": settled_at}
        with self.engine.begin() as conn:
            first = conn.execute(_SETTLE, params).rowcount == 1
            if first:
                conn.execute(_INSERT_USAGE, _usage_row(usage))
                conn.execute(_INSERT_EVENTS, [_event_row(e) for e in events])
                if audit is not None:
                    conn.execute(INSERT_AUDIT, audit_row(audit))
            row = None if first else conn.execute(_GET, {"job_id": job.id}).first()
        if first:
            return replace(job, tokens_charged=tokens_charged, settled_at=settled_at), True
        if row is None:
            raise JobNotFoundError(f"no job {job.id}", job_id=job.id)
        return _job(row), False

    def list_jobs(
        self,
        *,
        account_id: str | None,
        user_id: str | None,
        state: JobState | None,
        limit: int,
        before: str | None,
    ) -> list[Job]:
        j = jobs.c
        # The keys of the index a page is a range of. A user's jobs are all in its
        # account: with the account as a filter too, the planners took the account's
        # index and read its other users' jobs.
        keys: list[tuple[sa.ColumnElement[Any], Any]] = []
        if user_id is not None:  # (user_id, id), (user_id, state, id)
            keys.append((j.user_id, user_id))
        elif account_id is not None:  # (account_id, id), (account_id, state, id)
            keys.append((j.account_id, account_id))
        if state is not None:  # or (state, id)
            keys.append((j.state, state.value))
        query = sa.select(jobs)
        page = newest_first(query, j.id, keys, before=before, limit=limit, dialect=self._dialect)
        return [job for job in map(_job, self._read(page)) if _in(job.account_id, account_id)]

    def in_states(self, states: Sequence[JobState]) -> list[Job]:
        query = (
            sa.select(jobs)
            .where(jobs.c.state.in_([s.value for s in states]))
            .order_by(jobs.c.created_at, jobs.c.id)
        )
        return [_job(r) for r in self._read(query)]

    def unsettled(self) -> list[Job]:
        query = (
            sa.select(jobs)
            .where(
                jobs.c.state.in_([s.value for s in TERMINAL_STATES]),
                jobs.c.settled_at.is_(None),
            )
            .order_by(jobs.c.created_at, jobs.c.id)
        )
        return [_job(r) for r in self._read(query)]

    def renew_leases(self, job_ids: Collection[str], *, runner: str, until: datetime) -> set[str]:
        held = sa.and_(
            jobs.c.id.in_(sorted(job_ids)),
            jobs.c.runner == runner,
            jobs.c.state == JobState.RUNNING.value,
        )
        with self.engine.begin() as conn:
            conn.execute(jobs.update().where(held).values(lease_until=until))
            return set(conn.execute(sa.select(jobs.c.id).where(held)).scalars())

    def reachable(self) -> bool:
        try:
            self._read(sa.select(sa.literal(1)))
        except sa.exc.SQLAlchemyError:
            return False
        return True

    def results_due(self, *, before: datetime, limit: int) -> list[Job]:
        query = (
            sa.select(jobs)
            .where(
                jobs.c.result_expires_at < before,
                jobs.c.result_deleted_at.is_(None),
            )
            .order_by(jobs.c.result_expires_at)
            .limit(limit)
        )
        return [_job(r) for r in self._read(query)]

    def mark_result_deleted(self, job_id: str, *, at: datetime) -> None:
        with self.engine.begin() as conn:
            conn.execute(jobs.update().where(jobs.c.id == job_id).values(result_deleted_at=at))

    def add_events(self, events: Sequence[JobEvent]) -> None:
        with self.engine.begin() as conn:
            conn.execute(_INSERT_EVENTS, [_event_row(e) for e in events])

    def events(self, job_id: str, *, after_seq: int) -> list[JobEvent]:
        query = (
            sa.select(job_events)
            .where(job_events.c.job_id == job_id, job_events.c.seq > after_seq)
            .order_by(job_events.c.seq)
        )
        return [_event(r) for r in self._read(query)]

    def last_event_seq(self, job_id: str) -> int:
        query = sa.select(sa.func.max(job_events.c.seq)).where(job_events.c.job_id == job_id)
        value = self._read(query)[0][0]
        return int(value or 0)

    def usage(
        self,
        *,
        account_id: str | None,
        user_id: str | None,
        since: datetime | None,
        until: datetime | None,
        limit: int,
        before: str | None,
    ) -> list[UsageEvent]:
        u = usage_events.c
        # A range of (user_id, id) or (account_id, id), as ``list_jobs``'s.
        keys = [(u.user_id, user_id)] if user_id is not None else []
        if not keys and account_id is not None:
            keys = [(u.account_id, account_id)]
        query = _usage_filter(sa.select(usage_events), None, None, since, until)
        page = newest_first(query, u.id, keys, before=before, limit=limit, dialect=self._dialect)
        return [e for e in map(_usage, self._read(page)) if _in(e.account_id, account_id)]

    def usage_totals(
        self,
        *,
        account_id: str | None,
        user_id: str | None,
        since: datetime | None,
        until: datetime | None,
    ) -> UsageTotals:
        u = usage_events.c
        succeeded = u.outcome == JobState.SUCCEEDED.value
        query = sa.select(
            sa.func.count(),
            sa.func.coalesce(sa.func.sum(sa.case((succeeded, 1), else_=0)), 0),
            sa.func.coalesce(sa.func.sum(u.tokens_charged), 0),
            sa.func.coalesce(sa.func.sum(sa.case((succeeded, u.list_tokens), else_=0)), 0),
        )
        row: Any = self._read(_usage_filter(query, account_id, user_id, since, until))[0]
        return UsageTotals(*(int(value) for value in row))


def _event_row(event: JobEvent) -> dict[str, Any]:
    return {
        "job_id": event.job_id,
        "seq": event.seq,
        "kind": event.kind,
        "data": json.dumps(dict(event.data), sort_keys=True, default=str),
        "created_at": event.created_at,
    }


def _usage_row(usage: UsageEvent) -> dict[str, Any]:
    return {f.name: getattr(usage, f.name) for f in fields(UsageEvent)}


def _duplicates_query(
    rule: DuplicateRule, *, account_id: str, sha256: str, capability: str, options_key: str
) -> tuple[sa.Select[Any], dict[str, Any]]:
    params: dict[str, Any] = {
        "account_id": account_id,
        "sha256": sha256,
        "capability": capability,
        "options_key": options_key,
        "succeeded_since": rule.succeeded_since,
    }
    if rule.user_id is None:
        return _DUPLICATES_IN_ACCOUNT, params
    return _DUPLICATES_OF_USER, {**params, "user_id": rule.user_id}
