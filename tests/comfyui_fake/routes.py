"""The fake's HTTP routes, answering in ComfyUI's shapes (``server.py``)."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from tests.comfyui_fake.executor import Execution

if TYPE_CHECKING:
    from tests.comfyui_fake.server import FakeComfyUI

TABLE = [
    ("GET", "/system_stats", "system_stats"),
    ("GET", "/object_info/{node_class}", "object_info"),
    ("GET", "/prompt", "get_prompt"),
    ("POST", "/prompt", "post_prompt"),
    ("GET", "/queue", "get_queue"),
    ("POST", "/queue", "post_queue"),
    ("POST", "/interrupt", "interrupt"),
    ("POST", "/api/jobs/{prompt_id}/cancel", "jobs_cancel"),
    ("POST", "/upload/image", "upload_image"),
    ("GET", "/view", "view"),
    ("GET", "/history/{prompt_id}", "get_history"),
    ("POST", "/history", "post_history"),
]
PLAIN_500 = "500 Internal Server Error\n\nServer got itself in trouble"


def _fake(request: Request) -> FakeComfyUI:
    fake: FakeComfyUI = request.app.state.fake
    fake.calls.append((request.method, request.url.path))
    if fake.behaviour.auth and request.headers.get("authorization") != fake.behaviour.auth:
        raise HTTPException(401, "proxy: unauthorized")
    return fake


async def system_stats(request: Request) -> Response:
    fake = _fake(request)
    if fake.behaviour.stats_status is not None:
        status = fake.behaviour.stats_status
        return PlainTextResponse(f"{status} from the fake", status_code=status)
    device = {
        "name": "cuda:0 Fake GPU",
        "type": "cuda",
        "index": 0,
        "vram_total": 8 << 30,
        "vram_free": 6 << 30,
        "torch_vram_total": 8 << 30,
        "torch_vram_free": 6 << 30,
    }
    return JSONResponse({"system": {"os": "linux", "comfyui_version": "fake"}, "devices": [device]})


async def object_info(request: Request) -> Response:
    return JSONResponse(_fake(request).object_info(request.path_params["node_class"]))


async def get_prompt(request: Request) -> Response:
    return JSONResponse(_fake(request).queue_info())


def _queue_item(ex: Execution) -> list[Any]:
    return [ex.number, ex.prompt_id, ex.prompt, {"client_id": ex.client_id}, []]


async def get_queue(request: Request) -> Response:
    fake = _fake(request)
    running = [_queue_item(fake.running)] if fake.running else []
    return JSONResponse(
        {"queue_running": running, "queue_pending": [_queue_item(e) for e in fake.pending]}
    )


async def post_queue(request: Request) -> Response:
    fake = _fake(request)
    data = json.loads(await request.body())
    for pid in data.get("delete", []):
        fake.pending = [e for e in fake.pending if e.prompt_id != pid]
    return Response(status_code=200)


def _interrupt(fake: FakeComfyUI, prompt_id: str | None, *, record: bool = True) -> None:
    if record:
        fake.interrupts.append(prompt_id)
    running = fake.running
    if running and not fake.behaviour.ignore_interrupt and prompt_id in (None, running.prompt_id):
        running.interrupted = True


async def interrupt(request: Request) -> Response:
    fake = _fake(request)
    try:
        data = json.loads(await request.body())
    except ValueError:
        data = {}
    _interrupt(fake, data.get("prompt_id"))
    return Response(status_code=200)


async def jobs_cancel(request: Request) -> Response:
    fake = _fake(request)
    if not fake.behaviour.jobs_cancel_api:
        return PlainTextResponse("405: Method Not Allowed", status_code=405)
    pid = request.path_params["prompt_id"]
    fake.pending = [e for e in fake.pending if e.prompt_id != pid]
    _interrupt(fake, pid, record=False)
    return JSONResponse({"prompt_id": pid, "status": "cancelled"})


async def post_prompt(request: Request) -> Response:
    fake = _fake(request)
    try:
        data = json.loads(await request.body())
    except ValueError:
        return PlainTextResponse(PLAIN_500, status_code=500)
    if fake.behaviour.reject == "plain_500":
        return PlainTextResponse(PLAIN_500, status_code=500)
    if "prompt" not in data:
        error = {
            "type": "no_prompt",
            "message": "No prompt provided",
            "details": "No prompt provided",
            "extra_info": {},
        }
        return JSONResponse({"error": error, "node_errors": {}}, status_code=400)
    prompt = data["prompt"]
    rejected, node_errors = fake.validate(prompt)
    if rejected is not None:
        return rejected
    if fake.behaviour.reject == "node_errors_200":  # another output failed validation
        node_errors = {
            "99": {
                "errors": [
                    {
                        "type": "value_not_in_list",
                        "message": "Value not in list",
                        "details": "checkpoint: 'x.pth' not in [...]",
                        "extra_info": {},
                    }
                ],
                "dependent_outputs": ["99"],
                "class_type": "DDColor_Colorize",
            }
        }
    prompt_id = str(data.get("prompt_id") or uuid.uuid4())
    number = fake.next_number()
    fake.submitted.append(data)
    if fake.behaviour.lose_prompts:
        return JSONResponse({"prompt_id": prompt_id, "number": number, "node_errors": {}})
    fake.pending.append(Execution(fake, number, prompt_id, prompt, data.get("client_id")))
    if fake.wakeup is not None:
        fake.wakeup.set()
    in_queue = len(fake.pending) + (1 if fake.running else 0)
    fake.max_in_queue = max(fake.max_in_queue, in_queue)
    return JSONResponse({"prompt_id": prompt_id, "number": number, "node_errors": node_errors})


async def upload_image(request: Request) -> Response:
    fake = _fake(request)
    await asyncio.sleep(fake.behaviour.upload_delay_s)
    if fake.behaviour.upload_status is not None:
        status = fake.behaviour.upload_status
        return PlainTextResponse(f"{status} refused by the fake", status_code=status)
    async with request.form() as form:
        image = form.get("image")
        if not isinstance(image, UploadFile) or not image.filename:
            return Response(status_code=400)
        content = await image.read()
        name = image.filename
        kind = str(form.get("type") or "input")
        subfolder = str(form.get("subfolder") or "")
        overwrite = str(form.get("overwrite")) in ("true", "1")
    folder = {"input": fake.input_dir, "output": fake.output_dir}.get(kind, fake.root / "temp")
    folder = folder / subfolder
    folder.mkdir(parents=True, exist_ok=True)
    if not overwrite:
        name = _free_name(folder, name, content, force_rename=fake.behaviour.rename_uploads)
    (folder / name).write_bytes(content)
    return JSONResponse({"name": name, "subfolder": subfolder, "type": kind})


def _free_name(folder: Path, name: str, content: bytes, *, force_rename: bool) -> str:
    """ComfyUI's rule: same bytes reuse the name, other bytes get ``name (i).ext``."""
    stem, dot, ext = name.rpartition(".")
    i = 1
    while (folder / name).exists() or (force_rename and i == 1):
        if (folder / name).exists() and (folder / name).read_bytes() == content:
            break
        name = f"{stem} ({i}){dot}{ext}"
        i += 1
    return name


async def view(request: Request) -> Response:
    fake = _fake(request)
    await asyncio.sleep(fake.behaviour.view_delay_s)
    q = request.query_params
    base = {"input": fake.input_dir, "output": fake.output_dir}.get(
        q.get("type", "output"), fake.root / "temp"
    )
    path = base / q.get("subfolder", "") / q.get("filename", "")
    if not path.is_file():
        return Response(status_code=404)
    return Response(path.read_bytes(), media_type="image/png")


async def get_history(request: Request) -> Response:
    fake = _fake(request)
    if fake.behaviour.history_errors > 0:
        fake.behaviour.history_errors -= 1
        return PlainTextResponse("502 Bad Gateway", status_code=502)
    pid = request.path_params["prompt_id"]
    return JSONResponse({pid: fake.history[pid]} if pid in fake.history else {})


async def post_history(request: Request) -> Response:
    fake = _fake(request)
    data = json.loads(await request.body())
    for pid in data.get("delete", []):
        fake.history.pop(pid, None)
    return Response(status_code=200)
