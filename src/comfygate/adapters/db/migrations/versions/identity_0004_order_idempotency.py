"""identity: an order remembers the Idempotency-Key it was placed with

``POST /v1/orders`` retried after a lost answer made a second order (a second
payment asked of the customer). An order now keeps the key, unique per account, and
a retry with it is answered with the first order.

Revision ID: identity_0004
Revises: identity_0003
Create Date: 2026-11-28 20:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from comfygate.adapters.db.base import IdempotencyKey

revision: str = "identity_0004"
down_revision: str | Sequence[str] | None = "identity_0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("orders", sa.Column("idempotency_key", IdempotencyKey, nullable=True))
    op.create_index(
        "uq_orders_idempotency", "orders", ["account_id", "idempotency_key"], unique=True
    )


def downgrade() -> None:
    op.drop_index("uq_orders_idempotency", table_name="orders")
    with op.batch_alter_table("orders") as batch_op:
        batch_op.drop_column("idempotency_key")
