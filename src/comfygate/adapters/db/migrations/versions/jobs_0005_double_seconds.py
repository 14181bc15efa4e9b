"""jobs: MariaDB keeps times in seconds in double precision

``sa.Float`` is a 4-byte FLOAT on MariaDB: an inference time of 0.1 s read back as
0.10000000149, past the usage report's 0.1 s bin bound, and every time kept only
seven digits. PostgreSQL's FLOAT and SQLite's REAL are double precision already.

Revision ID: jobs_0005
Revises: jobs_0004
Create Date: 2026-11-28 18:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "jobs_0005"
down_revision: str | Sequence[str] | None = "jobs_0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = [
    ("jobs", "inference_s"),
    ("usage_events", "queue_wait_s"),
    ("usage_events", "inference_s"),
]


def upgrade() -> None:
    _retype(mysql.DOUBLE())


def downgrade() -> None:
    _retype(mysql.FLOAT())


def _retype(to: sa.types.TypeEngine[Any]) -> None:
    if op.get_bind().dialect.name != "mysql":
        return
    for table, column in COLUMNS:
        op.alter_column(table, column, type_=to, existing_nullable=True)
