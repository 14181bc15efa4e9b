"""Helpers for the ComfyUI tests: servers (fake, or real via COMFYGATE_TEST_COMFYUI_URL),
images, engines and a progress recorder."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from comfygate.adapters.comfyui import ComfyUIEngine, InstanceConfig
from comfygate.adapters.comfyui.packs import load_packs
from comfygate.adapters.storage.local import LocalResultStorage
from comfygate.domain.ids import new_id
from comfygate.domain.jobs import JobState
from comfygate.services.engines import EngineJob
from comfygate.services.job_ports import Job
from tests.comfyui_fake.server import FakeComfyUI

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
REAL_URL = os.environ.get("COMFYGATE_TEST_COMFYUI_URL", "").rstrip("/")


@dataclass
class Server:
    """A ComfyUI to test against: ``fake`` is None for a real one."""

    url: str
    fake: FakeComfyUI | None

    def make_slow(self, tmp: Path) -> Path:
        """An input whose job runs for seconds: the fake is told so, a real one gets a big image."""
        if self.fake is not None:
            self.fake.behaviour.job_s = 30.0
            self.fake.behaviour.progress_steps = 300
            return make_image(tmp / "slow.png", (64, 48))
        return make_image(tmp / "slow.png", (6000, 4000))


def server_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    if request.param == "real":
        if not REAL_URL:
            pytest.skip("COMFYGATE_TEST_COMFYUI_URL is not set")
        yield Server(REAL_URL, None)
        return
    with FakeComfyUI(tmp_path / "fake-comfyui") as fake:
        yield Server(fake.url, fake)


def make_image(path: Path, size: tuple[int, int] = (320, 240)) -> Path:
    """A grey gradient photo (compresses well, decodes to ``size``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.linear_gradient("L").resize(size)
    image.save(path)
    return path


async def started_engine(urls: list[str], **kwargs: Any) -> ComfyUIEngine:
    """``make_engine``'s engine, started (probed, packs checked, warmed up)."""
    engine = make_engine(urls, **kwargs)
    await engine.start()
    return engine


def make_engine(urls: Sequence[str] | Mapping[str, Sequence[str]], **kwargs: Any) -> ComfyUIEngine:
    packs = kwargs.pop("packs", None) or load_packs()
    if isinstance(urls, Mapping):
        pools = {c: [InstanceConfig(u) for u in us] for c, us in urls.items()}
    else:
        pools = {c: [InstanceConfig(u) for u in urls] for c in packs}
    kwargs.setdefault("probe_interval_s", 60.0)
    return ComfyUIEngine(packs=packs, pools=pools, **kwargs)


def job(
    tmp: Path,
    source: Path,
    *,
    job_id: str = "job_1",
    capability: str = "colorize.person",
    timeout_s: float = 60.0,
    **params: Any,
) -> EngineJob:
    return EngineJob(
        job_id=job_id,
        capability=capability,
        input_path=source,
        output_dir=tmp / "results",
        params=params,
        timeout_s=timeout_s,
    )


@dataclass
class ProgressLog:
    events: list[tuple[float, str]] = field(default_factory=list)

    async def __call__(self, fraction: float, message: str) -> None:
        self.events.append((fraction, message))

    @property
    def fractions(self) -> list[float]:
        return [f for f, _ in self.events]

    def saw(self, text: str) -> bool:
        return any(text in m for _, m in self.events)


def dispatcher_job(storage: LocalResultStorage) -> Job:
    """A running job as the dispatcher hands it to ``run_on_engine``, its input stored."""
    job_id = new_id("job")
    source = storage.input_path(job_id, "input.png")
    source.parent.mkdir(parents=True, exist_ok=True)
    make_image(source)
    return Job(
        id=job_id, account_id="acct_a", user_id="user_a", capability="colorize.person",
        options={}, options_key="k", state=JobState.RUNNING, tier=1,
        sha256="0" * 64, md5="0" * 32, size_bytes=1, image_format="png", width=64,
        height=48, tokens=10, list_tokens=10, hold_id="hold_a", hold_expires_at=T0,
        price_book_version="v", breakdown=(), quote_id=None, idempotency_key=None,
        input_name="input.png", created_at=T0,
    )  # fmt: skip
