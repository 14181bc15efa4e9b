"""ComfyUIEngine when a fault leaves work behind on a server: prompts that will not stop,
transient HTTP errors after submit, sockets left open, uploads refused.

Each test asserts what the instance is left doing: an instance that may still run our
prompt must be out of the pool, and a job moved elsewhere must not leave its first
prompt running.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from comfygate.adapters.comfyui.runner import STOP_GRACE_S
from comfygate.adapters.storage.local import LocalResultStorage
from comfygate.domain.errors import JobTimeoutError, UploadRefusedError, WorkerUnavailableError
from comfygate.domain.jobs import TIMEOUT_GRACE_S
from comfygate.services import engine_run
from comfygate.services.events import JobEvents
from tests.comfyui_fake import FakeComfyUI
from tests.comfyui_fake.helpers import (
    ProgressLog,
    dispatcher_job,
    job,
    make_image,
    started_engine,
)
from tests.fakes import FakeClock
from tests.unit.test_job_events import FakeEventStore

SCALE = 0.1
"""Production's seconds times this: the guard's grace (10 s) becomes 1 s."""


def _will_not_stop(fake: FakeComfyUI) -> None:
    """One long node that never looks at interrupts (ComfyUI checks between nodes)."""
    fake.behaviour.job_s, fake.behaviour.progress_steps = 30.0, 300
    fake.behaviour.ignore_interrupt = True


def _uploads(fake: FakeComfyUI) -> int:
    return fake.calls.count(("POST", "/upload/image"))


@pytest.mark.parametrize(
    "stop_grace_s",
    [TIMEOUT_GRACE_S * SCALE, STOP_GRACE_S * SCALE],
    ids=["stop-grace-equal-to-the-guard", "default-stop-grace"],
)
def test_a_prompt_that_will_not_stop_past_the_timeout_takes_its_instance_out(
    fakes: tuple[FakeComfyUI, FakeComfyUI],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    stop_grace_s: float,
) -> None:
    a, _ = fakes
    monkeypatch.setattr(engine_run, "TIMEOUT_GRACE_S", TIMEOUT_GRACE_S * SCALE)
    storage = LocalResultStorage(tmp_path / "data")
    events = JobEvents(store=FakeEventStore(), clock=FakeClock())  # type: ignore[arg-type]

    async def scenario() -> None:
        engine = await started_engine([a.url], stop_grace_s=stop_grace_s)
        _will_not_stop(a)
        try:
            with pytest.raises(JobTimeoutError):  # the runner's, or the guard's
                await engine_run.run_on_engine(
                    engine,
                    dispatcher_job(storage),
                    storage=storage,
                    events=events,
                    timeout_s=0.5,
                    progress_step=0.05,
                )
            assert a.running is not None  # our prompt still runs there ...
            status = engine.status()[0]
            assert not status["up"] and status["running"] == 0  # ... so it takes no job
            assert "did not stop" in status["last_error"]
        finally:
            await engine.close()

    asyncio.run(scenario())


def test_a_customer_cancel_of_a_prompt_that_will_not_stop_takes_its_instance_out(
    fakes: tuple[FakeComfyUI, FakeComfyUI], tmp_path: Path
) -> None:
    a, _ = fakes

    async def scenario() -> None:
        engine = await started_engine([a.url], stop_grace_s=STOP_GRACE_S * SCALE)
        _will_not_stop(a)
        work = job(tmp_path, make_image(tmp_path / "in.png"))
        task = asyncio.ensure_future(engine.run(work, progress=ProgressLog()))
        try:
            while a.running is None or a.running.progress_sent < 1:
                await asyncio.sleep(0.01)
            task.cancel()  # what Dispatcher.cancel does, then it tells the engine
            await engine.cancel(work.job_id)
            await asyncio.gather(task, return_exceptions=True)
            assert task.cancelled() and a.running is not None
            status = engine.status()[0]
            assert not status["up"] and "did not stop" in status["last_error"]
        finally:
            await engine.close()

    asyncio.run(scenario())


def test_a_few_failed_history_reads_do_not_move_the_job(
    fakes: tuple[FakeComfyUI, FakeComfyUI], tmp_path: Path
) -> None:
    a, _ = fakes

    async def scenario() -> None:
        engine = await started_engine([a.url])
        a.behaviour.history_errors = 3  # a proxy in front hiccups three times in a row
        try:
            result = await engine.run(
                job(tmp_path, make_image(tmp_path / "in.png")), progress=ProgressLog()
            )
            assert result.instance == a.url and result.metadata["attempts"] == 1
            assert engine.status()[0]["up"]
        finally:
            await engine.close()

    asyncio.run(scenario())


def test_an_instance_given_up_after_submit_is_left_without_our_prompt(
    fakes: tuple[FakeComfyUI, FakeComfyUI], tmp_path: Path
) -> None:
    a, b = fakes

    async def scenario() -> None:
        engine = await started_engine([a.url, b.url])
        a.behaviour.job_s, a.behaviour.progress_steps = 30.0, 300
        a.behaviour.drop_ws_after_progress = 1  # from then on the runner polls the history
        a.behaviour.history_errors = 10_000  # ... which a no longer answers
        try:
            result = await engine.run(
                job(tmp_path, make_image(tmp_path / "in.png")), progress=ProgressLog()
            )
            assert result.instance == b.url and result.metadata["tried"] == [a.url, b.url]
            first = a.submitted[-1]["prompt_id"]
            assert first in a.interrupts  # the job moved: its first prompt was stopped
            async with asyncio.timeout(5):
                while a.running is not None:
                    await asyncio.sleep(0.05)
        finally:
            await engine.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("failure", ["refused", "timed-out"])
def test_a_failed_upload_leaves_no_websocket_open(
    fakes: tuple[FakeComfyUI, FakeComfyUI], tmp_path: Path, failure: str
) -> None:
    a, _ = fakes

    async def scenario() -> None:
        engine = await started_engine([a.url])
        a.behaviour.upload_delay_s = 0.3 if failure == "refused" else 5.0  # the socket opens
        a.behaviour.upload_status = 503 if failure == "refused" else None
        expected = WorkerUnavailableError if failure == "refused" else JobTimeoutError
        try:
            with pytest.raises(expected):
                await engine.run(
                    job(tmp_path, make_image(tmp_path / "in.png"), timeout_s=1.0),
                    progress=ProgressLog(),
                )
            async with asyncio.timeout(3):  # the server sees the close a moment later
                while a.sockets:
                    await asyncio.sleep(0.05)
        finally:
            await engine.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("status", [400, 413, 415])
def test_an_upload_refused_for_the_file_fails_the_job_and_keeps_the_instances(
    fakes: tuple[FakeComfyUI, FakeComfyUI], tmp_path: Path, status: int
) -> None:
    a, b = fakes

    async def scenario() -> None:
        engine = await started_engine([a.url, b.url])
        for fake in fakes:  # --max-upload-size, or a proxy's body limit, on every instance
            fake.behaviour.upload_status = status
        before = _uploads(a) + _uploads(b)
        try:
            with pytest.raises(UploadRefusedError) as info:
                await engine.run(
                    job(tmp_path, make_image(tmp_path / "in.png")), progress=ProgressLog()
                )
            assert not info.value.retryable and info.value.code == "upload_refused"
            assert f"HTTP {status}" in str(info.value)
            assert all(s["up"] for s in engine.status())
            assert _uploads(a) + _uploads(b) == before + 1  # not tried elsewhere
        finally:
            await engine.close()

    asyncio.run(scenario())


def test_a_prompt_lost_by_the_server_moves_the_job_before_the_timeout(
    fakes: tuple[FakeComfyUI, FakeComfyUI], tmp_path: Path
) -> None:
    a, b = fakes

    async def scenario() -> None:
        engine = await started_engine([a.url, b.url])
        a.behaviour.lose_prompts = True  # accepted, then gone: "Clear queue", a restart
        try:
            async with asyncio.timeout(8):  # the job's timeout is 60 s
                result = await engine.run(
                    job(tmp_path, make_image(tmp_path / "in.png")), progress=ProgressLog()
                )
            assert result.instance == b.url and result.metadata["tried"] == [a.url, b.url]
            status = {s["url"]: s for s in engine.status()}[a.url]
            assert not status["up"] and "vanished" in status["last_error"]
        finally:
            await engine.close()

    asyncio.run(scenario())


def test_a_prompt_that_succeeded_when_the_timeout_stopped_it_delivers_its_result(
    fakes: tuple[FakeComfyUI, FakeComfyUI], tmp_path: Path
) -> None:
    a, _ = fakes

    async def scenario() -> None:
        engine = await started_engine([a.url])
        # The prompt ends at once; fetching its output takes longer than the whole
        # timeout, so the timeout lands after the success, while the output downloads.
        a.behaviour.view_delay_s = 1.5
        try:
            result = await engine.run(
                job(tmp_path, make_image(tmp_path / "in.png"), timeout_s=1.0),
                progress=ProgressLog(),
            )
            assert result.output_path.is_file() and result.instance == a.url
            assert result.metadata["attempts"] == 1
            assert engine.status()[0]["up"]  # nothing of ours runs there
            # and nothing was stopped: on a server whose /interrupt ignores the prompt
            # id, stopping a prompt that had ended stopped whatever else ran
            posts = [path for method, path in a.calls if method == "POST"]
            assert not [p for p in posts if p in ("/interrupt", "/queue") or "cancel" in p]
        finally:
            await engine.close()

    asyncio.run(scenario())
