"""The SQL job store on every backend: compare-and-set states, settle-once, the
idempotency key constraint, events in order, usage filters and totals."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from comfygate.adapters.db import migrate
from comfygate.adapters.db.engine import create_engine
from comfygate.adapters.db.sql_jobs import SqlJobStore
from comfygate.adapters.db.sql_ledger import SqlLedgerStore
from comfygate.domain.errors import IdempotencyConflictError
from comfygate.domain.ids import new_id
from comfygate.domain.jobs import JobState
from comfygate.services.job_ports import (
    DuplicateRule,
    DuplicateSubmission,
    Job,
    JobEvent,
    UsageEvent,
)

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@pytest.fixture
def store(database_url: str) -> Iterator[tuple[SqlJobStore, str]]:
    engine = create_engine(database_url)
    migrate.upgrade(engine)
    account_id = new_id("acct")
    SqlLedgerStore(engine).create_account(account_id=account_id, name="t", created_at=T0)
    yield SqlJobStore(engine), account_id
    engine.dispose()


def _job(account_id: str, **changes: object) -> Job:
    job = Job(
        id=new_id("job"),
        account_id=account_id,
        user_id="user_1",
        capability="colorize.person",
        options={"upscale": 1},
        options_key="k1",
        state=JobState.QUEUED,
        tier=1,
        sha256="ab" * 32,
        md5="cd" * 16,
        size_bytes=123,
        image_format="png",
        width=800,
        height=600,
        tokens=11,
        list_tokens=11,
        hold_id=new_id("hold"),
        hold_expires_at=T0 + timedelta(hours=1),
        price_book_version="default-1",
        breakdown=({"step": "base", "amount": "10", "note": ""},),
        quote_id=None,
        idempotency_key=None,
        input_name="input.png",
        created_at=T0,
    )
    return replace(job, **changes)  # type: ignore[arg-type]


def _first(job: Job) -> JobEvent:
    return JobEvent(job.id, 1, "queued", {"tokens": job.tokens}, job.created_at)


def _usage(job: Job, charged: int) -> UsageEvent:
    return UsageEvent(
        new_id("use"), job.id, job.account_id, job.user_id, job.capability, "succeeded",
        charged, job.list_tokens, job.width, job.height, 0.5, 1.5, "preview",
        job.price_book_version, None, None, T0,
    )  # fmt: skip


def test_round_trip_and_compare_and_set(store: tuple[SqlJobStore, str]) -> None:
    jobs, account_id = store
    new = _job(account_id)
    job = jobs.add(new, _first(new))
    assert jobs.get(job.id) == job
    moved = jobs.transition(job, target=JobState.RUNNING, changes={"attempts": 1})
    assert moved is not None and moved.state is JobState.RUNNING and moved.attempts == 1
    again = jobs.transition(job, target=JobState.CANCELED, changes={})
    assert again is None
    assert jobs.get(job.id) == moved


def test_racing_state_changes_have_one_winner(store: tuple[SqlJobStore, str]) -> None:
    jobs, account_id = store
    job = _job(account_id)
    jobs.add(job, _first(job))
    barrier = threading.Barrier(8)
    wins: list[JobState] = []

    def race(target: JobState) -> None:
        barrier.wait()
        if jobs.transition(job, target=target, changes={}):
            wins.append(target)

    threads = [
        threading.Thread(target=race, args=(JobState.RUNNING if i % 2 else JobState.CANCELED,))
        for i in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1
    stored = jobs.get(job.id)
    assert stored is not None and stored.state is wins[0]


def test_settlement_is_recorded_once(store: tuple[SqlJobStore, str]) -> None:
    jobs, account_id = store
    job = _job(account_id, state=JobState.SUCCEEDED)
    jobs.add(job, _first(job))
    assert jobs.unsettled() == [jobs.get(job.id)]
    done = JobEvent(job.id, 2, "succeeded", {"tokens_charged": 11}, T0)
    settled, first = jobs.record_settlement(
        job, tokens_charged=11, settled_at=T0, usage=_usage(job, 11), events=[done]
    )
    assert first and settled.tokens_charged == 11 and settled.settled_at == T0
    replay, first_again = jobs.record_settlement(
        job,
        tokens_charged=99,
        settled_at=T0 + timedelta(seconds=1),
        usage=_usage(job, 99),
        events=[replace(done, seq=3)],
    )
    assert not first_again and replay.tokens_charged == 11
    assert jobs.unsettled() == []
    totals = jobs.usage_totals(account_id=account_id, user_id=None, since=None, until=None)
    assert (totals.jobs, totals.tokens_charged) == (1, 11)
    assert [e.kind for e in jobs.events(job.id, after_seq=0)] == ["queued", "succeeded"]


def test_idempotency_key_is_unique_per_account(store: tuple[SqlJobStore, str]) -> None:
    jobs, account_id = store
    first = _job(account_id, idempotency_key="k-1")
    jobs.add(first, _first(first))
    clash = _job(account_id, idempotency_key="k-1")
    with pytest.raises(IdempotencyConflictError):
        jobs.add(clash, _first(clash))
    assert jobs.get(clash.id) is None
    assert jobs.by_idempotency_key(account_id, "k-1") == first


def _rule(user_id: str | None, succeeded_since: datetime = T0) -> DuplicateRule:
    """The store's selection only: the first job it returns is the duplicate."""
    return DuplicateRule(user_id, succeeded_since, lambda earlier: next(iter(earlier), None))


