"""Restart recovery on every backend: what a dead process left behind is finished by
the next one, never lost and never charged twice.

A "crash" is simulated by leaving the database as a killed process would (a job
marked running by a dispatcher that is gone, a terminal job not yet settled, a
capture written but not recorded on the job) and starting a new dispatcher on it.
"""

from __future__ import annotations

import asyncio
import io
import tempfile
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import example, given, settings
from hypothesis import strategies as st

from comfygate import bootstrap
from comfygate.adapters.db.tables_jobs import jobs
from comfygate.adapters.images import receive_upload_sync
from comfygate.domain.jobs import JobState
from comfygate.services.identity_types import Principal, Role
from comfygate.services.job_ports import Job
from comfygate.services.jobs import SubmitRequest
from comfygate.services.recovery import settle_unsettled
from tests.fakes import FakeClock
from tests.jobs_support import CAPABILITY, FakeEngine, build, png_bytes

GRANT = 100
PRICE = 10


@pytest.fixture
def world(database_url: str, tmp_path: Path) -> Iterator[tuple[bootstrap.Container, str]]:
    container = build(database_url, tmp_path / "data", engines=[FakeEngine()])
    account_id = container.ledger.open_account(name="crashy")
    container.ledger.grant(
        account_id=account_id, amount=GRANT, source="promotion", idempotency_key="g"
    )
    yield container, account_id
    container.close()


def _submit(container: bootstrap.Container, account_id: str, seed: int) -> Job:
    upload = receive_upload_sync(
        io.BytesIO(png_bytes(seed=seed)), dest_dir=container.jobs.upload_dir, max_bytes=10**6
    )
    principal = Principal(account_id, "user_x", Role.ADMIN, "key_x")
    return container.jobs.submission.submit(
        principal=principal, upload=upload, request=SubmitRequest(CAPABILITY)
    ).job


def _restart(container: bootstrap.Container, tmp_path: Path) -> tuple[FakeEngine, list[Job]]:
    """A new process on the same database: start its dispatcher, let it drain."""
    engine = FakeEngine()
    fresh = build(container.settings.database_url, tmp_path / "data", engines=[engine])

    async def scenario() -> list[Job]:
        dispatcher = fresh.jobs.dispatcher
        await dispatcher.start()
        store = fresh.jobs.store
        while await asyncio.to_thread(store.in_states, [JobState.QUEUED, JobState.RUNNING]):
            await asyncio.sleep(0.02)
        while await asyncio.to_thread(store.unsettled):
            await asyncio.sleep(0.02)
        await dispatcher.stop()
        return await asyncio.to_thread(
            store.list_jobs, account_id=None, user_id=None, state=None, limit=100, before=None
        )

    try:
        return engine, asyncio.run(scenario())
    finally:
        fresh.close()


def _assert_money(container: bootstrap.Container, account_id: str, succeeded: int) -> None:
    balance = container.accounts.balance(account_id=account_id)
    assert (balance.available, balance.held) == (GRANT - PRICE * succeeded, 0)
    assert container.accounts.reconcile().ok


def test_queued_jobs_run_after_a_restart(
    world: tuple[bootstrap.Container, str], tmp_path: Path
) -> None:
    container, account_id = world
    jobs = [_submit(container, account_id, seed) for seed in range(3)]
    engine, after = _restart(container, tmp_path)
    assert sorted(engine.started) == sorted(j.id for j in jobs)
    assert {j.state for j in after} == {JobState.SUCCEEDED}
    _assert_money(container, account_id, succeeded=3)


def test_a_job_lost_mid_run_is_retried_once_and_charged_once(
    world: tuple[bootstrap.Container, str], tmp_path: Path
) -> None:
    container, account_id = world
    job = _submit(container, account_id, 1)
    assert container.jobs.lifecycle.start(job) is not None  # then the process dies
    engine, after = _restart(container, tmp_path)
    (done,) = after
    assert engine.started == [job.id]
    assert done.state is JobState.SUCCEEDED and done.attempts == 2
    assert done.tokens_charged == PRICE
    _assert_money(container, account_id, succeeded=1)


