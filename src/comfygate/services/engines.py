"""The engine port: whatever turns an input image into a result image.

Implemented by the built-in engines (``adapters/engines``: ``preview``,
``ddcolor-onnx``) and by ComfyUI worker pools (``adapters/comfyui``). The dispatcher
only ever sees this interface. Failures are raised as ``WorkerError`` subclasses from
``comfygate.domain.errors``; ``retryable`` tells the dispatcher whether another
instance may try again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class EngineJob:
    """One unit of work for an engine."""

    job_id: str
    capability: str
    input_path: Path
    output_dir: Path
    params: Mapping[str, Any] = field(default_factory=dict)
    """Workflow parameters: ``image_size``, ``checkpoint``, ``fp16``, ``tile_size``,
    ``upscale`` ... validated against the capability's manifest before the job runs."""
    timeout_s: float = 300.0
    started: Callable[[], None] | None = None
    """For an engine that may wait for a worker (ComfyUI: a free instance): call it once
    the job has one, and the timeout counts from then. Engines that start at once never
    call it; the wait it allows is at most ``timeout_s``."""


@dataclass(frozen=True, slots=True)
class EngineResult:
    """What an engine produced, with what it cost to produce it."""

    output_path: Path
    engine: str
    """``preview``, ``ddcolor-onnx`` or ``comfyui``: shown to users with every result."""
    width: int
    height: int
    inference_s: float
    gpu_peak_mb: int | None = None
    instance: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)


ProgressCallback = Callable[[float, str], Awaitable[None]]
"""``await progress(fraction_done, message)``; fraction in [0, 1]."""


class Engine(Protocol):
    """An image engine serving one or more capabilities."""

    name: str

    def capabilities(self) -> frozenset[str]:
        """The capabilities this engine can run now."""
        ...

    async def start(self) -> None:
        """Prepare (load models, probe servers, run the warm-up job)."""
        ...

    async def run(self, job: EngineJob, *, progress: ProgressCallback) -> EngineResult:
        """Run ``job`` to completion or raise a ``WorkerError``."""
        ...

    async def cancel(self, job_id: str) -> None:
        """Stop ``job_id`` if it is running; a no-op otherwise."""
        ...

    async def close(self) -> None:
        """Release connections and models."""
        ...
