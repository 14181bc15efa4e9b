"""The fake ComfyUI server: routes, websocket, queue and lifecycle (uvicorn in a thread)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from PIL import Image
from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from tests.comfyui_fake.catalog import OBJECT_INFO, node_info, validate_node
from tests.comfyui_fake.executor import Execution


@dataclass
class FakeBehaviour:
    """The scenario; tests change it between (or during) jobs."""

    job_s: float = 0.0
    progress_steps: int = 4
    fail_class: str | None = None
    """Node class that raises during execution (an ``execution_error``)."""
    reject: str | None = None
    """``node_errors_200`` | ``legacy_400`` | ``plain_500``: how ``POST /prompt`` fails."""
    cached: bool = False
    drop_ws_after_progress: int | None = None
    die_after_progress: int | None = None
    rename_uploads: bool = False
    jobs_cancel_api: bool = False
    ignore_interrupt: bool = False
    history_errors: int = 0
    """The next this many ``GET /history/{id}`` get a 502 (a proxy's hiccup)."""
    lose_prompts: bool = False
    """``POST /prompt`` answers 200 but the prompt never runs (a queue cleared at once)."""
    upload_status: int | None = None
    """If set, ``POST /upload/image`` answers this status (a proxy's body limit: 413)."""
    upload_delay_s: float = 0.0
    """How long ``POST /upload/image`` takes to answer (a big image, a slow link)."""
    view_delay_s: float = 0.0
    """How long ``GET /view`` takes to answer (a big output, a slow link)."""
    stats_status: int | None = None
    """If set, ``GET /system_stats`` answers this status (a health check failing)."""
    auth: str | None = None
    missing_choices: list[str] = field(default_factory=list)
    """Combo values (checkpoints) validation now refuses, e.g. a model file deleted."""
    """If set, HTTP requests without ``Authorization: <auth>`` get 401 (a proxy in front)."""


@dataclass
class FakeComfyUI:
    """A fake ComfyUI on 127.0.0.1. ``with FakeComfyUI(tmp) as fake: fake.url``."""

    root: Path
    behaviour: FakeBehaviour = field(default_factory=FakeBehaviour)
    port: int = 0
    history: dict[str, Any] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)
    interrupts: list[str | None] = field(default_factory=list)
    submitted: list[dict[str, Any]] = field(default_factory=list)
    seen_prompts: dict[str, Any] = field(default_factory=dict)
    max_in_queue: int = 0

    def __post_init__(self) -> None:
        self.input_dir = self.root / "input"
        self.output_dir = self.root / "output"
        for d in (self.input_dir, self.output_dir, self.root / "temp"):
            d.mkdir(parents=True, exist_ok=True)
        self.sockets: dict[str, WebSocket] = {}
        self.pending: list[Execution] = []
        self.running: Execution | None = None
        self.wakeup: asyncio.Event | None = None
        self._number = 0
        self._counter = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- lifecycle -----------------------------------------------------------------

    def start(self) -> FakeComfyUI:
        # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets that say so
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app(), log_level="error", ws="websockets-sansio", lifespan="on"
        )
        self._server = server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("fake ComfyUI did not start")
            time.sleep(0.01)
        return self

    def kill(self) -> None:
        """Stop abruptly (connections cut, port closed), like a crashed server."""
        if self._server is not None:
            self._server.should_exit = True
            self._server.force_exit = True

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._thread, self._server = None, None
        self.sockets.clear()
        self.pending.clear()
        self.running = None

    def __enter__(self) -> FakeComfyUI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- websocket ------------------------------------------------------------------

    async def send(self, sid: str | None, event: str, data: dict[str, Any]) -> None:
        targets = (
            list(self.sockets.values())
            if sid is None
            else [self.sockets[sid]]
            if sid in self.sockets
            else []
        )
        for ws in targets:
            with contextlib.suppress(Exception):
                await ws.send_text(json.dumps({"type": event, "data": data}))

    async def send_bytes(self, sid: str | None, payload: bytes) -> None:
        if sid in self.sockets:
            with contextlib.suppress(Exception):
                await self.sockets[sid].send_bytes(payload)

    async def close_sockets(self) -> None:
        for ws in list(self.sockets.values()):
            with contextlib.suppress(Exception):
                await ws.close(code=1011)
        self.sockets.clear()

    async def ws_endpoint(self, ws: WebSocket) -> None:
        await ws.accept()
        sid = ws.query_params.get("clientId") or uuid.uuid4().hex
        self.sockets[sid] = ws
        await self.send(sid, "status", {"status": self.queue_info(), "sid": sid})
        try:
            while True:
                await ws.receive_text()
        except WebSocketDisconnect:
            pass
        finally:
            self.sockets.pop(sid, None)  # as ComfyUI does: by id, whichever socket it is

    # --- queue and execution ---------------------------------------------------------

    def queue_info(self) -> dict[str, Any]:
        return {"exec_info": {"queue_remaining": len(self.pending) + (1 if self.running else 0)}}

    async def executor(self) -> None:
        self.wakeup = asyncio.Event()
        while True:
            if not self.pending:
                self.wakeup.clear()
                await self.wakeup.wait()
                continue
            self.running = self.pending.pop(0)
            try:
                await self.running.run()
            finally:
                self.running = None

    def save_output(self, image: Image.Image, prefix: str) -> dict[str, Any]:
        subfolder, _, name = prefix.rpartition("/")
        folder = self.output_dir / subfolder
        folder.mkdir(parents=True, exist_ok=True)
        self._counter += 1
        filename = f"{name}_{self._counter:05}_.png"
        image.save(folder / filename)
        return {"images": [{"filename": filename, "subfolder": subfolder, "type": "output"}]}

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(self.executor())
        yield
        task.cancel()

    def app(self) -> Starlette:
        from tests.comfyui_fake import routes

        app = Starlette(
            routes=[Route(path, getattr(routes, fn), methods=[m]) for m, path, fn in routes.TABLE]
            + [WebSocketRoute("/ws", self.ws_endpoint)],
            lifespan=self.lifespan,
        )
        app.state.fake = self
        return app

    # --- helpers used by routes ---------------------------------------------------------

    def next_number(self) -> int:
        self._number += 1
        return self._number

    def object_info(self, class_type: str) -> dict[str, Any]:
        if class_type not in OBJECT_INFO:
            return {}
        info = node_info(class_type)
        if class_type == "LoadImage":
            files = sorted(p.name for p in self.input_dir.iterdir() if p.is_file())
            info["input"] = {"required": {"image": [files, {"image_upload": True}]}}
        return {class_type: info}

    def validate(self, prompt: dict[str, Any]) -> tuple[Response | None, dict[str, Any]]:
        return _validate(self, prompt)