def test_a_job_lost_on_its_retry_fails_with_its_hold_released(
    world: tuple[bootstrap.Container, str], tmp_path: Path
) -> None:
    container, account_id = world
    lifecycle = container.jobs.lifecycle
    job = _submit(container, account_id, 1)
    running = lifecycle.start(job)
    assert running is not None
    queued = lifecycle.requeue(running, reason="worker_lost")  # the first restart
    assert queued is not None
    assert lifecycle.start(queued) is not None  # and the retry dies too
    engine, after = _restart(container, tmp_path)
    (done,) = after
    assert engine.started == []
    assert done.state is JobState.FAILED and done.failure_code == "worker_lost"
    assert done.tokens_charged == 0 and done.settled_at is not None
    _assert_money(container, account_id, succeeded=0)


def test_a_terminal_job_left_unsettled_is_settled_on_start(
    world: tuple[bootstrap.Container, str], tmp_path: Path
) -> None:
    container, account_id = world
    store = container.jobs.store
    won = _submit(container, account_id, 1)
    lost = _submit(container, account_id, 2)
    for job, target in ((won, JobState.SUCCEEDED), (lost, JobState.FAILED)):
        running = container.jobs.lifecycle.start(job)
        assert running is not None
        # The state was committed, then the process died before touching the ledger.
        assert store.transition(running, target=target, changes={})
    # For the success, the capture even went through before the crash.
    container.ledger.capture(hold_id=won.hold_id, idempotency_key=f"{won.id}:capture")
    engine, after = _restart(container, tmp_path)
    states = {j.id: (j.state, j.tokens_charged) for j in after}
    assert states == {won.id: (JobState.SUCCEEDED, PRICE), lost.id: (JobState.FAILED, 0)}
    assert engine.started == []
    _assert_money(container, account_id, succeeded=1)
    # Settling again (another restart) changes nothing.
    _restart(container, tmp_path)
    _assert_money(container, account_id, succeeded=1)
    usage = store.usage(
        account_id=account_id, user_id=None, since=None, until=None, limit=10, before=None
    )
    assert sorted(u.job_id for u in usage) == sorted([won.id, lost.id])


def test_housekeeping_settles_a_job_whose_settlement_failed_in_this_process(
    world: tuple[bootstrap.Container, str],
) -> None:
    """A settlement that raised (say the database went away mid-capture) leaves a
    terminal, unsettled job; the running gateway's housekeeping settles it, once."""
    container, account_id = world
    store, lifecycle = container.jobs.store, container.jobs.lifecycle
    job = _submit(container, account_id, 1)
    running = lifecycle.start(job)
    assert running is not None
    assert store.transition(running, target=JobState.SUCCEEDED, changes={})
    chores = container.jobs.dispatcher._housekeeping
    sweep = next(c for c in chores if getattr(c, "func", None) is settle_unsettled)
    assert sweep() == 1
    assert sweep() == 0  # settled: nothing left, nothing charged twice
    _assert_money(container, account_id, succeeded=1)


