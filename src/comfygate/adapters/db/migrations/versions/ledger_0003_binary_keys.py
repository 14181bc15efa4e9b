"""ledger: idempotency keys compared byte for byte on MariaDB

MariaDB's default collation is case- and accent-insensitive and ignores trailing
spaces, so its unique index took ``Job-A`` and ``job-a`` for one key (a second
top-up under such a key replayed the first and granted nothing). SQLite and
PostgreSQL already compare bytes; elsewhere this changes nothing.

Revision ID: ledger_0003
Revises: ledger_0002
Create Date: 2026-11-28 07:20:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from comfygate.adapters.db.base import IDEMPOTENCY_KEY_COLLATION

revision: str = "ledger_0003"
down_revision: str | Sequence[str] | None = "ledger_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "mysql":
        op.execute(
            "ALTER TABLE ledger_transactions MODIFY idempotency_key VARCHAR(255) "
            f"CHARACTER SET utf8mb4 COLLATE {IDEMPOTENCY_KEY_COLLATION} NULL"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "mysql":
        op.execute(
            "ALTER TABLE ledger_transactions MODIFY idempotency_key VARCHAR(255) "
            "CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci NULL"
        )
