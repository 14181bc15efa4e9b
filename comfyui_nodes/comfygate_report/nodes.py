"""The ComfyUI nodes: ``ComfygateStart`` before the model, ``ComfygateResourceReport`` after.

Place them around the expensive node(s):
``LoadImage -> ComfygateStart -> DDColor_Colorize -> ComfygateResourceReport -> SaveImage``,
with the start node's ``mark`` output wired into the report node. The start node is
never cached (``IS_CHANGED`` is NaN), so everything after it runs and is measured for
every prompt. torch is optional: without it (or without CUDA) the peak is 0.
"""

from __future__ import annotations

import time
from typing import Any

from .report import Mark, build_report, start_mark, ui_output

try:  # ComfyUI always has torch; the guard keeps this importable for tests and tools
    import torch
except ImportError:  # pragma: no cover - depends on the environment
    torch = None


def _cuda() -> Any:
    if torch is not None and torch.cuda.is_available():
        return torch.cuda
    return None


def _device_name() -> str:
    cuda = _cuda()
    return f"cuda:{cuda.current_device()}" if cuda is not None else "cpu"


class ComfygateStart:
    """Passes the image through; starts the clock and resets the GPU peak counter."""

    CATEGORY = "comfygate"
    FUNCTION = "start"
    RETURN_TYPES = ("IMAGE", "COMFYGATE_MARK")
    RETURN_NAMES = ("image", "mark")

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"image": ("IMAGE",)}}

    @classmethod
    def IS_CHANGED(cls, **_: Any) -> float:
        return float("nan")  # NaN != NaN: never cached, so each prompt is measured

    def start(self, image: Any) -> tuple[Any, Mark]:
        cuda = _cuda()
        if cuda is not None:
            cuda.synchronize()
            cuda.reset_peak_memory_stats()
        return image, start_mark(_device_name())


class ComfygateResourceReport:
    """Passes the image through; reports time since the mark and the GPU peak."""

    CATEGORY = "comfygate"
    FUNCTION = "report"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"image": ("IMAGE",), "mark": ("COMFYGATE_MARK",)}}

    def report(self, image: Any, mark: Mark) -> dict[str, Any]:
        cuda = _cuda()
        peak = None
        if cuda is not None:
            cuda.synchronize()  # kernels are async: wait for them before reading the clock
            peak = int(cuda.max_memory_allocated())
        record = build_report(mark, ended_ns=time.perf_counter_ns(), peak_bytes=peak)
        return {"ui": ui_output(record), "result": (image,)}


NODE_CLASS_MAPPINGS = {
    "ComfygateStart": ComfygateStart,
    "ComfygateResourceReport": ComfygateResourceReport,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "ComfygateStart": "comfygate: start measuring",
    "ComfygateResourceReport": "comfygate: resource report",
}