def _validate(fake: FakeComfyUI, prompt: dict[str, Any]) -> tuple[Response | None, dict[str, Any]]:
    """ComfyUI's ``validate_prompt`` answers: (error response or None, node_errors)."""
    legacy = fake.behaviour.reject == "legacy_400"
    for node_id, node in prompt.items():
        if node.get("class_type") not in OBJECT_INFO:
            msg = f"Cannot execute because node {node.get('class_type')} does not exist."
            error: Any = (
                msg
                if legacy
                else {
                    "type": "invalid_prompt",
                    "message": msg,
                    "details": f"Node ID '#{node_id}'",
                    "extra_info": {},
                }
            )
            return JSONResponse(
                {"error": error, "node_errors": [] if legacy else {}}, status_code=400
            ), {}
    outputs = [i for i, n in prompt.items() if OBJECT_INFO[n["class_type"]]["output_node"]]
    if not outputs:
        error = {
            "type": "prompt_no_outputs",
            "message": "Prompt has no outputs",
            "details": "",
            "extra_info": {},
        }
        return JSONResponse({"error": error, "node_errors": {}}, status_code=400), {}
    node_errors = {}
    for node_id, node in prompt.items():
        errors = validate_node(node, fake.input_dir, fake.behaviour.missing_choices)
        if errors:
            node_errors[node_id] = {
                "errors": errors,
                "dependent_outputs": outputs,
                "class_type": node["class_type"],
            }
    if node_errors:
        details = "\n".join(
            f"{e['message']}: {e['details']}" for n in node_errors.values() for e in n["errors"]
        )
        if legacy:
            return JSONResponse(
                {"error": "Prompt outputs failed validation", "node_errors": []}, status_code=400
            ), {}
        error = {
            "type": "prompt_outputs_failed_validation",
            "message": "Prompt outputs failed validation",
            "details": details,
            "extra_info": {},
        }
        return JSONResponse({"error": error, "node_errors": node_errors}, status_code=400), {}
    return None, {}


__all__ = ["FakeBehaviour", "FakeComfyUI"]
