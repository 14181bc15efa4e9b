"""Running one job on an engine: the timeout guard and throttled progress."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from comfygate.adapters.storage.local import LocalResultStorage
from comfygate.domain.errors import JobTimeoutError
from comfygate.domain.ids import new_id
from comfygate.domain.jobs import JobState
from comfygate.services import engine_run
from comfygate.services.events import JobEvents
from comfygate.services.job_ports import Job
from tests.fakes import FakeClock
from tests.jobs_support import FakeEngine
from tests.unit.test_job_events import FakeEventStore

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def _job() -> Job:
    return Job(
        id=new_id("job"), account_id="acct_a", user_id="user_a", capability="colorize.person",
        options={"upscale": 1}, options_key="k", state=JobState.RUNNING, tier=1,
        sha256="0" * 64, md5="0" * 32, size_bytes=1, image_format="png", width=64,
        height=48, tokens=10, list_tokens=10, hold_id="hold_a", hold_expires_at=T0,
        price_book_version="v", breakdown=(), quote_id=None, idempotency_key=None,
        input_name="input.png", created_at=T0,
    )  # fmt: skip


def test_the_guard_cancels_an_engine_that_ignores_its_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_run, "TIMEOUT_GRACE_S", 0.0)
    engine = FakeEngine()
    engine.default = "hang"
    job = _job()
    events = JobEvents(store=FakeEventStore(), clock=FakeClock())  # type: ignore[arg-type]

    async def scenario() -> None:
        await engine_run.run_on_engine(
            engine,
            job,
            storage=LocalResultStorage(tmp_path),
            events=events,
            timeout_s=0.05,
            progress_step=0.1,
        )

    with pytest.raises(JobTimeoutError) as info:
        asyncio.run(scenario())
    assert info.value.code == "job_timeout" and not info.value.retryable
    assert engine.cancelled == [job.id]


def test_progress_is_throttled_but_completion_always_reported() -> None:
    store = FakeEventStore()
    events = JobEvents(store=store, clock=FakeClock())  # type: ignore[arg-type]
    report = engine_run.progress_reporter(events, "job_p", step=0.25)

    async def scenario() -> None:
        for fraction in (0.0, 0.1, 0.2, 0.3, 0.6, 0.7, 0.99, 1.0, 1.5):
            await report(fraction, f"at {fraction}")

    asyncio.run(scenario())
    fractions = [e.data["fraction"] for e in events.history("job_p")]
    assert fractions == [0.0, 0.3, 0.6, 0.99, 1.0, 1.0]


def test_the_engine_gets_the_jobs_input_output_and_options(tmp_path: Path) -> None:
    storage = LocalResultStorage(tmp_path)
    job = replace(_job(), options={"upscale": 2})
    work = engine_run.engine_job(job, storage, timeout_s=30)
    assert work.input_path == tmp_path / job.id / "input.png"
    assert work.output_dir.is_dir() and work.params == {"upscale": 2}
    assert (work.job_id, work.capability, work.timeout_s) == (job.id, job.capability, 30)
