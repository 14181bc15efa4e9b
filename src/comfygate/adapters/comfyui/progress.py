"""Turns ComfyUI's per-node websocket events into one job-wide progress fraction.

The job is: upload (to 5%), queued (10%), then each node of the prompt an equal share
of 10%..95%, with ``progress`` (value/max) moving inside the running node; cached
nodes count as done. Updates are monotonic and thinned out (one per 1%) because
samplers can send hundreds of ``progress`` events.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from comfygate.adapters.comfyui.protocol import WsEvent
from comfygate.services.engines import ProgressCallback

QUEUED = 0.10
EXECUTION_SPAN = 0.85
MIN_STEP = 0.01


class ProgressTracker:
    """Follows one prompt's events and reports monotonic progress."""

    def __init__(self, prompt: Mapping[str, Any], progress: ProgressCallback) -> None:
        self._classes = {str(k): str(v.get("class_type", "?")) for k, v in prompt.items()}
        self._progress = progress
        self._done: set[str] = set()
        self._node: str | None = None
        self._node_fraction = 0.0
        self._reported = -1.0
        self._message = ""
        self.progress_events = 0

    async def report(self, fraction: float, message: str) -> None:
        """Report ``fraction`` if it moved enough (or the message changed)."""
        fraction = min(max(fraction, self._reported, 0.0), 1.0)
        if fraction - self._reported < MIN_STEP and message == self._message:
            return
        self._reported, self._message = fraction, message
        await self._progress(fraction, message)

    def _fraction(self) -> float:
        total = max(len(self._classes), 1)
        done = len(self._done) + (self._node_fraction if self._node not in self._done else 0)
        return QUEUED + EXECUTION_SPAN * min(done / total, 1.0)

    async def on_event(self, event: WsEvent) -> None:
        """Feed one event that belongs to our prompt."""
        data = event.data
        if event.type == "execution_start":
            await self.report(QUEUED, "started")
        elif event.type == "execution_cached":
            nodes = data.get("nodes")
            if isinstance(nodes, list):
                self._done.update(str(n) for n in nodes if str(n) in self._classes)
            await self.report(self._fraction(), "started")
        elif event.type == "executing" and data.get("node") is not None:
            if self._node is not None:
                self._done.add(self._node)
            self._node, self._node_fraction = str(data["node"]), 0.0
            await self.report(self._fraction(), f"running {self._classes.get(self._node, '?')}")
        elif event.type == "progress":
            self.progress_events += 1
            value, maximum = data.get("value"), data.get("max")
            if isinstance(value, int | float) and isinstance(maximum, int | float) and maximum > 0:
                self._node_fraction = min(float(value) / float(maximum), 1.0)
            await self.report(
                self._fraction(), f"running {self._classes.get(self._node or '', '?')}"
            )
        elif event.type == "executed" and data.get("node") is not None:
            self._done.add(str(data["node"]))
            await self.report(self._fraction(), self._message or "running")
