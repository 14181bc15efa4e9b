"""Fixtures of the end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from comfygate import bootstrap
from tests.e2e.gateway_app import Gateway, running_gateway, serving
from tests.jobs_support import build


@pytest.fixture
def container(tmp_path: Path) -> Iterator[bootstrap.Container]:
    """A migrated SQLite gateway's container, on the built-in engine (closed after)."""
    built = build(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path / "data")
    yield built
    built.close()


@pytest.fixture
def served(container: bootstrap.Container) -> Iterator[tuple[bootstrap.Container, str]]:
    """That gateway served on a real socket: its container and URL."""
    with serving(container) as url:
        yield container, url


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway in process (TestClient) shared by a module's tests."""
    with running_gateway(tmp_path_factory.mktemp("gateway")) as gateway:
        yield gateway
