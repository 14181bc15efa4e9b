"""ComfyUI outcomes that end without a result: every one releases the hold in full.

Same path as ``test_comfyui_jobs.py`` (container from settings, fake ComfyUI servers,
a funded account, a photo submitted over HTTP, the dispatcher running it), for the
workflow failing (``execution_error``, a 400 validation error, a 200 with
``node_errors``), the prompt interrupted on the server, the customer cancelling, the
server too slow for the timeout, and the only server going down.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from comfygate import bootstrap
from comfygate.domain.jobs import JobState
from tests.comfyui_fake import FakeComfyUI
from tests.integration.comfyui_jobs_support import (
    FUNDS,
    PRICE,
    Finished,
    assert_released,
    comfy_container,
    comfy_engine,
    prompt_posts,
    prompts_for,
    run_job,
    running_on,
    start_fake,
    until,
    use_fake_gpu,
)
from tests.jobs_support import job_rows, new_customer, png_bytes, run, running_app, submit


@pytest.fixture(autouse=True)
def _gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    use_fake_gpu(monkeypatch)


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeComfyUI]:
    server = start_fake(tmp_path / "comfy")
    yield server
    server.stop()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'db.sqlite'}"


def _container(url: str, tmp_path: Path, fake: FakeComfyUI, **kw: object) -> bootstrap.Container:
    return comfy_container(url, tmp_path / "data", [fake], **kw)


def assert_retried_once_then_refused(out: Finished) -> None:
    """The instance failed (retryable): the engine found no other one, the dispatcher
    queued the job once more, and with its only instance out nothing served it. One
    hold all along, released once."""
    assert out.job["attempts"] == 2
    retries = [d for kind, d in out.events if kind == "queued" and d.get("retry")]
    assert [d["reason"] for d in retries] == ["worker_unavailable"]


def test_execution_error_fails_and_releases(
    database_url: str, fake: FakeComfyUI, tmp_path: Path
) -> None:
    container = _container(database_url, tmp_path, fake)
    customer = new_customer(container, tokens=FUNDS)

    def prepare() -> None:
        fake.behaviour.fail_class = "DDColor_Colorize"

    try:
        out = run(lambda: run_job(container, customer, prepare=prepare))
    finally:
        container.close()
    assert_released(out, "workflow_error")
    assert "DDColor_Colorize" in out.job["failure"]["reason"]
    assert "CUDA out of memory" in out.job["failure"]["reason"]
    assert out.job["attempts"] == 1 and prompts_for(fake, out.job["id"]) == 1  # no retry
    assert out.job["engine"] == "comfyui" and out.usage["engine"] == "comfyui"


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("validation_400", "prompt_outputs_failed_validation"),
        ("legacy_400", "Prompt outputs failed validation"),
        ("node_errors_200", "node 99 (DDColor_Colorize)"),
    ],
)
def test_rejected_prompt_fails_and_releases(
    sqlite_url: str, fake: FakeComfyUI, tmp_path: Path, fault: str, reason: str
) -> None:
    container = _container(sqlite_url, tmp_path, fake)
    customer = new_customer(container, tokens=FUNDS)
    posts_before: list[int] = []

    def prepare() -> None:
        posts_before.append(prompt_posts(fake))  # the warm-ups' are not ours
        if fault == "node_errors_200":
            fake.behaviour.reject = fault
            return
        fake.behaviour.reject = "legacy_400" if fault == "legacy_400" else None
        # The pack's default checkpoint vanished from the server after the start check.
        fake.behaviour.missing_choices = ["ddcolor_modelscope.pth"]

    try:
        out = run(lambda: run_job(container, customer, prepare=prepare))
        status = comfy_engine(container).status()
    finally:
        container.close()
    assert_released(out, "workflow_error")
    assert reason in out.job["failure"]["reason"]
    assert out.job["attempts"] == 1 and prompt_posts(fake) == posts_before[0] + 1  # no retry
    assert status[0]["up"]  # the workflow was at fault, not the instance


def test_interrupt_on_the_server_fails_and_releases(
    sqlite_url: str, fake: FakeComfyUI, tmp_path: Path
) -> None:
    """Someone else (the ComfyUI UI's cancel button) interrupts our running prompt:
    the instance is taken out, there is no other one, so the job fails."""
    container = _container(sqlite_url, tmp_path, fake)
    customer = new_customer(container, tokens=FUNDS)

    def prepare() -> None:
        fake.behaviour.job_s, fake.behaviour.progress_steps = 30.0, 300

    async def interrupt(_client: httpx.AsyncClient, _job_id: str) -> None:
        await until(running_on(fake))
        async with httpx.AsyncClient() as other:
            await other.post(f"{fake.url}/interrupt", json={})

    try:
        out = run(lambda: run_job(container, customer, prepare=prepare, during=interrupt))
    finally:
        container.close()
    assert_released(out, "worker_unavailable")
    assert_retried_once_then_refused(out)
    assert "interrupted" in out.job["failure"]["reason"]  # the job says what really happened
    assert prompts_for(fake, out.job["id"]) == 1


def test_customer_cancel_stops_the_prompt_and_releases(
    sqlite_url: str, fake: FakeComfyUI, tmp_path: Path
) -> None:
    container = _container(sqlite_url, tmp_path, fake)
    customer = new_customer(container, tokens=FUNDS)

    def prepare() -> None:
        fake.behaviour.job_s, fake.behaviour.progress_steps = 30.0, 300

    async def cancel(client: httpx.AsyncClient, job_id: str) -> None:
        await until(running_on(fake))
        answer = await client.post(f"/v1/jobs/{job_id}/cancel", headers=customer.headers)
        assert answer.status_code == 200 and answer.json()["state"] == "canceled", answer.text

    try:
        out = run(lambda: run_job(container, customer, prepare=prepare, during=cancel))
    finally:
        container.close()
    assert out.job["state"] == "canceled" and out.job["tokens_charged"] == 0
    assert out.balance == (FUNDS, 0) and out.hold_kinds == ["hold", "release"]
    assert out.usage["outcome"] == "canceled" and out.usage["tokens_charged"] == 0
    assert out.reconciled
    prompt_id = fake.submitted[-1]["prompt_id"]
    assert prompt_id in fake.interrupts  # the prompt was stopped on the server


def test_slow_server_past_the_timeout_is_cancelled_and_released(
    sqlite_url: str, fake: FakeComfyUI, tmp_path: Path
) -> None:
    container = _container(sqlite_url, tmp_path, fake, comfyui_timeout_s=0.5, job_timeout_s=0.5)
    customer = new_customer(container, tokens=FUNDS)

    def prepare() -> None:
        fake.behaviour.job_s, fake.behaviour.progress_steps = 30.0, 300

    try:
        out = run(lambda: run_job(container, customer, prepare=prepare))
        status = comfy_engine(container).status()
    finally:
        container.close()
    assert_released(out, "job_timeout")
    assert "0.5 s timeout" in out.job["failure"]["reason"]
    prompt_id = fake.submitted[-1]["prompt_id"]
    assert prompt_id in fake.interrupts and fake.running is None  # stopped, not left running
    assert out.job["attempts"] == 1 and status[0]["up"]


def test_only_server_gone_mid_job_fails_and_releases(
    sqlite_url: str, fake: FakeComfyUI, tmp_path: Path
) -> None:
    container = _container(sqlite_url, tmp_path, fake)
    customer = new_customer(container, tokens=FUNDS)

    def prepare() -> None:
        fake.behaviour.job_s, fake.behaviour.die_after_progress = 0.2, 1

    try:
        out = run(lambda: run_job(container, customer, prepare=prepare))
    finally:
        container.close()
    assert_released(out, "worker_unavailable")
    assert_retried_once_then_refused(out)
    assert "then no engine serves" in out.job["failure"]["reason"]  # the first cause comes first
    assert not out.job["failure"]["reason"].startswith("no engine")
    assert prompts_for(fake, out.job["id"]) == 1


def test_only_server_down_at_start_refuses_without_a_hold(
    sqlite_url: str, fake: FakeComfyUI, tmp_path: Path
) -> None:
    fake.stop()  # its port is closed: connection refused
    container = _container(sqlite_url, tmp_path, fake)
    customer = new_customer(container, tokens=FUNDS)

    async def scenario() -> httpx.Response:
        async with running_app(container) as client:
            return await submit(client, customer, png_bytes((800, 600), seed=1))

    try:
        refused = run(scenario)
        balance = container.accounts.balance(account_id=customer.account_id)
        assert (balance.available, balance.held) == (FUNDS, 0)
        assert job_rows(container, customer.account_id) == 0
        assert container.accounts.reconcile().ok
    finally:
        container.close()
    assert refused.status_code == 503 and refused.json()["code"] == "worker_unavailable"


def test_shutdown_mid_job_stops_the_prompt_and_queues_the_job_again(
    sqlite_url: str, fake: FakeComfyUI, tmp_path: Path
) -> None:
    container = _container(sqlite_url, tmp_path, fake)
    customer = new_customer(container, tokens=FUNDS)
    problems: list[dict[str, Any]] = []

    async def scenario() -> str:
        asyncio.get_running_loop().set_exception_handler(lambda _, ctx: problems.append(ctx))
        async with running_app(container) as client:
            fake.behaviour.job_s, fake.behaviour.progress_steps = 30.0, 300
            # A long node: stopping the prompt takes the engine its whole stop grace,
            # time in which the shutdown must not close the engine under it.
            fake.behaviour.ignore_interrupt = True
            accepted = await submit(client, customer, png_bytes((800, 600), seed=1))
            assert accepted.status_code == 202, accepted.text
            await until(running_on(fake))
        # The lifespan stopped the dispatcher and closed the engine. A run task left
        # behind reports its error when collected: collect while the loop still runs.
        gc.collect()
        await asyncio.sleep(0)
        return str(accepted.json()["id"])

    try:
        job_id = run(scenario)
        job = container.jobs.store.get(job_id)
        held = container.accounts.balance(account_id=customer.account_id).held
    finally:
        container.close()
    assert problems == []  # no "Task exception was never retrieved"
    assert job is not None and job.state is JobState.QUEUED  # back in the queue, held
    assert job.failure_reason is None or "shutdown" in job.failure_reason
    assert held == PRICE
    assert fake.submitted[-1]["prompt_id"] in fake.interrupts  # stopped on the server
