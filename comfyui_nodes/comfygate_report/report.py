"""Pure parts of the resource report: no ComfyUI and no torch needed to import or test.

A prompt's measurement starts in ``ComfygateStart`` (time mark, peak-memory reset) and
ends in ``ComfygateResourceReport``; the record below goes into the prompt's history
outputs as ``{"comfygate_report": [record]}``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

REPORT_KEY = "comfygate_report"
MIB = 1024 * 1024


@dataclass(frozen=True)
class Mark:
    """What the start node hands to the report node through the graph."""

    started_ns: int
    device: str


def start_mark(device: str, *, clock_ns: Any = time.perf_counter_ns) -> Mark:
    """A mark taken now on ``device`` (``cuda:0``, ``cpu`` ...)."""
    return Mark(started_ns=int(clock_ns()), device=device)


def build_report(mark: Mark, *, ended_ns: int, peak_bytes: int | None) -> dict[str, Any]:
    """The report record: inference time between the marks and peak GPU memory.

    ``peak_bytes`` is ``None`` on CPU (no GPU memory was used): reported as 0 MB.
    """
    elapsed_ns = max(0, ended_ns - mark.started_ns)
    peak_mb = 0 if not peak_bytes else -(-int(peak_bytes) // MIB)  # round up: never under-report
    return {
        "inference_s": round(elapsed_ns / 1e9, 6),
        "gpu_peak_mb": peak_mb,
        "device": mark.device,
    }


def ui_output(record: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The ``ui`` part of a node result: ComfyUI stores it in history outputs as is."""
    return {REPORT_KEY: [record]}