def test_duplicates_are_the_blocking_jobs_the_key_can_see(store: tuple[SqlJobStore, str]) -> None:
    jobs, account_id = store
    alice = _job(account_id, user_id="user_alice")
    jobs.add(alice, _first(alice))
    later = T0 + timedelta(seconds=1)
    for n in range(25):  # newer: other users, and Alice's own jobs that block nothing
        other = _job(account_id, user_id=f"user_{n}", created_at=later)
        jobs.add(other, _first(other))
    for state in (JobState.FAILED, JobState.CANCELED):
        ended = _job(account_id, user_id="user_alice", state=state, created_at=later)
        jobs.add(ended, _first(ended))
    kept = dict(result_name="out.png", created_at=later)
    old = _job(account_id, user_id="user_alice", state=JobState.SUCCEEDED, **kept)
    jobs.add(old, _first(old))
    key = {"account_id": account_id, "sha256": alice.sha256, "capability": alice.capability,
           "options_key": alice.options_key}  # fmt: skip

    found = jobs.find_duplicates(**key, rule=_rule("user_alice", later + timedelta(seconds=1)))

    assert [j.id for j in found] == [alice.id]
    assert [j.id for j in jobs.find_duplicates(**key, rule=_rule("user_alice", later))] == [
        old.id,
        alice.id,
    ]
    assert len(jobs.find_duplicates(**key, rule=_rule(None))) == 20  # newest first, capped
    repeat = _job(account_id, user_id="user_alice", created_at=later)
    with pytest.raises(DuplicateSubmission) as caught:
        jobs.add(repeat, _first(repeat), duplicate_rule=_rule("user_alice", later))
    assert caught.value.job.id == old.id
    assert jobs.get(repeat.id) is None


def test_duplicates_listing_and_usage_filters(store: tuple[SqlJobStore, str]) -> None:
    jobs, account_id = store
    older = _job(account_id)
    newer = _job(account_id, created_at=T0 + timedelta(seconds=5))
    other_opts = _job(account_id, options_key="k2")
    for job in (older, newer, other_opts):
        jobs.add(job, _first(job))
    found = jobs.find_duplicates(
        account_id=account_id, sha256=older.sha256, capability=older.capability, options_key="k1",
        rule=_rule(None),
    )  # fmt: skip
    assert [j.id for j in found] == [newer.id, older.id]
    assert jobs.count_active(account_id) == 3
    page = jobs.list_jobs(account_id=account_id, user_id=None, state=None, limit=2, before=None)
    assert [j.id for j in page] == [other_opts.id, newer.id]
    rest = jobs.list_jobs(
        account_id=account_id, user_id=None, state=None, limit=2, before=page[-1].id
    )
    assert [j.id for j in rest] == [older.id]
    assert jobs.last_event_seq(older.id) == 1
    assert (
        jobs.usage(account_id=account_id, user_id=None, since=T0, until=None, limit=5, before=None)
        == []
    )
