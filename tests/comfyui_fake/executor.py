"""The fake's prompt executor: ComfyUI's message sequence and history format.

Per prompt: ``execution_start``, ``execution_cached``, then per node ``executing``
(+ ``progress`` and binary previews in the model node, ``executed`` for nodes with UI
output), then ``execution_success`` / ``execution_error`` / ``execution_interrupted``;
the history entry is written, and only then ``executing`` with ``node: null``.
"""

from __future__ import annotations

import asyncio
import json
import struct
import time
from typing import TYPE_CHECKING, Any

from tests.comfyui_fake.catalog import annotated, colorize, load_image, run_report_node

if TYPE_CHECKING:
    from tests.comfyui_fake.server import FakeComfyUI

PREVIEW_FRAME = struct.pack(">I", 1) + struct.pack(">I", 1) + b"\xff\xd8 not a real jpeg"


class Interrupted(Exception):
    pass


def now_ms() -> int:
    return int(time.time() * 1000)


def topo_order(prompt: dict[str, Any]) -> list[str]:
    order: list[str] = []

    def visit(node_id: str) -> None:
        if node_id in order:
            return
        for value in prompt[node_id].get("inputs", {}).values():
            if isinstance(value, list) and len(value) == 2:
                visit(str(value[0]))
        order.append(node_id)

    for node_id in prompt:
        visit(node_id)
    return order


class Execution:
    """One prompt being executed by the fake."""

    def __init__(
        self,
        fake: FakeComfyUI,
        number: int,
        prompt_id: str,
        prompt: dict[str, Any],
        client_id: str | None,
    ):
        self.fake, self.number, self.prompt_id, self.prompt, self.client_id = (
            fake,
            number,
            prompt_id,
            prompt,
            client_id,
        )
        self.messages: list[list[Any]] = []
        self.interrupted = False
        self.progress_sent = 0
        self.quiet = False

    async def send(self, event: str, data: dict[str, Any], *, broadcast: bool = False) -> None:
        await self.fake.send(None if broadcast else self.client_id, event, data)

    async def add(self, event: str, data: dict[str, Any], *, broadcast: bool = False) -> None:
        data = {**data, "timestamp": now_ms()}
        self.messages.append([event, data])
        await self.send(event, data, broadcast=broadcast)

    async def run(self) -> None:
        pid = self.prompt_id
        await self.add("execution_start", {"prompt_id": pid})
        order = topo_order(self.prompt)
        # ComfyUI caches outputs by inputs; ComfygateStart (IS_CHANGED = NaN) defeats that.
        key = json.dumps(self.prompt, sort_keys=True)
        replay = self.fake.seen_prompts.get(key)
        if any(n["class_type"] == "ComfygateStart" for n in self.prompt.values()):
            replay = None
        if self.fake.behaviour.cached:
            replay = replay or {}
        cached = order if replay is not None else []
        await self.add("execution_cached", {"nodes": cached, "prompt_id": pid})
        if replay is not None:
            status, ui = await self.replay(replay, order)
        else:
            status, ui = await self.execute(order)
        if status == "success":
            await self.add("execution_success", {"prompt_id": pid})
            self.fake.seen_prompts[key] = ui
        self.fake.history[pid] = {
            "prompt": [self.number, pid, self.prompt, {"client_id": self.client_id}, []],
            "outputs": ui,
            "status": {
                "status_str": status,
                "completed": status == "success",
                "messages": self.messages,
            },
            "meta": {k: {"node_id": k} for k in ui},
        }
        await self.send("executing", {"node": None, "prompt_id": pid})

    async def replay(
        self, cached_ui: dict[str, Any], order: list[str]
    ) -> tuple[str, dict[str, Any]]:
        """Everything cached: no ``executing``, no progress, ``executed`` from the cache."""
        if not cached_ui:  # scripted replay without an earlier run: produce the outputs quietly
            self.quiet = True
            return await self.execute(order)
        for node_id, node_ui in cached_ui.items():
            await self.send(
                "executed",
                {
                    "node": node_id,
                    "display_node": node_id,
                    "output": node_ui,
                    "prompt_id": self.prompt_id,
                },
            )
        return "success", dict(cached_ui)

    async def execute(self, order: list[str]) -> tuple[str, dict[str, Any]]:
        pid = self.prompt_id
        values: dict[str, Any] = {}
        ui: dict[str, Any] = {}
        for node_id in order:
            node = self.prompt[node_id]
            if not self.quiet:
                await self.send(
                    "executing", {"node": node_id, "display_node": node_id, "prompt_id": pid}
                )
            try:
                if self.interrupted:
                    raise Interrupted
                values[node_id], node_ui = await self.run_node(node_id, node, values)
            except Interrupted:
                data = {
                    "prompt_id": pid,
                    "node_id": node_id,
                    "node_type": node["class_type"],
                    "executed": list(values),
                }
                await self.add("execution_interrupted", data, broadcast=True)
                return "error", ui
            except Exception as exc:
                await self.add(
                    "execution_error",
                    {
                        "prompt_id": pid,
                        "node_id": node_id,
                        "node_type": node["class_type"],
                        "executed": list(values),
                        "exception_message": str(exc),
                        "exception_type": type(exc).__name__,
                        "traceback": ["fake traceback"],
                        "current_inputs": {},
                        "current_outputs": list(values),
                    },
                )
                return "error", ui
            if node_ui:
                ui[node_id] = node_ui
                await self.send(
                    "executed",
                    {"node": node_id, "display_node": node_id, "output": node_ui, "prompt_id": pid},
                )
        return "success", ui

    async def run_node(
        self, node_id: str, node: dict[str, Any], values: dict[str, Any]
    ) -> tuple[Any, Any]:
        cls = node["class_type"]
        args = {
            k: values[str(v[0])][v[1]] if isinstance(v, list) else v
            for k, v in node.get("inputs", {}).items()
        }
        if self.fake.behaviour.fail_class == cls:
            raise RuntimeError(f"fake failure in {cls}: CUDA out of memory")
        if cls == "LoadImage":
            return (load_image(annotated(self.fake.input_dir, args["image"])), None), None
        if cls == "DDColor_Colorize":
            await self.model_steps(node_id)
            return (colorize(args["image"]),), None
        if cls == "ComfygateStart":
            return run_report_node(cls, args["image"]), None
        if cls == "ComfygateResourceReport":
            out = run_report_node(cls, args["image"], args["mark"])
            return out["result"], out["ui"]
        if cls == "SaveImage":
            return (), self.fake.save_output(args["images"], args.get("filename_prefix", "ComfyUI"))
        raise RuntimeError(f"fake cannot run {cls}")

    async def model_steps(self, node_id: str) -> None:
        behaviour = self.fake.behaviour
        steps = 0 if self.quiet else max(behaviour.progress_steps, 1)
        for step in range(1, steps + 1):
            await asyncio.sleep(behaviour.job_s / steps)
            if self.interrupted:
                raise Interrupted
            data = {"value": step, "max": steps, "prompt_id": self.prompt_id, "node": node_id}
            await self.send("progress", data)
            await self.fake.send_bytes(self.client_id, PREVIEW_FRAME)
            self.progress_sent += 1
            await self.after_progress()

    async def after_progress(self) -> None:
        behaviour = self.fake.behaviour
        if behaviour.drop_ws_after_progress == self.progress_sent:
            await self.fake.close_sockets()
        if behaviour.die_after_progress == self.progress_sent:
            self.fake.kill()
            await asyncio.sleep(3600)  # the server is going away; this task dies with it
