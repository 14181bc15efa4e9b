"""Helpers for the ComfyUI job tests: a container on fake ComfyUI servers, one job run
through the HTTP API to its end, and what the job, usage and ledger say afterwards.

The container is built from settings alone (``comfyui_urls``), so the engine is the
one ``comfyui_engine_from_settings`` makes for ``comfygate serve``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from comfygate import bootstrap
from comfygate.adapters.comfyui import ComfyUIEngine
from comfygate.services.job_ports import Job
from tests.comfyui_fake import FakeComfyUI
from tests.jobs_support import Customer, build, finished, png_bytes, running_app, sse_events, submit

FUNDS = 50
PRICE = 11
"""An 800x600 person photo: 10 + 0.48 MP x 2 = 10.96 -> 11 tokens (SPEC section 2)."""
GPU_PEAK_MB = 1536
MIB = 1024 * 1024

During = Callable[[httpx.AsyncClient, str], Awaitable[None]]


class KeptHistory(dict[str, Any]):
    """The fake's history that remembers entries after ``POST /history`` deletes them
    (the worker frees the entry once the job is done; the tests still read it)."""

    def __init__(self) -> None:
        super().__init__()
        self.kept: dict[str, Any] = {}

    def __setitem__(self, key: str, value: Any) -> None:
        self.kept[key] = value
        super().__setitem__(key, value)


class FakeCuda:
    """Stands in for ``torch.cuda`` in our report node: a GPU with a known peak."""

    def is_available(self) -> bool:
        return True

    def current_device(self) -> int:
        return 0

    def synchronize(self) -> None:
        return None

    def reset_peak_memory_stats(self) -> None:
        return None

    def max_memory_allocated(self) -> int:
        return GPU_PEAK_MB * MIB


def use_fake_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the shipped report node (run by the fake) see a GPU."""
    from comfyui_nodes.comfygate_report import nodes

    monkeypatch.setattr(nodes, "_cuda", FakeCuda)


def start_fake(root: Path) -> FakeComfyUI:
    fake = FakeComfyUI(root)
    fake.history = KeptHistory()
    return fake.start()


def comfy_container(
    database_url: str, data_dir: Path, fakes: list[FakeComfyUI], **overrides: Any
) -> bootstrap.Container:
    # A long probe interval: an instance taken out stays out for the whole test.
    overrides.setdefault("comfyui_probe_interval_s", 60.0)
    urls = ",".join(f.url for f in fakes)
    return build(database_url, data_dir, comfyui_urls=urls, **overrides)


def comfy_engine(container: bootstrap.Container) -> ComfyUIEngine:
    """The one engine the settings chose: ComfyUI's."""
    (engine,) = container.jobs.engines
    assert isinstance(engine, ComfyUIEngine)
    return engine


@dataclass
class Finished:
    """A job after settlement, as the API, the usage log and the ledger see it."""

    job: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]]
    usage: dict[str, Any]
    stored: Job
    balance: tuple[int, int]
    """(available, held)."""
    hold_kinds: list[str]
    """The job's hold in the statement, oldest first: ``hold`` then ``capture``/``release``."""
    reconciled: bool

    @property
    def progress(self) -> list[dict[str, Any]]:
        return [data for kind, data in self.events if kind == "progress"]


async def until(predicate: Callable[[], bool]) -> None:
    """Yield until ``predicate()`` holds (bounded by pytest's timeout, never asserted on)."""
    while not predicate():
        await asyncio.sleep(0.01)


def running_on(fake: FakeComfyUI) -> Callable[[], bool]:
    """True once the fake runs a prompt of ours and has sent its first progress step."""
    return lambda: fake.running is not None and fake.running.progress_sent >= 1


async def run_job(
    container: bootstrap.Container,
    customer: Customer,
    *,
    prepare: Callable[[], None] | None = None,
    during: During | None = None,
) -> Finished:
    """Submit an 800x600 photo over HTTP, let the dispatcher run it, read the outcome.

    ``prepare`` runs once the engine started (so warm-ups ran on a healthy server);
    ``during`` runs after the job was accepted.
    """
    async with running_app(container) as client:
        if prepare is not None:
            prepare()
        accepted = await submit(client, customer, png_bytes((800, 600), seed=1))
        assert accepted.status_code == 202, accepted.text
        job_id = accepted.json()["id"]
        assert accepted.json()["tokens"] == PRICE
        if during is not None:
            await during(client, job_id)
        job = await finished(client, customer, job_id)
        stream = await client.get(f"/v1/jobs/{job_id}/events", headers=customer.headers)
        usage = (await client.get("/v1/usage", headers=customer.headers)).json()["items"]
    (line,) = [u for u in usage if u["job_id"] == job_id]
    stored = container.jobs.store.get(job_id)
    assert stored is not None
    balance = container.accounts.balance(account_id=customer.account_id)
    lines = container.accounts.statement(account_id=customer.account_id)
    kinds = [ln.kind for ln in reversed(lines) if ln.hold_id == stored.hold_id]
    return Finished(
        job=job,
        events=sse_events(stream.text),
        usage=line,
        stored=stored,
        balance=(balance.available, balance.held),
        hold_kinds=kinds,
        reconciled=container.accounts.reconcile().ok,
    )


def prompts_for(fake: FakeComfyUI, job_id: str) -> int:
    """How many prompts of ``job_id`` the fake accepted (our output prefix names the job)."""
    return sum(
        1
        for sent in fake.submitted
        if any(
            str(node.get("inputs", {}).get("filename_prefix", "")).endswith(f"/{job_id}")
            for node in sent["prompt"].values()
        )
    )


def prompt_posts(fake: FakeComfyUI) -> int:
    """``POST /prompt`` calls the fake answered, accepted or not."""
    return fake.calls.count(("POST", "/prompt"))


def execution_s(fake: FakeComfyUI, prompt_id: str) -> float:
    """Execution time by the history's ``execution_start`` and end timestamps (ms)."""
    history = fake.history
    assert isinstance(history, KeptHistory)
    messages = dict((name, data) for name, data in history.kept[prompt_id]["status"]["messages"])
    end = next(messages[e] for e in ("execution_success", "execution_error") if e in messages)
    return float(end["timestamp"] - messages["execution_start"]["timestamp"]) / 1000.0


def assert_captured(out: Finished) -> None:
    """Succeeded on ComfyUI, the price captured once, the ledger consistent."""
    assert out.job["state"] == "succeeded", out.job
    assert out.job["engine"] == "comfyui" and out.job["tokens_charged"] == PRICE
    assert out.balance == (FUNDS - PRICE, 0)
    assert out.hold_kinds == ["hold", "capture"]
    assert out.usage["outcome"] == "succeeded" and out.usage["tokens_charged"] == PRICE
    assert out.usage["engine"] == "comfyui" and out.usage["gpu_peak_mb"] == GPU_PEAK_MB
    assert out.events[-1][0] == "succeeded"
    assert out.reconciled


def assert_released(out: Finished, code: str) -> None:
    """Failed with ``code``, nothing charged, the whole hold back on the balance."""
    assert out.job["state"] == "failed", out.job
    assert out.job["failure"]["code"] == code and out.job["failure"]["reason"]
    assert out.job["tokens_charged"] == 0 and out.job["result"] is None
    assert out.balance == (FUNDS, 0)
    assert out.hold_kinds == ["hold", "release"]
    assert out.usage["outcome"] == "failed" and out.usage["tokens_charged"] == 0
    assert out.usage["failure_code"] == code
    assert out.events[-1][0] == "failed"
    assert out.reconciled
