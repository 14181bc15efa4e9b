"""ComfyUI outcomes that end in a result, through the whole paid path.

Each test builds the container from settings (``comfyui_urls`` pointing at fake
ComfyUI servers), funds an account, submits a photo over HTTP and lets the dispatcher
run it: the job succeeds on the ``comfyui`` engine and its hold is captured exactly
once. Failures, cancels and timeouts (released in full) are in
``test_comfyui_jobs_failures.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from comfygate import bootstrap
from tests.comfyui_fake import FakeComfyUI
from tests.integration.comfyui_jobs_support import (
    FUNDS,
    GPU_PEAK_MB,
    assert_captured,
    comfy_container,
    execution_s,
    prompts_for,
    run_job,
    start_fake,
    use_fake_gpu,
)
from tests.jobs_support import new_customer, run

ALL_NODES = ["1", "2", "3", "4", "5"]


@pytest.fixture(autouse=True)
def _gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    use_fake_gpu(monkeypatch)


@pytest.fixture
def fakes(tmp_path: Path) -> Iterator[tuple[FakeComfyUI, FakeComfyUI]]:
    a, b = start_fake(tmp_path / "comfy-a"), start_fake(tmp_path / "comfy-b")
    yield a, b
    a.stop()
    b.stop()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'db.sqlite'}"


def _container(url: str, tmp_path: Path, *fakes: FakeComfyUI) -> bootstrap.Container:
    return comfy_container(url, tmp_path / "data", list(fakes))


def test_success_with_progress_is_captured_once(
    database_url: str, fakes: tuple[FakeComfyUI, FakeComfyUI], tmp_path: Path
) -> None:
    a, _ = fakes
    container = _container(database_url, tmp_path, a)
    customer = new_customer(container, tokens=FUNDS)

    def prepare() -> None:
        a.behaviour.job_s, a.behaviour.progress_steps = 0.2, 4

    try:
        out = run(lambda: run_job(container, customer, prepare=prepare))
    finally:
        container.close()
    assert_captured(out)
    assert out.job["result"]["width"] == 800 and out.job["result"]["height"] == 600
    # The SSE stream carried the model node's progress, never going backwards.
    fractions = [p["fraction"] for p in out.progress]
    assert any(p["message"] == "running DDColor_Colorize" for p in out.progress)
    assert fractions == sorted(fractions) and fractions[-1] > 0.9  # all nodes done
    assert len({f for f in fractions if 0.1 < f < 1.0}) >= 3
    # Usage: inference time from the history timestamps, GPU peak from our report node.
    meta = out.stored.result_metadata
    assert out.usage["inference_s"] == pytest.approx(execution_s(a, meta["prompt_id"]), abs=1e-6)
    assert out.stored.gpu_peak_mb == GPU_PEAK_MB and meta["device"] == "cuda:0"
    assert out.stored.instance == a.url and meta["attempts"] == 1
    assert prompts_for(a, out.job["id"]) == 1


def test_cached_replay_is_still_charged(
    sqlite_url: str, fakes: tuple[FakeComfyUI, FakeComfyUI], tmp_path: Path
) -> None:
    """ComfyUI answered from its cache (every node cached, no GPU work). The customer
    still got a correct colorized photo, and the price is set by the photo (pixels,
    price book), not by the GPU time spent, so the hold is captured; the usage line
    records the near-zero execution time for cost analysis. Paying twice for the same
    photo is prevented earlier, by the duplicate-image check at submission."""
    a, _ = fakes
    container = _container(sqlite_url, tmp_path, a)
    customer = new_customer(container, tokens=FUNDS)

    def prepare() -> None:
        a.behaviour.cached = True

    try:
        out = run(lambda: run_job(container, customer, prepare=prepare))
    finally:
        container.close()
    assert_captured(out)
    meta = out.stored.result_metadata
    assert sorted(meta["cached_nodes"]) == ALL_NODES
    assert not any(p["message"].startswith("running") for p in out.progress)
    assert out.usage["inference_s"] == pytest.approx(execution_s(a, meta["prompt_id"]), abs=1e-6)


def test_renamed_upload_is_used_and_charged(
    sqlite_url: str, fakes: tuple[FakeComfyUI, FakeComfyUI], tmp_path: Path
) -> None:
    a, _ = fakes
    container = _container(sqlite_url, tmp_path, a)
    customer = new_customer(container, tokens=FUNDS)

    def prepare() -> None:
        a.behaviour.rename_uploads = True

    try:
        out = run(lambda: run_job(container, customer, prepare=prepare))
    finally:
        container.close()
    assert_captured(out)
    input_file = out.stored.result_metadata["input_file"]
    assert input_file.startswith(f"comfygate/{out.job['id']}-") and input_file.endswith(" (1).png")
    (sent,) = [s for s in a.submitted if s["prompt_id"] == out.stored.result_metadata["prompt_id"]]
    assert sent["prompt"]["1"]["inputs"]["image"] == input_file


def test_dropped_websocket_still_succeeds_via_history_and_is_charged_once(
    sqlite_url: str, fakes: tuple[FakeComfyUI, FakeComfyUI], tmp_path: Path
) -> None:
    a, _ = fakes
    container = _container(sqlite_url, tmp_path, a)
    customer = new_customer(container, tokens=FUNDS)

    def prepare() -> None:
        a.behaviour.job_s, a.behaviour.drop_ws_after_progress = 0.4, 1

    try:
        out = run(lambda: run_job(container, customer, prepare=prepare))
    finally:
        container.close()
    assert_captured(out)
    assert out.job["attempts"] == 1 and out.stored.result_metadata["attempts"] == 1
    assert prompts_for(a, out.job["id"]) == 1  # followed by history, not submitted again
    assert any(p["message"] == "running DDColor_Colorize" for p in out.progress)
    meta = out.stored.result_metadata
    assert out.usage["inference_s"] == pytest.approx(execution_s(a, meta["prompt_id"]), abs=1e-6)


def test_server_down_on_a_is_retried_on_b_and_captured_once(
    sqlite_url: str, fakes: tuple[FakeComfyUI, FakeComfyUI], tmp_path: Path
) -> None:
    a, b = fakes
    container = _container(sqlite_url, tmp_path, a, b)
    customer = new_customer(container, tokens=FUNDS)

    def prepare() -> None:
        # A is taken first (listed first, both idle) and dies after one progress step.
        a.behaviour.job_s, a.behaviour.die_after_progress = 0.2, 1

    try:
        out = run(lambda: run_job(container, customer, prepare=prepare))
    finally:
        container.close()
    assert_captured(out)
    meta = out.stored.result_metadata
    assert meta["tried"] == [a.url, b.url] and out.stored.instance == b.url
    assert prompts_for(a, out.job["id"]) == 1 and prompts_for(b, out.job["id"]) == 1
    # One dispatcher attempt: the engine moved to B itself, one hold, one capture.
    assert out.job["attempts"] == 1
    fractions = [p["fraction"] for p in out.progress]
    assert fractions == sorted(fractions)
