"""The ComfyUI resource-report nodes: pure parts, and the nodes without torch."""

from __future__ import annotations

import importlib.util
import math

import pytest
from comfyui_nodes.comfygate_report import NODE_CLASS_MAPPINGS
from comfyui_nodes.comfygate_report.report import (
    REPORT_KEY,
    Mark,
    build_report,
    start_mark,
    ui_output,
)


def test_report_record_rounds_memory_up_and_time_to_microseconds() -> None:
    mark = Mark(started_ns=1_000_000_000, device="cuda:0")
    record = build_report(mark, ended_ns=1_812_345_678, peak_bytes=1834 * 1024 * 1024 + 1)
    assert record == {"inference_s": 0.812346, "gpu_peak_mb": 1835, "device": "cuda:0"}


def test_cpu_reports_zero_gpu_memory() -> None:
    record = build_report(Mark(5, "cpu"), ended_ns=5, peak_bytes=None)
    assert record == {"inference_s": 0.0, "gpu_peak_mb": 0, "device": "cpu"}


def test_start_mark_uses_the_clock() -> None:
    assert start_mark("cpu", clock_ns=lambda: 42) == Mark(42, "cpu")


def test_ui_output_is_what_comfyui_stores_in_history() -> None:
    assert ui_output({"a": 1}) == {REPORT_KEY: [{"a": 1}]}


@pytest.mark.skipif(
    importlib.util.find_spec("torch") is not None, reason="checks the no-torch path"
)
def test_nodes_run_without_torch() -> None:
    start, report = (
        NODE_CLASS_MAPPINGS["ComfygateStart"](),
        NODE_CLASS_MAPPINGS["ComfygateResourceReport"](),
    )
    image = object()
    passed, mark = start.start(image)
    out = report.report(passed, mark)
    assert out["result"] == (image,)
    record = out["ui"][REPORT_KEY][0]
    assert record["gpu_peak_mb"] == 0 and record["device"] == "cpu" and record["inference_s"] >= 0


def test_start_node_is_never_cached() -> None:
    value = NODE_CLASS_MAPPINGS["ComfygateStart"].IS_CHANGED(image=None)
    assert math.isnan(
        value
    )  # NaN != NaN: ComfyUI re-runs it (and everything after it) every prompt


def test_node_interfaces() -> None:
    report = NODE_CLASS_MAPPINGS["ComfygateResourceReport"]
    assert report.INPUT_TYPES() == {"required": {"image": ("IMAGE",), "mark": ("COMFYGATE_MARK",)}}
    assert report.RETURN_TYPES == ("IMAGE",)
    assert NODE_CLASS_MAPPINGS["ComfygateStart"].RETURN_TYPES == ("IMAGE", "COMFYGATE_MARK")
