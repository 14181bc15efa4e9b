"""Helpers for the jobs tests: images, a scriptable engine, a wired container, the app.

``FakeEngine`` implements the Engine port; each job's fate is chosen by the test
(``plan[job_id]`` or ``default``): ``succeed``, ``fail`` (a workflow error),
``retryable`` (a retryable worker error), ``crash`` (an unexpected exception) or
``hang`` (runs until cancelled or released with ``release(job_id)``).
"""

from __future__ import annotations

import asyncio
import io
import struct
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from PIL import Image

from comfygate import bootstrap
from comfygate.adapters.db.tables_jobs import jobs as jobs_table
from comfygate.bootstrap_jobs import build_job_services
from comfygate.config import Settings
from comfygate.domain.errors import WorkerUnavailableError, WorkflowError
from comfygate.entrypoints.api.app import create_app
from comfygate.services.clock import Clock
from comfygate.services.engines import EngineJob, EngineResult, ProgressCallback

CAPABILITY = "colorize.person"


def png_bytes(size: tuple[int, int] = (64, 48), seed: int = 0) -> bytes:
    """A small grey PNG; different ``seed`` values give different bytes (and hashes)."""
    image = Image.new("L", size, 128)
    image.putpixel((seed % size[0], (seed // size[0]) % size[1]), seed % 251)
    image.info["seed"] = str(seed)
    buf = io.BytesIO()
    image.save(buf, "PNG", pnginfo=_text_chunk(str(seed)))
    return buf.getvalue()


def _text_chunk(text: str) -> Any:
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("seed", text)
    return info


def corrupt_png(size: tuple[int, int] = (64, 48)) -> bytes:
    """A PNG whose header, chunk structure and IEND are intact but whose pixel data is
    not valid zlib: it passes the upload checks and fails when decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", size[0], size[1], 8, 0, 0, 0, 0)
    garbage = bytes(range(256)) * 4
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", garbage) + chunk(b"IEND", b"")
    )


class FakeEngine:
    """A scriptable engine (see the module docstring)."""

    name = "fake"

    def __init__(self, *, capabilities: Iterable[str] = (CAPABILITY, "colorize.building")) -> None:
        self._capabilities = frozenset(capabilities)
        self.plan: dict[str, str] = {}
        self.default = "succeed"
        self.started: list[str] = []
        self.cancelled: list[str] = []
        self._gates: dict[str, asyncio.Event] = {}
        self.running = 0
        self.max_running = 0

    def capabilities(self) -> frozenset[str]:
        return self._capabilities

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def release(self, job_id: str) -> None:
        self._gates.setdefault(job_id, asyncio.Event()).set()

    async def cancel(self, job_id: str) -> None:
        self.cancelled.append(job_id)

    async def run(self, job: EngineJob, *, progress: ProgressCallback) -> EngineResult:
        self.started.append(job.job_id)
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            return await self._run(job, progress)
        finally:
            self.running -= 1

    async def _run(self, job: EngineJob, progress: ProgressCallback) -> EngineResult:
        fate = self.plan.get(job.job_id, self.default)
        await progress(0.5, "half way")
        if fate == "hang":
            await self._gates.setdefault(job.job_id, asyncio.Event()).wait()
            fate = "succeed"
        if fate == "fail":
            raise WorkflowError("the fake workflow failed", job_id=job.job_id)
        if fate == "retryable":
            raise WorkerUnavailableError("the fake worker went away", job_id=job.job_id)
        if fate == "crash":
            raise RuntimeError("the fake engine crashed")
        output = job.output_dir / "out.png"
        Image.new("RGB", (8, 8), (200, 100, 50)).save(output)
        return EngineResult(
            output_path=output, engine=self.name, width=8, height=8, inference_s=0.01
        )


def settings(database_url: str, data_dir: Path, **overrides: Any) -> Settings:
    return Settings(database_url=database_url, data_dir=data_dir, **overrides)


def build(
    database_url: str,
    data_dir: Path,
    *,
    clock: Clock | None = None,
    engines: list[Any] | None = None,
    **overrides: Any,
) -> bootstrap.Container:
    """A migrated container; ``engines`` replaces the engine chosen from settings."""
    container = bootstrap.build(settings(database_url, data_dir, **overrides), clock=clock)
    container.upgrade_database()
    if engines is not None:
        use_engines(container, engines)
    return container


def use_engines(container: bootstrap.Container, engines: list[Any]) -> None:
    """Rebuild the jobs side around ``engines`` and re-point the lifecycle hooks."""
    old = container.jobs.dispatcher
    container.jobs = build_job_services(
        container.settings,
        engine=container.engine,
        clock=container.clock,
        ledger=container.ledger,
        plans=container.plans,
        quotes=container.pricing.quotes,
        audit=container.audit,
        metrics=container.metrics,
        engines=engines,
        chores=[container.payments.grant_paid],
    )
    new = container.jobs.dispatcher
    container.on_startup[container.on_startup.index(old.start)] = new.start
    container.on_shutdown[container.on_shutdown.index(old.stop)] = new.stop
    container.readiness_checks["engines"] = new.is_ready


@dataclass
class Customer:
    account_id: str
    api_key: str
    user_id: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}


def new_customer(
    container: bootstrap.Container, *, tokens: int = 0, name: str = "acme"
) -> Customer:
    """An account with an admin key and ``tokens`` granted."""
    made = container.identity.create_account(name=name, actor="cli")
    if tokens:
        container.ledger.grant(
            account_id=made.account_id,
            amount=tokens,
            source="promotion",
            idempotency_key=f"test-grant-{made.account_id}",
        )
    return Customer(made.account_id, made.key.api_key, made.user.id)


@asynccontextmanager
async def running_app(container: bootstrap.Container) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan (dispatcher running) and an HTTP client on it."""
    app = create_app(container)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://test") as client,
    ):
        yield client


def run(scenario: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(scenario())  # type: ignore[arg-type]


async def submit(
    client: httpx.AsyncClient,
    customer: Customer,
    image: bytes,
    *,
    capability: str = CAPABILITY,
    headers: dict[str, str] | None = None,
    **fields: str,
) -> httpx.Response:
    return await client.post(
        "/v1/jobs",
        headers={**customer.headers, **(headers or {})},
        files={"image": ("photo.png", image, "image/png")},
        data={"capability": capability, **fields},
    )


async def finished(client: httpx.AsyncClient, customer: Customer, job_id: str) -> dict[str, Any]:
    """Wait for the job's terminal event (the SSE stream ends there), then return it."""
    stream = await client.get(f"/v1/jobs/{job_id}/events", headers=customer.headers)
    assert stream.status_code == 200, stream.text
    response = await client.get(f"/v1/jobs/{job_id}", headers=customer.headers)
    body: dict[str, Any] = response.json()
    return body


def sse_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    """``(event, data)`` pairs of an SSE body."""
    import json

    out = []
    for block in text.strip().split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if not line.startswith(":")
        )
        if "event" in fields:
            out.append((fields["event"], json.loads(fields["data"])))
    return out


def job_rows(container: bootstrap.Container, account_id: str | None = None) -> int:
    query = sa.select(sa.func.count()).select_from(jobs_table)
    if account_id is not None:
        query = query.where(jobs_table.c.account_id == account_id)
    with container.engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def stored_files(data_dir: Path) -> list[Path]:
    """Every upload or job file under the data folder (the share secret excluded)."""
    found = []
    for sub in ("tmp", "jobs"):
        root = data_dir / sub
        if root.exists():
            found.extend(p for p in root.rglob("*") if p.is_file())
    return found
