"""ledger: a lot can start later than it is granted

A plan's next period renewed early was spendable at once, before its month began.
Its lot now records when it starts; lots granted before have none and are
spendable from their grant, as they were.

Revision ID: ledger_0004
Revises: ledger_0003
Create Date: 2026-11-28 09:20:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from comfygate.adapters.db.base import UtcDateTime

revision: str = "ledger_0004"
down_revision: str | Sequence[str] | None = "ledger_0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("lots") as batch_op:
        batch_op.add_column(sa.Column("starts_at", UtcDateTime, nullable=True))


def downgrade() -> None:
    lots = sa.table("lots", sa.column("starts_at", UtcDateTime))
    ahead = sa.select(sa.func.count()).where(lots.c.starts_at > datetime.now(UTC))
    waiting = op.get_bind().execute(ahead).scalar_one()
    if waiting:  # the older schema would make their tokens spendable now
        raise RuntimeError(
            f"cannot downgrade: {waiting} lot(s) are granted ahead of their start, and "
            "would be spendable at once; downgrade once they have started"
        )
    with op.batch_alter_table("lots") as batch_op:
        batch_op.drop_column("starts_at")
