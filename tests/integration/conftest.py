"""Fixtures for tests against real databases: a wired container on each backend."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from comfygate import bootstrap
from comfygate.config import Settings
from tests.fakes import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def container(database_url: str, clock: FakeClock) -> Iterator[bootstrap.Container]:
    """Services on a freshly migrated database of each backend, on a fake clock."""
    built = bootstrap.build(Settings(database_url=database_url, hold_ttl_s=600), clock=clock)
    built.upgrade_database()
    yield built
    built.close()
