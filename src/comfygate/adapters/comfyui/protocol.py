"""ComfyUI's wire formats, parsed: upload answers, submit errors, websocket events, history.

Shapes as ComfyUI's ``server.py`` / ``execution.py`` / ``main.py`` produce them:

- ``POST /prompt`` 200: ``{prompt_id, number, node_errors}`` (non-empty ``node_errors``
  means some outputs failed validation); 400: ``{"error": {type, message, details},
  "node_errors": {id: {errors: [...], class_type}}}`` (older servers: ``error`` is a
  string, ``node_errors`` a list); a body that is not JSON gets a plain-text 500.
- websocket text frames ``{"type", "data"}``; binary frames are previews (ignored).
- ``/history/{id}``: ``{id: {prompt, outputs: {node: ui}, status: {status_str,
  completed, messages: [[event, {..., timestamp(ms)}], ...]}}}`` or ``{}``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from comfygate.domain.errors import WorkerError, WorkerUnavailableError, WorkflowError

END_EVENTS = ("execution_success", "execution_error", "execution_interrupted")


@dataclass(frozen=True, slots=True)
class FileRef:
    """A file on a ComfyUI server, as ``/upload/image`` answers and ``/view`` takes it."""

    filename: str
    subfolder: str = ""
    type: str = "input"

    def load_image_value(self) -> str:
        """The value ``LoadImage``'s ``image`` input wants for this file."""
        path = f"{self.subfolder}/{self.filename}" if self.subfolder else self.filename
        return path if self.type == "input" else f"{path} [{self.type}]"


@dataclass(frozen=True, slots=True)
class WsEvent:
    """One JSON websocket message."""

    type: str
    data: Mapping[str, Any]

    @property
    def prompt_id(self) -> str | None:
        value = self.data.get("prompt_id")
        return value if isinstance(value, str) else None


def parse_ws_text(text: str) -> WsEvent | None:
    """A text frame as an event, or None if it is not one we understand."""
    try:
        raw = json.loads(text)
    except ValueError:
        return None
    if not isinstance(raw, Mapping) or not isinstance(raw.get("type"), str):
        return None
    data = raw.get("data")
    return WsEvent(raw["type"], data if isinstance(data, Mapping) else {})


@dataclass(frozen=True, slots=True)
class PromptHistory:
    """One finished prompt as ``/history/{id}`` reports it."""

    prompt_id: str
    status_str: str
    completed: bool
    messages: tuple[tuple[str, Mapping[str, Any]], ...]
    outputs: Mapping[str, Any] = field(default_factory=dict)

    def message(self, event: str) -> Mapping[str, Any] | None:
        return next((data for name, data in self.messages if name == event), None)

    @property
    def outcome(self) -> str:
        """``success``, ``error`` or ``interrupted``."""
        if self.message("execution_interrupted") is not None:
            return "interrupted"
        if self.message("execution_error") is not None or self.status_str == "error":
            return "error"
        return "success"

    def execution_s(self) -> float | None:
        """From ``execution_start`` to the end event, by the server's ms timestamps."""
        start = self.message("execution_start")
        end = next((self.message(e) for e in END_EVENTS if self.message(e) is not None), None)
        if start is None or end is None:
            return None
        t0, t1 = start.get("timestamp"), end.get("timestamp")
        if not isinstance(t0, int | float) or not isinstance(t1, int | float):
            return None
        return max(0.0, (t1 - t0) / 1000.0)

    def cached_nodes(self) -> list[str]:
        cached = self.message("execution_cached")
        nodes = cached.get("nodes", []) if cached is not None else []
        return [str(n) for n in nodes] if isinstance(nodes, list) else []

    def error_text(self) -> str:
        """A one-line reason for a failed prompt."""
        error = self.message("execution_error")
        if error is None:
            return f"prompt ended with status {self.status_str!r}"
        return (
            f"node {error.get('node_id')} ({error.get('node_type')}) failed: "
            f"{error.get('exception_type', 'error')}: {error.get('exception_message', '')}".strip()
        )

    def output_images(self, node: str) -> list[FileRef]:
        ui = self.outputs.get(node)
        images = ui.get("images", []) if isinstance(ui, Mapping) else []
        return [
            FileRef(str(i["filename"]), str(i.get("subfolder", "")), str(i.get("type", "output")))
            for i in images
            if isinstance(i, Mapping) and "filename" in i
        ]

    def report(self, node: str | None, key: str = "comfygate_report") -> Mapping[str, Any] | None:
        """Our resource-report node's record, if the workflow has one and it ran."""
        ui = self.outputs.get(node) if node is not None else None
        records = ui.get(key) if isinstance(ui, Mapping) else None
        if isinstance(records, list) and records and isinstance(records[0], Mapping):
            return records[0]
        return None


def parse_history(prompt_id: str, body: Any) -> PromptHistory | None:
    """The prompt's entry, or None while ComfyUI does not have it (queued or running)."""
    entry = body.get(prompt_id) if isinstance(body, Mapping) else None
    if not isinstance(entry, Mapping):
        return None
    raw_status = entry.get("status")
    status: Mapping[str, Any] = raw_status if isinstance(raw_status, Mapping) else {}
    messages = tuple(
        (str(m[0]), m[1])
        for m in status.get("messages", []) or []
        if isinstance(m, list | tuple) and len(m) == 2 and isinstance(m[1], Mapping)
    )
    outputs = entry.get("outputs")
    return PromptHistory(
        prompt_id=prompt_id,
        status_str=str(status.get("status_str", "success")),
        completed=bool(status.get("completed", True)),
        messages=messages,
        outputs=outputs if isinstance(outputs, Mapping) else {},
    )


def describe_node_errors(node_errors: Any) -> list[str]:
    """One line per node error: ``node 3 (DDColor_Colorize): Value not in list: ...``."""
    if not isinstance(node_errors, Mapping):
        return []
    lines = []
    for node_id, raw in node_errors.items():
        info: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
        for err in info.get("errors", []) or []:
            if isinstance(err, Mapping):
                what = f"{err.get('message', 'error')}: {err.get('details', '')}".rstrip(": ")
                lines.append(f"node {node_id} ({info.get('class_type', '?')}): {what}")
    return lines


def submit_failure(status: int, body_text: str) -> WorkerError:
    """Classify a failed (or 200-with-node_errors) ``POST /prompt`` answer."""
    try:
        body = json.loads(body_text)
    except ValueError:
        body = None
    if status in (401, 403, 404, 502, 503, 504):  # a proxy or the instance, not the workflow
        return WorkerUnavailableError(f"ComfyUI answered HTTP {status}: {body_text[:200]}")
    if not isinstance(body, Mapping):
        return WorkflowError(
            f"ComfyUI rejected the prompt (HTTP {status}): {body_text[:300]}",
            queued=status == 200,
        )
    error = body.get("error")
    node_lines = describe_node_errors(body.get("node_errors"))
    if isinstance(error, Mapping):
        kind = str(error.get("type", "invalid_prompt"))
        message = str(error.get("message", "prompt rejected"))
        if not node_lines and error.get("details"):
            node_lines = [str(error["details"])]
    else:
        kind = "node_errors" if error is None else "invalid_prompt"
        message = str(error) if error else "some outputs failed validation"
    text = "; ".join([message, *node_lines])
    return WorkflowError(
        f"ComfyUI rejected the prompt ({kind}): {text}",
        error_type=kind,
        errors=node_lines,
        queued=status == 200,  # a 200 with node_errors queued it all the same
    )