def test_jobs_that_cannot_be_settled_do_not_stop_the_others_or_the_start(
    world: tuple[bootstrap.Container, str],
) -> None:
    """Terminal jobs whose hold is gone (the database edited by hand, say) raised from
    the settlement sweep: every job after them stayed unsettled, and the gateway could
    not start. They are retried each sweep, however many; the others settle; whoever
    follows one hears its end once (its stream waited forever); an error of another
    kind while the database answers is the job's too; one while it does not raises."""
    container, account_id = world
    store, lifecycle = container.jobs.store, container.jobs.lifecycle
    ended = []
    for seed in range(7):
        running = lifecycle.start(_submit(container, account_id, seed))
        assert running is not None
        assert store.transition(running, target=JobState.FAILED, changes={})
        ended.append(running)
    broken = [job.id for job in ended[:4]]  # the oldest: at the head of every sweep
    with container.engine.begin() as conn:
        conn.execute(jobs.update().where(jobs.c.id.in_(broken)).values(hold_id="hold_gone"))
    settle = lifecycle.settle

    def stuck(job: Job) -> Job:  # a settlement that fails for a reason of its own
        if job.id == ended[4].id:
            raise sa.exc.IntegrityError("INSERT INTO usage_events", {}, Exception("dup"))
        return settle(job)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(lifecycle, "settle", stuck)
        assert settle_unsettled(store=store, lifecycle=lifecycle) == 2
        assert settle_unsettled(store=store, lifecycle=lifecycle) == 0
    assert sorted(j.id for j in store.unsettled()) == sorted([*broken, ended[4].id])
    for job_id in broken:
        events = container.jobs.events.history(job_id)
        assert [e.kind for e in events].count("failed") == 1  # told once, not each sweep
        assert events[-1].is_terminal and events[-1].data["settled"] is False

    async def start_and_stop() -> None:  # the start settles what it can, and runs
        await container.jobs.dispatcher.start()
        await container.jobs.dispatcher.stop()

    asyncio.run(start_and_stop())
    assert sorted(j.id for j in store.unsettled()) == sorted(broken)
    assert store.reachable()

    def database_gone(job: Job) -> None:
        raise sa.exc.OperationalError("UPDATE", {}, Exception("connection lost"))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(lifecycle, "settle", database_gone)
        patch.setattr(store, "reachable", lambda: False)
        with pytest.raises(sa.exc.OperationalError):
            settle_unsettled(store=store, lifecycle=lifecycle)


def test_a_job_whose_hold_expired_before_settlement_says_its_tokens_went_back(
    database_url: str, tmp_path: Path
) -> None:
    """The ledger released the expired hold in full; the job's audit entry and the
    released-tokens metric once said 0."""
    with _hold_ran_out(database_url, tmp_path, GRANT, JobState.FAILED) as (c, account, job):
        chores = c.jobs.dispatcher._housekeeping
        sweep = next(ch for ch in chores if getattr(ch, "func", None) is settle_unsettled)
        assert sweep() == 1
        entry = next(e for e in c.audit.entries(account_id=account) if e.target == job.id)
        assert (entry.action, entry.details["tokens_released"]) == ("jobs.release", PRICE)
        assert entry.details["tokens_charged"] == 0 and job.tokens == PRICE
        _assert_money(c, account, succeeded=0)


@contextmanager
def _hold_ran_out(
    database_url: str, tmp_path: Path, granted: int, ended: JobState = JobState.SUCCEEDED
) -> Iterator[tuple[bootstrap.Container, str, Job]]:
    """An account granted ``granted``, and a job of it whose end (``ended``) was
    recorded, whose settlement was not (the process died, or the database went away),
    and whose hold then ran out and was released."""
    clock = FakeClock()
    container = build(database_url, tmp_path / "data", clock=clock, engines=[FakeEngine()])
    try:
        account_id = container.ledger.open_account(name="late")
        container.ledger.grant(account_id=account_id, amount=granted, source="promotion",
                               idempotency_key="g")  # fmt: skip
        job = _submit(container, account_id, 1)
        running = container.jobs.lifecycle.start(job)
        assert running is not None
        assert container.jobs.store.transition(running, target=ended, changes={})
        clock.current = running.hold_expires_at + timedelta(seconds=1)
        assert container.ledger.expire().tokens_released == PRICE
        unsettled = container.jobs.store.get(job.id)
        assert unsettled is not None
        yield container, account_id, unsettled
    finally:
        container.close()


def _capture_entry(container: bootstrap.Container, account_id: str, job: Job) -> Any:
    return next(e for e in container.audit.entries(account_id=account_id)
                if e.target == job.id and e.action == "jobs.capture")  # fmt: skip


