"""Shared fixtures: real databases, one parametrised fixture for every backend.

PostgreSQL, MariaDB and Redis tests skip when the server is not reachable, unless
``COMFYGATE_TEST_REQUIRE_SERVICES=1`` (set by ``.ci/run``) makes them fail instead.
Each test session gets its own freshly created database on each server.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
import structlog

# An exception the code logs (every 500 a test provokes) as a plain traceback: unless
# ``comfygate serve`` configures JSON logs, structlog renders it through rich with
# every frame's locals, seconds of CPU apiece.
structlog.configure(
    processors=[
        *structlog.get_config()["processors"][:-1],
        structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback),
    ]
)

PG_ADMIN_URL = os.environ.get(
    "COMFYGATE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
MARIADB_ADMIN_URL = os.environ.get(
    "COMFYGATE_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/"
)
REDIS_URL = os.environ.get("COMFYGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
REQUIRE_SERVICES = os.environ.get("COMFYGATE_TEST_REQUIRE_SERVICES") == "1"

BACKENDS = ["sqlite", "postgresql", "mariadb"]


def _unavailable(what: str, exc: BaseException) -> None:
    message = f"{what} not reachable: {exc}"
    if REQUIRE_SERVICES:
        pytest.fail(message)
    pytest.skip(message)


def _create_server_database(admin_url: str, name: str) -> str:
    url = sa.make_url(admin_url)
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            if url.get_backend_name() == "postgresql":
                conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
            else:
                conn.exec_driver_sql(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    finally:
        engine.dispose()
    return url.set(database=name).render_as_string(hide_password=False)


def _drop_server_database(admin_url: str, name: str) -> None:
    url = sa.make_url(admin_url)
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            if url.get_backend_name() == "postgresql":
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            else:
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")
    finally:
        engine.dispose()


class DatabaseFactory:
    """Makes empty databases on one backend; drops them at the end of the session."""

    def __init__(self, backend: str, tmp: Path) -> None:
        self.backend = backend
        self._tmp = tmp
        self._made: list[str] = []

    def new_url(self) -> str:
        name = f"cgtest_{uuid.uuid4().hex[:12]}"
        if self.backend == "sqlite":
            return f"sqlite:///{self._tmp / (name + '.db')}"
        admin = PG_ADMIN_URL if self.backend == "postgresql" else MARIADB_ADMIN_URL
        try:
            url = _create_server_database(admin, name)
        except Exception as exc:
            _unavailable(self.backend, exc)
        self._made.append(name)
        return url

    def cleanup(self) -> None:
        admin = PG_ADMIN_URL if self.backend == "postgresql" else MARIADB_ADMIN_URL
        for name in self._made:
            _drop_server_database(admin, name)


@pytest.fixture(scope="session", params=BACKENDS)
def db_factory(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DatabaseFactory]:
    """A factory of empty databases, once per backend."""
    factory = DatabaseFactory(request.param, tmp_path_factory.mktemp(f"db-{request.param}"))
    yield factory
    factory.cleanup()


@pytest.fixture
def database_url(db_factory: DatabaseFactory) -> str:
    """A fresh, empty database URL on each backend (sqlite, postgresql, mariadb)."""
    return db_factory.new_url()


@pytest.fixture
def redis_url() -> str:
    """A Redis URL (database 15, flushed) or a skip/fail when Redis is not reachable."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.flushdb()
    except Exception as exc:
        _unavailable("redis", exc)
    finally:
        client.close()
    return REDIS_URL
