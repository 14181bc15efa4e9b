"""Payment tables: orders for plans, and the provider events already applied."""

from __future__ import annotations

import sqlalchemy as sa

from comfygate.adapters.db.base import Id, IdempotencyKey, UtcDateTime, metadata

orders = sa.Table(
    "orders",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("account_id", Id, sa.ForeignKey("accounts.id"), nullable=False, index=True),
    sa.Column("user_id", Id, nullable=False),
    sa.Column("plan", sa.String(40), nullable=False),
    sa.Column("provider", sa.String(40), nullable=False),
    sa.Column("state", sa.String(12), nullable=False, index=True),
    sa.Column("amount", sa.String(32), nullable=False),
    sa.Column("currency", sa.String(8), nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("paid_at", UtcDateTime, nullable=True),
    sa.Column("provider_ref", sa.String(200), nullable=True),
    sa.Column("grant_info", sa.Text, nullable=True),
    sa.Column("idempotency_key", IdempotencyKey, nullable=True),
    # A retried POST /v1/orders with its Idempotency-Key finds its first order.
    sa.Index("uq_orders_idempotency", "account_id", "idempotency_key", unique=True),
)

payment_events = sa.Table(
    "payment_events",
    metadata,
    sa.Column("provider", sa.String(40), primary_key=True),
    sa.Column("event_id", sa.String(200), primary_key=True),
    sa.Column("order_id", Id, nullable=False, index=True),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("received_at", UtcDateTime, nullable=False),
)
