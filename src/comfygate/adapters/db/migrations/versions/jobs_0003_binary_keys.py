"""jobs: idempotency keys compared byte for byte on MariaDB

MariaDB's default collation is case- and accent-insensitive and ignores trailing
spaces, so its unique index took ``Job-A`` and ``job-a`` for one key (a second
top-up under such a key replayed the first and granted nothing). SQLite and
PostgreSQL already compare bytes; elsewhere this changes nothing.

Revision ID: jobs_0003
Revises: jobs_0002
Create Date: 2026-11-28 07:20:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from comfygate.adapters.db.base import (
    IDEMPOTENCY_KEY_COLLATION,
    idempotency_key_collation_ddl,
    refuse_colliding_keys,
)

revision: str = "jobs_0003"
down_revision: str | Sequence[str] | None = "jobs_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "mysql":
        op.execute(idempotency_key_collation_ddl("jobs", IDEMPOTENCY_KEY_COLLATION))


def downgrade() -> None:
    if op.get_bind().dialect.name == "mysql":
        refuse_colliding_keys(op.get_bind(), "jobs", "utf8mb4_general_ci", scope=["account_id"])
        op.execute(idempotency_key_collation_ddl("jobs", "utf8mb4_general_ci"))
