"""ComfyUIEngine against scripted fake servers: each scenario maps to one outcome.

The dispatcher settles the ledger by outcome: a result captures the hold; every
``WorkerError`` releases it. What differs is the retry: ``WorkerUnavailableError``
is retried on another instance by the engine itself; ``WorkflowError``,
``JobTimeoutError`` and ``JobCancelledError`` are final.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from comfygate.adapters.comfyui import ComfyUIEngine, InstanceConfig
from comfygate.adapters.comfyui.packs import load_packs
from comfygate.domain.errors import JobTimeoutError, WorkerUnavailableError, WorkflowError
from tests.comfyui_fake import FakeComfyUI
from tests.comfyui_fake.helpers import (
    ProgressLog,
    job,
    make_engine,
    make_image,
    started_engine,
)


def _prompts(fake: FakeComfyUI) -> int:
    return sum(1 for call in fake.calls if call == ("POST", "/prompt"))


@pytest.mark.parametrize(
    "fault", ["fail_class", "validation_400", "legacy_400", "plain_500", "node_errors_200"]
)
def test_workflow_failures_are_final(
    fakes: tuple[FakeComfyUI, FakeComfyUI], tmp_path: Path, fault: str
) -> None:
    a, b = fakes
    source = make_image(tmp_path / "in.png")

    async def scenario() -> WorkflowError:
        engine = await started_engine([a.url, b.url])
        before = _prompts(a) + _prompts(b)
        for fake in fakes:
            if fault == "fail_class":
                fake.behaviour.fail_class = "DDColor_Colorize"
            elif fault != "validation_400":
                fake.behaviour.reject = fault
        if fault in ("validation_400", "legacy_400"):  # a checkpoint vanished since the check
            for fake in fakes:
                fake.behaviour.missing_choices = ["ddcolor_paper.pth"]
        try:
            with pytest.raises(WorkflowError) as info:
                params = {"checkpoint": "ddcolor_paper.pth"}
                await engine.run(job(tmp_path, source, **params), progress=ProgressLog())
        finally:
            await engine.close()
        assert _prompts(a) + _prompts(b) == before + 1  # not retried elsewhere
        assert all(s["up"] for s in engine.status())  # the instances are fine
        # A prompt the server refused is not cancelled: on a server whose /interrupt
        # ignores the prompt id, that stopped whatever else ran. A queued one is.
        calls = [path for f in fakes for method, path in f.calls if method == "POST"]
        cancels = [p for p in calls if p in ("/interrupt", "/queue") or p.endswith("/cancel")]
        queued = fault == "node_errors_200"  # (a failed execution has ended already)
        assert bool(cancels) is queued, (fault, cancels)
        return info.value

    error = asyncio.run(scenario())
    expected = {
        "fail_class": "CUDA out of memory",
        "validation_400": "Value not in list",
        "legacy_400": "Prompt outputs failed validation",
        "plain_500": "HTTP 500",
        "node_errors_200": "node 99 (DDColor_Colorize)",
    }[fault]
    assert expected in str(error)
    if fault == "node_errors_200":  # it was queued all the same: we take it off again
        assert ("POST", "/queue") in a.calls + b.calls


def test_dropped_websocket_falls_back_to_history(
    fakes: tuple[FakeComfyUI, FakeComfyUI], tmp_path: Path
) -> None:
    a, _ = fakes
    log = ProgressLog()

    async def scenario() -> None:
        engine = await started_engine([a.url])
        a.behaviour.drop_ws_after_progress = 1
        a.behaviour.job_s = 0.4
        result = await engine.run(job(tmp_path, make_image(tmp_path / "in.png")), progress=log)
        await engine.close()
        assert result.metadata["attempts"] == 1 and result.output_path.is_file()
        assert result.metadata["node_inference_s"] is not None

    asyncio.run(scenario())
    assert log.saw("running DDColor_Colorize")


def test_server_down_at_start_and_gone_mid_job_retry_elsewhere(
    fakes: tuple[FakeComfyUI, FakeComfyUI], tmp_path: Path
) -> None:
    a, b = fakes
    dead = FakeComfyUI(tmp_path / "dead").start()
    dead.stop()  # its port is now closed: connection refused
    log = ProgressLog()

    async def scenario() -> None:
        engine = await started_engine([dead.url, a.url, b.url])
        down = {s["url"]: s for s in engine.status()}[dead.url]
        assert not down["up"] and "unreachable" in down["last_error"]
        a.behaviour.die_after_progress = 1  # a was chosen first (fewest jobs, queue 0)
        a.behaviour.job_s = 0.2
        result = await engine.run(job(tmp_path, make_image(tmp_path / "in.png")), progress=log)
        assert result.instance == b.url and result.metadata["tried"] == [a.url, b.url]
        status = {s["url"]: s for s in engine.status()}
        assert not status[a.url]["up"] and status[b.url]["up"]
        await engine.close()

    asyncio.run(scenario())
    assert log.fractions == sorted(log.fractions)  # the retry did not go backwards


def test_no_instance_up_is_unavailable(tmp_path: Path) -> None:
    dead = FakeComfyUI(tmp_path / "dead").start()
    dead.stop()

    async def scenario() -> None:
        engine = await started_engine([dead.url])
        assert engine.capabilities() == frozenset()
        with pytest.raises(WorkerUnavailableError, match="no ComfyUI instance is up"):
            await engine.run(job(tmp_path, make_image(tmp_path / "in.png")), progress=ProgressLog())
        await engine.close()

    asyncio.run(scenario())


def test_failed_instance_is_probed_back_in_with_a_new_warm_up(
    fakes: tuple[FakeComfyUI, FakeComfyUI], tmp_path: Path
) -> None:
    a, b = fakes
    cold: list[tuple[str, str, float]] = []

    async def scenario() -> None:
        engine = await started_engine([a.url, b.url], on_cold_start=lambda *args: cold.append(args))
        assert sorted(c[0] for c in cold) == sorted([a.url, a.url, b.url, b.url])
        a.stop()
        result = await engine.run(
            job(tmp_path, make_image(tmp_path / "in.png")), progress=ProgressLog()
        )
        assert result.instance == b.url and result.metadata["attempts"] == 2
        await engine.probe_down()
        assert not {s["url"]: s for s in engine.status()}[a.url]["up"]  # still down
        a.start()  # same port
        await engine.probe_down()
        status = {s["url"]: s for s in engine.status()}[a.url]
        assert status["up"] and status["last_error"] is None
        assert [c[0] for c in cold].count(a.url) == 4  # warmed up again, never charged
        await engine.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("cancel_api", [False, True])
def test_slow_server_past_timeout_is_cancelled_first(
    fakes: tuple[FakeComfyUI, FakeComfyUI], tmp_path: Path, cancel_api: bool
) -> None:
    a, _ = fakes

    async def scenario() -> None:
        engine = await started_engine([a.url])
        a.behaviour.job_s, a.behaviour.progress_steps = 30.0, 300
        a.behaviour.jobs_cancel_api = cancel_api
        with pytest.raises(JobTimeoutError) as info:
            await engine.run(
                job(tmp_path, make_image(tmp_path / "in.png"), timeout_s=0.5),
                progress=ProgressLog(),
            )
        await engine.close()
        prompt_id = info.value.details["prompt_id"]
        assert ("POST", f"/api/jobs/{prompt_id}/cancel") in a.calls
        assert (prompt_id in a.interrupts) is not cancel_api  # the fallback only when needed
        assert info.value.details["stopped"] is True

    asyncio.run(scenario())


def test_a_prompt_that_will_not_stop_takes_the_instance_out(
    fakes: tuple[FakeComfyUI, FakeComfyUI], tmp_path: Path
) -> None:
    a, _ = fakes

    async def scenario() -> None:
        engine = await started_engine([a.url], stop_grace_s=0.3)
        a.behaviour.job_s, a.behaviour.ignore_interrupt = 30.0, True
        with pytest.raises(JobTimeoutError) as info:
            await engine.run(
                job(tmp_path, make_image(tmp_path / "in.png"), timeout_s=0.3),
                progress=ProgressLog(),
            )
        assert info.value.details["stopped"] is False
        status = engine.status()[0]
        assert not status["up"] and "did not stop" in status["last_error"]
        await engine.close()

    asyncio.run(scenario())


def test_renamed_upload_is_used(fakes: tuple[FakeComfyUI, FakeComfyUI], tmp_path: Path) -> None:
    a, _ = fakes

    async def scenario() -> None:
        engine = await started_engine([a.url])
        a.behaviour.rename_uploads = True
        result = await engine.run(
            job(tmp_path, make_image(tmp_path / "in.png")), progress=ProgressLog()
        )
        await engine.close()
        assert result.output_path.is_file()

    asyncio.run(scenario())
    image_input = a.submitted[-1]["prompt"]["1"]["inputs"]["image"]
    assert image_input.startswith("comfygate/job_1-") and image_input.endswith(" (1).png")


def test_cached_replay_is_a_result_without_progress(
    fakes: tuple[FakeComfyUI, FakeComfyUI], tmp_path: Path
) -> None:
    a, _ = fakes
    log = ProgressLog()

    async def scenario() -> None:
        engine = await started_engine([a.url])
        a.behaviour.cached = True
        result = await engine.run(job(tmp_path, make_image(tmp_path / "in.png")), progress=log)
        await engine.close()
        assert sorted(result.metadata["cached_nodes"]) == ["1", "2", "3", "4", "5"]
        assert result.output_path.is_file()

    asyncio.run(scenario())
    assert not log.saw("running")


def test_one_running_prompt_per_instance_and_least_busy_routing(
    fakes: tuple[FakeComfyUI, FakeComfyUI], tmp_path: Path
) -> None:
    a, b = fakes
    source = make_image(tmp_path / "in.png")

    async def scenario() -> None:
        engine = await started_engine([a.url, b.url])
        for fake in fakes:
            fake.behaviour.job_s = 0.1
        jobs = [
            engine.run(job(tmp_path, source, job_id=f"job_{i}"), progress=ProgressLog())
            for i in range(4)
        ]
        results = await asyncio.gather(*jobs)
        await engine.close()
        # The first two start at once: the second finds the first instance busy.
        assert {r.instance for r in results} == {a.url, b.url}

    asyncio.run(scenario())
    assert a.max_in_queue == b.max_in_queue == 1  # never two of ours on one server


def test_auth_header_reaches_servers_behind_a_proxy(
    fakes: tuple[FakeComfyUI, FakeComfyUI], tmp_path: Path
) -> None:
    a, b = fakes
    a.behaviour.auth = b.behaviour.auth = "Bearer s3cret"

    async def scenario() -> None:
        packs = load_packs()
        with_header = InstanceConfig(a.url, {"Authorization": "Bearer s3cret"})
        engine = ComfyUIEngine(
            packs=packs, pools={c: [with_header, InstanceConfig(b.url)] for c in packs}
        )
        await engine.start()
        status = {s["url"]: s for s in engine.status()}
        assert status[a.url]["up"] and not status[b.url]["up"]
        assert "HTTP 401" in status[b.url]["last_error"]
        assert status[a.url]["devices"][0]["vram_total_mb"] == 8192
        result = await engine.run(
            job(tmp_path, make_image(tmp_path / "in.png")), progress=ProgressLog()
        )
        assert result.instance == a.url
        await engine.close()

    asyncio.run(scenario())


def test_a_warm_up_that_times_out_takes_out_only_its_instance(
    fakes: tuple[FakeComfyUI, FakeComfyUI], tmp_path: Path
) -> None:
    slow, ok = fakes
    slow.behaviour.job_s = 3.0  # a first model load on a cold GPU, past the timeout

    async def scenario() -> None:
        engine = make_engine([slow.url, ok.url], timeout_s=1.0, probe_interval_s=0.2)
        try:
            await engine.start()  # must not raise: the dispatcher would drop the engine
            status = {s["url"]: s for s in engine.status()}
            assert not status[slow.url]["up"]
            assert "JobTimeoutError" in status[slow.url]["last_error"]
            assert status[ok.url]["up"]
            result = await engine.run(
                job(tmp_path, make_image(tmp_path / "in.png")), progress=ProgressLog()
            )
            assert result.instance == ok.url
            slow.behaviour.job_s = 0.0
            async with asyncio.timeout(10):  # the prober warms it up again on its own
                while not {s["url"]: s for s in engine.status()}[slow.url]["up"]:
                    await asyncio.sleep(0.05)
        finally:
            await engine.close()

    asyncio.run(scenario())
