"""What the database benchmarks share: a scratch PostgreSQL database for one run."""

from __future__ import annotations

import argparse
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

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
