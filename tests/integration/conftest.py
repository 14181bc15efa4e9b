"""Fixtures for tests against real databases: a wired container on each backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from comfygate import bootstrap
from comfygate.adapters.db import migrate
from comfygate.adapters.db.engine import create_engine
from comfygate.config import Settings
from tests.comfyui_fake import FakeComfyUI
from tests.fakes import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    """A freshly migrated database of each backend, as an engine (closed after)."""
    built = create_engine(database_url)
    migrate.upgrade(built)
    yield built
    built.dispose()


@pytest.fixture
def container(database_url: str, clock: FakeClock) -> Iterator[bootstrap.Container]:
    """Services on a freshly migrated database of each backend, on a fake clock."""
    built = bootstrap.build(Settings(database_url=database_url, hold_ttl_s=600), clock=clock)
    built.upgrade_database()
    yield built
    built.close()


@pytest.fixture
def fakes(tmp_path: Path) -> Iterator[tuple[FakeComfyUI, FakeComfyUI]]:
    """Two fake ComfyUI servers, stopped after the test."""
    a, b = FakeComfyUI(tmp_path / "a").start(), FakeComfyUI(tmp_path / "b").start()
    yield a, b
    a.stop()
    b.stop()
