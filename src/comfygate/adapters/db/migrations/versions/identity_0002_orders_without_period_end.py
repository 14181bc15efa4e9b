"""identity: orders lose period_end

It served one query, "paid until when", which the subscription periods now answer
whatever granted them (an order or an operator). The period an order bought stays in
its ``grant_info``.

Revision ID: identity_0002
Revises: identity_0001
Create Date: 2026-11-28 08:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from comfygate.adapters.db.base import UtcDateTime

revision: str = "identity_0002"
down_revision: str | Sequence[str] | None = "identity_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("orders") as batch_op:
        batch_op.drop_column("period_end")


def downgrade() -> None:
    with op.batch_alter_table("orders") as batch_op:
        batch_op.add_column(sa.Column("period_end", UtcDateTime, nullable=True))
