"""The ComfyUI client suite: runs against the fake, and against a real ComfyUI when
``COMFYGATE_TEST_COMFYUI_URL`` is set (with DDColor_Colorize and comfyui_nodes installed).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from comfygate.adapters.comfyui.client import ComfyUIClient
from comfygate.adapters.comfyui.packs import check_pack_online, load_packs
from comfygate.adapters.comfyui.protocol import FileRef, PromptHistory, parse_ws_text
from comfygate.domain.errors import JobCancelledError, JobTimeoutError, WorkflowError
from comfygate.domain.workflows import build_prompt, parse_pack, resolve_params
from tests.comfyui_fake.helpers import (
    ProgressLog,
    Server,
    job,
    make_engine,
    make_image,
    server_fixture,
)


@pytest.fixture(params=["fake", "real"])
def comfy(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    yield from server_fixture(request, tmp_path)


def test_success_with_progress_report_and_cleanup(comfy: Server, tmp_path: Path) -> None:
    source = make_image(tmp_path / "in.png", (320, 240))
    log = ProgressLog()

    async def scenario() -> None:
        engine = make_engine([comfy.url])
        await engine.start()
        assert engine.capabilities() == {"colorize.person", "colorize.building"}
        result = await engine.run(job(tmp_path, source, image_size=600), progress=log)
        await engine.close()  # waits for the cleanup
        assert result.engine == "comfyui" and result.instance == comfy.url
        assert (result.width, result.height) == (320, 240)
        with Image.open(result.output_path) as out:
            assert out.size == (320, 240)
        assert result.metadata["params"] == {
            "image_size": 608,
            "checkpoint": "ddcolor_modelscope.pth",
        }
        assert result.metadata["node_inference_s"] is not None  # our report node ran
        assert result.gpu_peak_mb == 0 and result.metadata["device"] == "cpu"
        assert result.inference_s == result.metadata["execution_s"]
        client = ComfyUIClient(comfy.url)
        assert await client.history(result.metadata["prompt_id"]) is None  # history deleted
        # ComfyUI cannot delete files: ours are overwritten with empty ones.
        sub, _, name = result.metadata["input_file"].rpartition("/")
        assert await client.view(FileRef(name, sub, "input")) == b""
        (output,) = result.metadata["output_files"]
        sub, _, name = output.rpartition("/")
        assert sub == "comfygate" and name.startswith("job_1_")
        assert await client.view(FileRef(name, sub, "output")) == b""
        await client.aclose()

    asyncio.run(scenario())
    assert log.fractions == sorted(log.fractions)
    assert log.saw("running DDColor_Colorize") and log.fractions[-1] >= 0.9


def test_packs_check_out_against_object_info(comfy: Server) -> None:
    packs = load_packs()
    person = packs["colorize.person"]
    raw = {
        "capability": "colorize.odd",
        "image": {"node": "1", "input": "image"},
        "output": {"node": "5"},
        "params": {
            "image_size": {
                "node": "3",
                "input": "model_input_size",
                "type": "int",
                "min": 0,
                "max": 9000,
                "default": 512,
                "step": 32,
            },
            "checkpoint": {
                "node": "3",
                "input": "checkpoint",
                "type": "choice",
                "allowed": ["ddcolor_modelscope.pth", "ddcolor_v9.pth"],
                "default": "ddcolor_v9.pth",
            },
        },
    }
    workflow = {**person.workflow, "6": {"class_type": "NoSuchNode", "inputs": {}}}
    odd = parse_pack(raw, workflow, name="odd")

    async def scenario() -> tuple[list[str], list[str]]:
        client = ComfyUIClient(comfy.url)
        try:
            return await check_pack_online(client, person), await check_pack_online(client, odd)
        finally:
            await client.aclose()

    good, bad = asyncio.run(scenario())
    assert good == []
    assert "odd: node class NoSuchNode is not installed" in bad
    assert any("does not offer ddcolor_v9.pth" in e for e in bad)
    assert any("minimum 0 is below" in e for e in bad) and any(
        "maximum 9000 is above" in e for e in bad
    )


def test_upload_clash_is_renamed_and_the_answer_is_used(comfy: Server, tmp_path: Path) -> None:
    name = f"clash-{uuid.uuid4().hex[:8]}.png"
    first, second = (
        make_image(tmp_path / "a.png", (32, 32)),
        make_image(tmp_path / "b.png", (48, 40)),
    )

    async def scenario() -> PromptHistory:
        client = ComfyUIClient(comfy.url)
        try:
            a = await client.upload_image(first.read_bytes(), name, subfolder="comfygate")
            b = await client.upload_image(second.read_bytes(), name, subfolder="comfygate")
            again = await client.upload_image(first.read_bytes(), name, subfolder="comfygate")
            assert a.filename == name and again.filename == name  # same bytes: reused
            assert b.filename == name.replace(".png", " (1).png")
            return await _run_prompt(client, b.load_image_value())
        finally:
            await client.aclose()

    history = asyncio.run(scenario())
    assert history.outcome == "success"


async def _run_prompt(
    client: ComfyUIClient, image: str, pack: str = "colorize.person"
) -> PromptHistory:
    chosen = load_packs()[pack]
    prompt = build_prompt(
        chosen, image_name=image, params=resolve_params(chosen, {}), output_prefix="comfygate/t"
    )
    return await _run(client, prompt)


def test_validation_errors_are_workflow_errors(comfy: Server, tmp_path: Path) -> None:
    source = make_image(tmp_path / "in.png", (32, 32))
    pack = load_packs()["colorize.person"]

    async def scenario() -> list[WorkflowError]:
        client = ComfyUIClient(comfy.url)
        errors = []
        try:
            ref = await client.upload_image(source.read_bytes(), f"v-{uuid.uuid4().hex}.png")
            prompt = build_prompt(
                pack, image_name=ref.load_image_value(), params=resolve_params(pack, {})
            )
            bad_value = {
                **prompt,
                "3": {**prompt["3"], "inputs": {**prompt["3"]["inputs"], "checkpoint": "nope.pth"}},
            }
            missing_class = {**prompt, "3": {**prompt["3"], "class_type": "NoSuchNode"}}
            missing_file = {
                **prompt,
                "1": {**prompt["1"], "inputs": {"image": "comfygate/never-uploaded.png"}},
            }
            for bad in (bad_value, missing_class, missing_file):
                with pytest.raises(WorkflowError) as info:
                    await client.submit(bad, prompt_id=str(uuid.uuid4()), client_id="c")
                errors.append(info.value)
        finally:
            await client.aclose()
        return errors

    bad_value, missing_class, missing_file = asyncio.run(scenario())
    assert bad_value.details["error_type"] == "prompt_outputs_failed_validation"
    assert any(
        "node 3 (DDColor_Colorize): Value not in list" in e for e in bad_value.details["errors"]
    )
    assert "NoSuchNode" in str(missing_class)
    assert "never-uploaded.png" in str(missing_file)


def test_a_node_failure_is_a_workflow_error(comfy: Server, tmp_path: Path) -> None:
    not_an_image = tmp_path / "broken.png"
    not_an_image.write_bytes(b"this is not a PNG at all")

    async def scenario() -> None:
        engine = make_engine([comfy.url])
        await engine.start()
        try:
            with pytest.raises(WorkflowError, match=r"node 1 \(LoadImage\) failed"):
                await engine.run(job(tmp_path, not_an_image), progress=ProgressLog())
            assert engine.status()[0]["up"]  # the instance is fine: not taken out
        finally:
            await engine.close()

    asyncio.run(scenario())


def test_timeout_cancels_the_prompt_first(comfy: Server, tmp_path: Path) -> None:

    async def scenario() -> None:
        engine = make_engine([comfy.url])
        await engine.start()
        source = comfy.make_slow(tmp_path)  # after the warm-up
        client = ComfyUIClient(comfy.url)
        try:
            with pytest.raises(JobTimeoutError) as info:
                await engine.run(job(tmp_path, source, timeout_s=1.0), progress=ProgressLog())
            assert info.value.details["stopped"] is True
            prompt_id = info.value.details["prompt_id"]
            assert prompt_id not in await client.queued_prompt_ids()
            assert engine.status()[0]["up"]
        finally:
            await client.aclose()
            await engine.close()
        if comfy.fake is not None:
            assert prompt_id in comfy.fake.interrupts

    asyncio.run(scenario())


def test_user_cancel_interrupts_the_running_prompt(comfy: Server, tmp_path: Path) -> None:
    log = ProgressLog()

    async def scenario() -> None:
        engine = make_engine([comfy.url])
        await engine.start()
        source = comfy.make_slow(tmp_path)  # after the warm-up
        try:
            task = asyncio.create_task(
                engine.run(job(tmp_path, source, job_id="job_c"), progress=log)
            )
            while not log.saw("running"):
                await asyncio.sleep(0.01)
            await engine.cancel("job_c")
            with pytest.raises(JobCancelledError):
                await task
            await engine.cancel("job_c")  # no longer running: a no-op
        finally:
            await engine.close()

    asyncio.run(scenario())


async def _follow(ws: object, prompt_id: str) -> list[tuple[str, str | None]]:
    """(event type, prompt id) of every JSON frame until ``prompt_id`` ends."""
    seen = []
    while True:
        frame = await asyncio.wait_for(ws.recv(), 60)  # type: ignore[attr-defined]
        event = parse_ws_text(frame) if isinstance(frame, str) else None
        if event is None:
            continue
        seen.append((event.type, event.prompt_id))
        if (
            event.type == "executing"
            and event.data["node"] is None
            and event.prompt_id == prompt_id
        ):
            return seen


def test_websocket_sends_status_first_and_only_our_prompts(comfy: Server, tmp_path: Path) -> None:
    source = make_image(tmp_path / "in.png", (32, 32))
    pack = load_packs()["colorize.person"]

    async def submit(client: ComfyUIClient, client_id: str) -> str:
        ref = await client.upload_image(source.read_bytes(), f"ws-{uuid.uuid4().hex}.png")
        prompt = build_prompt(
            pack, image_name=ref.load_image_value(), params=resolve_params(pack, {})
        )
        prompt_id = str(uuid.uuid4())
        await client.submit(prompt, prompt_id=prompt_id, client_id=client_id)
        return prompt_id

    async def scenario() -> tuple[list[tuple[str, str | None]], list[tuple[str, str | None]], str]:
        client = ComfyUIClient(comfy.url)
        ours, other = uuid.uuid4().hex, uuid.uuid4().hex
        try:
            async with client.websocket(ours) as ws, client.websocket(other) as ws_other:
                first = parse_ws_text(str(await ws.recv()))
                assert first is not None and first.type == "status" and first.data["sid"] == ours
                mine = await submit(client, ours)
                seen = await _follow(ws, mine)
                assert await client.history(mine) is not None  # written before executing(null)
                theirs = await submit(client, other)
                # Frames arrive in order: had ours gone to `other`, they would come first.
                seen_other = await _follow(ws_other, theirs)
                for prompt_id in (mine, theirs):
                    await client.delete_history(prompt_id)
                return seen, seen_other, mine
        finally:
            await client.aclose()

    seen, seen_other, mine = asyncio.run(scenario())
    kinds = [kind for kind, pid in seen if pid == mine]
    assert kinds[:2] == ["execution_start", "execution_cached"]
    assert "progress" in kinds and "executed" in kinds
    assert kinds.index("execution_success") < kinds.index("executing") or kinds[-1] == "executing"
    assert kinds[-1] == "executing"  # executing with node null is the very end
    assert not [kind for kind, pid in seen_other if pid == mine]


def test_cached_replay_does_no_work_but_still_has_outputs(comfy: Server, tmp_path: Path) -> None:
    """A re-used input name and parameters replay from ComfyUI's cache (why uploads are unique)."""
    source = make_image(tmp_path / "in.png", (40, 30))
    person = load_packs()["colorize.person"]
    plain = {
        k: v
        for k, v in person.workflow.items()
        if v["class_type"] in ("LoadImage", "DDColor_Colorize", "SaveImage")
    }
    plain["3"] = {**plain["3"], "inputs": {**plain["3"]["inputs"], "image": ["1", 0]}}
    plain["5"] = {**plain["5"], "inputs": {**plain["5"]["inputs"], "images": ["3", 0]}}
    manifest = {
        "capability": "plain",
        "image": {"node": "1", "input": "image"},
        "output": {"node": "5"},
    }
    pack = parse_pack(manifest, plain, name="plain")

    async def scenario() -> tuple[PromptHistory, PromptHistory]:
        client = ComfyUIClient(comfy.url)
        try:
            ref = await client.upload_image(source.read_bytes(), f"cache-{uuid.uuid4().hex}.png")
            prompt = build_prompt(pack, image_name=ref.load_image_value(), params={})
            return await _run(client, prompt), await _run(client, prompt)
        finally:
            await client.aclose()

    first, second = asyncio.run(scenario())
    assert first.outcome == second.outcome == "success"
    assert first.cached_nodes() == []
    assert sorted(second.cached_nodes()) == ["1", "3", "5"]
    assert second.output_images("5") == first.output_images("5")


async def _run(client: ComfyUIClient, prompt: dict[str, object]) -> PromptHistory:
    prompt_id = str(uuid.uuid4())
    await client.submit(prompt, prompt_id=prompt_id, client_id=uuid.uuid4().hex)
    for _ in range(1200):
        history = await client.history(prompt_id)
        if history is not None:
            await client.delete_history(prompt_id)
            return history
        await asyncio.sleep(0.05)
    raise AssertionError("prompt never finished")
