"""jobs: MariaDB keeps times in seconds in double precision

``sa.Float`` is a 4-byte FLOAT on MariaDB: an inference time of 0.1 s read back as
0.10000000149, past the usage report's 0.1 s bin bound, and every time kept only
seven digits. PostgreSQL's FLOAT and SQLite's REAL are double precision already.

On MariaDB the change copies ``jobs`` and ``usage_events`` (one ALTER each; a type
change cannot be made in place), and writes to them wait meanwhile: about 3 s per
400,000 rows here. Times already stored are rounded to the microsecond, which gives
back the values written (a FLOAT widened to a DOUBLE keeps its error: 0.1 would stay
0.10000000149).

Revision ID: jobs_0005
Revises: jobs_0004
Create Date: 2026-11-28 18:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "jobs_0005"
down_revision: str | Sequence[str] | None = "jobs_0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = {"jobs": ["inference_s"], "usage_events": ["queue_wait_s", "inference_s"]}


def upgrade() -> None:
    if op.get_bind().dialect.name != "mysql":
        return
    for table, columns in COLUMNS.items():
        op.execute(f"ALTER TABLE {table} " + ", ".join(f"MODIFY {c} DOUBLE NULL" for c in columns))
        rounded = ", ".join(f"{c} = ROUND({c}, 6)" for c in columns)
        op.execute(f"UPDATE {table} SET {rounded}")  # noqa: S608 (names of ours)


def downgrade() -> None:
    if op.get_bind().dialect.name != "mysql":
        return
    for table, columns in COLUMNS.items():
        op.execute(f"ALTER TABLE {table} " + ", ".join(f"MODIFY {c} FLOAT NULL" for c in columns))