def test_a_success_whose_hold_expired_before_its_capture_is_charged_once(
    database_url: str, tmp_path: Path
) -> None:
    """It was once charged nothing: the result delivered for free."""
    with _hold_ran_out(database_url, tmp_path, GRANT) as (c, account, job):
        start = threading.Barrier(2)

        def settle(_: int) -> Job:  # the chore and the dispatcher, from the same read
            start.wait(10)
            return c.jobs.lifecycle.settle(job)

        with ThreadPoolExecutor(2) as pool:
            first, again = pool.map(settle, range(2))
        assert first.tokens_charged == again.tokens_charged == PRICE
        _assert_money(c, account, succeeded=1)
        # The metrics balance: the first hold (submit) and the late one held, the first
        # released by its expiry, the late one captured (it was captured, never held).
        tokens = {what: c.metrics.registry.get_sample_value(
            f"comfygate_tokens_{what}_total", {"capability": CAPABILITY}) or 0
            for what in ("held", "captured", "released")}  # fmt: skip
        assert tokens == {"held": 2 * PRICE, "captured": PRICE, "released": PRICE}
        entry = _capture_entry(c, account, job)
        assert entry.details["tokens_charged"] == PRICE
        assert entry.details["late_hold_id"] != job.hold_id


def test_a_late_success_the_account_can_no_longer_pay_is_recorded_unpaid(
    database_url: str, tmp_path: Path
) -> None:
    with _hold_ran_out(database_url, tmp_path, PRICE) as (c, account, job):
        spent = c.ledger.place_hold(account_id=account, amount=PRICE, idempotency_key="other")
        c.ledger.capture(hold_id=spent.hold_id, idempotency_key="other")
        settled = c.jobs.lifecycle.settle(job)
        assert settled.state is JobState.SUCCEEDED and settled.tokens_charged == 0
        assert _capture_entry(c, account, job).details["tokens_unpaid"] == PRICE
        balance = c.accounts.balance(account_id=account)
        assert (balance.available, balance.held) == (0, 0)
        # A second settler from the same read, once the account can pay again: the
        # charge was decided (unpaid), so it moves nothing. It once charged the account
        # while the job said 0.
        c.ledger.grant(account_id=account, amount=PRICE, source="topup", idempotency_key="later")
        assert c.jobs.lifecycle.settle(job).tokens_charged == 0
        balance = c.accounts.balance(account_id=account)
        assert (balance.available, balance.held) == (PRICE, 0)
        assert c.accounts.reconcile().ok


STEP = st.one_of(
    st.just(("settle", 0)),
    st.tuples(st.just("grant"), st.integers(1, 2 * PRICE)),
    st.tuples(st.just("spend"), st.integers(1, 2 * PRICE)),
)


@settings(max_examples=25, deadline=None)
@given(granted=st.integers(PRICE, 2 * PRICE), steps=st.lists(STEP, min_size=1, max_size=6))
# Unpaid at the first settlement, able to pay at the next: it once charged the job then.
@example(granted=PRICE, steps=[("spend", 1), ("settle", 0), ("grant", PRICE)])
def test_a_late_charge_is_decided_once_whatever_happens_around_it(
    granted: int, steps: list[tuple[str, int]]
) -> None:
    """Settlements of a success whose hold ran out, from the same read, with the
    account's tokens coming and going between them (SQLite): the job is charged its
    price or nothing, the first settlement decides which, and the ledger's revenue
    says exactly what the job and the other spending say."""
    with (
        tempfile.TemporaryDirectory() as tmp,
        _hold_ran_out(f"sqlite:///{tmp}/db.sqlite", Path(tmp), granted) as (c, acct, job),
    ):
        spent, charged = 0, None
        for i, (action, tokens) in enumerate([*steps, ("settle", 0)]):
            if action == "settle":
                settled = c.jobs.lifecycle.settle(job)
                charged = settled.tokens_charged if charged is None else charged
                assert settled.tokens_charged == charged in (0, PRICE)
            elif action == "grant":
                c.ledger.grant(account_id=acct, amount=tokens, source="topup",
                               idempotency_key=f"g{i}")  # fmt: skip
            elif c.accounts.balance(account_id=acct).available >= tokens:
                hold = c.ledger.place_hold(account_id=acct, amount=tokens,
                                           idempotency_key=f"s{i}")  # fmt: skip
                c.ledger.capture(hold_id=hold.hold_id, idempotency_key=f"s{i}")
                spent += tokens
        assert c.ledger_store.posting_sums()["revenue"] == spent + (charged or 0)
        assert c.accounts.balance(account_id=acct).held == 0
        assert c.accounts.reconcile().ok
