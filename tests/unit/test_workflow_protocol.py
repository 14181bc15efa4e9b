"""ComfyUI wire formats (as server.py / execution.py produce them) and progress mapping."""

from __future__ import annotations

import asyncio
import json

from comfygate.adapters.comfyui.progress import ProgressTracker
from comfygate.adapters.comfyui.protocol import (
    FileRef,
    parse_history,
    parse_ws_text,
    submit_failure,
)
from comfygate.domain.errors import WorkerUnavailableError, WorkflowError

HISTORY = {
    "p1": {
        "prompt": [1, "p1", {}, {"client_id": "c"}, ["5"]],
        "outputs": {
            "4": {
                "comfygate_report": [{"inference_s": 0.8, "gpu_peak_mb": 1834, "device": "cuda:0"}]
            },
            "5": {
                "images": [
                    {"filename": "job_00001_.png", "subfolder": "comfygate", "type": "output"}
                ]
            },
        },
        "status": {
            "status_str": "success",
            "completed": True,
            "messages": [
                ["execution_start", {"prompt_id": "p1", "timestamp": 1700000000000}],
                [
                    "execution_cached",
                    {"nodes": ["1"], "prompt_id": "p1", "timestamp": 1700000000001},
                ],
                ["execution_success", {"prompt_id": "p1", "timestamp": 1700000001250}],
            ],
        },
    }
}


def test_history_gives_execution_time_outputs_and_report() -> None:
    history = parse_history("p1", HISTORY)
    assert history is not None
    assert history.outcome == "success"
    assert history.execution_s() == 1.25
    assert history.cached_nodes() == ["1"]
    assert history.output_images("5") == [FileRef("job_00001_.png", "comfygate", "output")]
    assert history.report("4") == {"inference_s": 0.8, "gpu_peak_mb": 1834, "device": "cuda:0"}
    assert history.report(None) is None


def test_history_is_none_while_unknown_or_running() -> None:
    assert parse_history("p1", {}) is None
    assert parse_history("p2", HISTORY) is None


def test_history_error_and_interrupt_outcomes() -> None:
    error = {
        "p": {
            "outputs": {},
            "status": {
                "status_str": "error",
                "completed": False,
                "messages": [
                    ["execution_start", {"timestamp": 1}],
                    [
                        "execution_error",
                        {
                            "node_id": "3",
                            "node_type": "DDColor_Colorize",
                            "exception_type": "torch.OutOfMemoryError",
                            "exception_message": "CUDA out of memory",
                            "timestamp": 2,
                        },
                    ],
                ],
            },
        }
    }
    parsed = parse_history("p", error)
    assert parsed is not None and parsed.outcome == "error"
    assert (
        parsed.error_text()
        == "node 3 (DDColor_Colorize) failed: torch.OutOfMemoryError: CUDA out of memory"
    )
    interrupted = {
        "p": {
            "status": {
                "status_str": "error",
                "messages": [["execution_interrupted", {"timestamp": 5}]],
            }
        }
    }
    parsed = parse_history("p", interrupted)
    assert parsed is not None and parsed.outcome == "interrupted"
    assert parsed.execution_s() is None


def test_load_image_value_for_subfolders_and_temp() -> None:
    assert FileRef("a.png").load_image_value() == "a.png"
    assert FileRef("a (1).png", "comfygate").load_image_value() == "comfygate/a (1).png"
    assert FileRef("a.png", "x", "temp").load_image_value() == "x/a.png [temp]"


def test_ws_text_frames() -> None:
    event = parse_ws_text(
        json.dumps({"type": "progress", "data": {"value": 1, "max": 4, "prompt_id": "p"}})
    )
    assert event is not None and event.type == "progress" and event.prompt_id == "p"
    assert parse_ws_text("not json") is None
    assert parse_ws_text(json.dumps([1, 2])) is None


def test_submit_400_with_node_errors() -> None:
    body = {
        "error": {
            "type": "prompt_outputs_failed_validation",
            "message": "Prompt outputs failed validation",
            "details": "",
            "extra_info": {},
        },
        "node_errors": {
            "3": {
                "class_type": "DDColor_Colorize",
                "dependent_outputs": ["5"],
                "errors": [
                    {
                        "type": "value_not_in_list",
                        "message": "Value not in list",
                        "details": "checkpoint: 'x.pth' not in [...]",
                        "extra_info": {},
                    }
                ],
            }
        },
    }
    error = submit_failure(400, json.dumps(body))
    assert isinstance(error, WorkflowError)
    assert error.details["error_type"] == "prompt_outputs_failed_validation"
    assert error.details["errors"] == [
        "node 3 (DDColor_Colorize): Value not in list: checkpoint: 'x.pth' not in [...]"
    ]


def test_submit_missing_node_type_and_legacy_and_plain_500() -> None:
    missing = {
        "error": {
            "type": "missing_node_type",
            "message": "Node 'DDColor_Colorize' not found",
            "details": "Node ID '#3'",
            "extra_info": {},
        },
        "node_errors": {},
    }
    error = submit_failure(400, json.dumps(missing))
    assert (
        isinstance(error, WorkflowError)
        and "missing_node_type" in str(error)
        and "#3" in str(error)
    )
    legacy = submit_failure(
        400, json.dumps({"error": "Prompt outputs failed validation", "node_errors": []})
    )
    assert isinstance(legacy, WorkflowError) and "Prompt outputs failed validation" in str(legacy)
    plain = submit_failure(500, "500 Internal Server Error\n\nServer got itself in trouble")
    assert isinstance(plain, WorkflowError) and "HTTP 500" in str(plain)
    assert isinstance(submit_failure(502, "Bad Gateway"), WorkerUnavailableError)


def test_submit_200_with_node_errors_is_a_failure() -> None:
    body = {
        "prompt_id": "p",
        "number": 3,
        "node_errors": {
            "9": {
                "class_type": "SaveImage",
                "errors": [{"message": "Required input is missing", "details": "images"}],
            }
        },
    }
    error = submit_failure(200, json.dumps(body))
    assert isinstance(error, WorkflowError)
    assert error.details["errors"] == ["node 9 (SaveImage): Required input is missing: images"]


def test_progress_is_monotonic_and_spans_the_nodes() -> None:
    seen: list[tuple[float, str]] = []

    async def progress(fraction: float, message: str) -> None:
        seen.append((fraction, message))

    async def feed() -> None:
        prompt = {"1": {"class_type": "LoadImage"}, "2": {"class_type": "DDColor_Colorize"}}
        tracker = ProgressTracker(prompt, progress)
        for kind, data in [
            ("execution_start", {}),
            ("execution_cached", {"nodes": []}),
            ("executing", {"node": "1"}),
            ("executing", {"node": "2"}),
            ("progress", {"value": 1, "max": 2}),
            ("progress", {"value": 2, "max": 2}),
            ("progress", {"value": 1, "max": 2}),  # a second pass must not go backwards
        ]:
            event = parse_ws_text(json.dumps({"type": kind, "data": data}))
            assert event is not None
            await tracker.on_event(event)

    asyncio.run(feed())
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions)
    assert seen[-1] == (0.95, "running DDColor_Colorize")
    assert any(m == "running LoadImage" for _, m in seen)
