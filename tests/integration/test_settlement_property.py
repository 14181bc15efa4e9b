"""Property: whatever happens to a batch of jobs (success, engine failure, retries,
cancel before or during the run, a crash mid-run, a crash mid-settlement, several
restarts), the tokens captured equal the prices of the jobs that succeeded, and
nothing stays held.

Runs on SQLite (one database, a new account per example) through the real
submission, dispatcher, lifecycle and ledger, with a scripted engine.
"""

from __future__ import annotations

import asyncio
import io
import itertools
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from comfygate import bootstrap
from comfygate.adapters.images import receive_upload_sync
from comfygate.bootstrap_jobs import JobServices, build_job_services
from comfygate.domain.jobs import JobState
from comfygate.services.identity_types import Principal, Role
from comfygate.services.job_ports import Job
from comfygate.services.jobs import SubmitRequest
from tests.jobs_support import CAPABILITY, FakeEngine, build, png_bytes

GRANT = 10_000
SIZES = [(64, 48), (1500, 1000), (2000, 1500)]
FATES = [
    "succeed",
    "fail",
    "retry",
    "cancel_queued",
    "cancel_running",
    "crash",
    "crash_twice",
    "crash_after_success",
    "crash_after_capture",
]
WINS = {"succeed", "crash", "crash_after_success", "crash_after_capture"}
_seeds = itertools.count()


@pytest.fixture(scope="module")
def container(tmp_path_factory: pytest.TempPathFactory) -> Iterator[bootstrap.Container]:
    tmp = tmp_path_factory.mktemp("settlement")
    built = build(f"sqlite:///{tmp / 'db.sqlite'}", tmp / "data", engines=[FakeEngine()])
    yield built
    built.close()


def _jobs(container: bootstrap.Container, engine: FakeEngine) -> JobServices:
    return build_job_services(
        container.settings,
        engine=container.engine,
        clock=container.clock,
        ledger=container.ledger,
        plans=container.plans,
        quotes=container.pricing.quotes,
        audit=container.audit,
        metrics=container.metrics,
        engines=[engine],
    )


def _submit(jobs: JobServices, account_id: str, size: tuple[int, int]) -> Job:
    upload = receive_upload_sync(
        io.BytesIO(png_bytes(size, seed=next(_seeds))), dest_dir=jobs.upload_dir, max_bytes=10**7
    )
    principal = Principal(account_id, "user_p", Role.ADMIN, "key_p")
    return jobs.submission.submit(
        principal=principal, upload=upload, request=SubmitRequest(CAPABILITY)
    ).job


def _leave_as_a_crash_would(
    container: bootstrap.Container, jobs: JobServices, job: Job, fate: str
) -> None:
    lifecycle, store = jobs.lifecycle, jobs.store
    running = lifecycle.start(job)
    assert running is not None
    if fate == "crash_twice":
        queued = lifecycle.requeue(running, reason="worker_lost")
        assert queued is not None and lifecycle.start(queued) is not None
    elif fate in ("crash_after_success", "crash_after_capture"):
        assert store.transition(running, target=JobState.SUCCEEDED, changes={})
        if fate == "crash_after_capture":
            container.ledger.capture(hold_id=job.hold_id, idempotency_key=f"{job.id}:capture")


async def _run(
    container: bootstrap.Container, account_id: str, plan: list[tuple[str, int]]
) -> list[Job]:
    engine = FakeEngine()
    jobs = _jobs(container, engine)
    submitted = []
    for fate, size in plan:
        job = await asyncio.to_thread(_submit, jobs, account_id, SIZES[size])
        submitted.append((fate, job))
        engine.plan[job.id] = {"fail": "fail", "retry": "retryable", "cancel_running": "hang"}.get(
            fate, "succeed"
        )
        if fate.startswith("crash"):
            await asyncio.to_thread(_leave_as_a_crash_would, container, jobs, job, fate)
    for fate, job in submitted:
        if fate == "cancel_queued":
            await jobs.dispatcher.cancel(job)
    await jobs.dispatcher.start()
    for fate, job in submitted:
        if fate == "cancel_running":
            while job.id not in engine.started:
                await asyncio.sleep(0.005)
            current = await asyncio.to_thread(jobs.store.get, job.id)
            assert current is not None
            await jobs.dispatcher.cancel(current)
    ids = [job.id for _, job in submitted]
    while True:
        current = [await asyncio.to_thread(jobs.store.get, i) for i in ids]
        if all(j is not None and j.settled_at is not None for j in current):
            break
        await asyncio.sleep(0.01)
    await jobs.dispatcher.stop()
    # Another restart finds nothing to do and changes nothing.
    again = _jobs(container, FakeEngine())
    await again.dispatcher.start()
    await again.dispatcher.stop()
    return [j for j in current if j is not None]


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    plan=st.lists(
        st.tuples(st.sampled_from(FATES), st.integers(0, len(SIZES) - 1)), min_size=1, max_size=6
    )
)
def test_captured_equals_succeeded_prices_and_nothing_stays_held(
    container: bootstrap.Container, plan: list[tuple[str, int]]
) -> None:
    account_id = container.ledger.open_account(name="prop")
    container.ledger.grant(
        account_id=account_id, amount=GRANT, source="promotion", idempotency_key="g"
    )
    done = asyncio.run(_run(container, account_id, plan))
    by_id = {job.id: job for job in done}
    assert len(by_id) == len(plan)
    expected = 0
    for (fate, _), job in zip(plan, done, strict=True):
        assert job.state.is_terminal and job.settled_at is not None
        succeeded = fate in WINS
        assert (job.state is JobState.SUCCEEDED) == succeeded, (fate, job.state)
        assert job.tokens_charged == (job.tokens if succeeded else 0)
        expected += job.tokens if succeeded else 0
    balance = container.accounts.balance(account_id=account_id)
    assert balance.held == 0
    assert GRANT - balance.available == expected
    assert container.accounts.reconcile().ok
