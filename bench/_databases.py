"""What the database benchmarks share: a scratch database of each backend for one run."""

from __future__ import annotations

import argparse
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from tempfile import TemporaryDirectory

import sqlalchemy as sa

ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def postgres_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--postgres", default=ADMIN_URL,
        help="an admin URL; a scratch database is created and dropped",
    )  # fmt: skip


@contextmanager
def scratch_postgres(admin_url: str) -> Iterator[str]:
    """The URL of a new, empty database on the server of ``admin_url``; dropped after."""
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    scratch = f"cgbench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{scratch}"')
    try:
        yield sa.make_url(admin_url).set(database=scratch).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE "{scratch}" WITH (FORCE)')
        admin.dispose()


def each_backend(postgres_admin_url: str) -> Iterator[tuple[str, str]]:
    """``(name, url)`` of a scratch SQLite file, then of a scratch PostgreSQL database;
    each is gone once the next is asked for (or the loop ends)."""
    with TemporaryDirectory() as tmp:
        yield "sqlite", f"sqlite:///{Path(tmp) / 'bench.db'}"
    with scratch_postgres(postgres_admin_url) as url:
        yield "postgresql", url
