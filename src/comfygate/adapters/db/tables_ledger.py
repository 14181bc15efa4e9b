"""Ledger tables: accounts, the append-only journal (transactions + postings), lots,
holds, cached balances, and plan subscriptions/entitlements.

``ledger_transactions`` and ``postings`` are only ever inserted into. ``lots.remaining``,
``holds.state`` and ``balances`` are caches of what the postings say, kept in step in
the same database transaction, and checked by ``reconcile``.
"""

from __future__ import annotations

import sqlalchemy as sa

from comfygate.adapters.db.base import (
    Id,
    IdempotencyKey,
    Tokens,
    UtcDateTime,
    metadata,
    partial_index,
)

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

accounts = sa.Table(
    "accounts",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
)

balances = sa.Table(
    "balances",
    metadata,
    sa.Column("account_id", Id, sa.ForeignKey("accounts.id"), primary_key=True),
    sa.Column("available", Tokens, nullable=False),
    sa.Column("held", Tokens, nullable=False),
)

ledger_transactions = sa.Table(
    "ledger_transactions",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("account_id", Id, sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("idempotency_key", IdempotencyKey, nullable=True, unique=True),
    sa.Column("request_hash", sa.String(64), nullable=True),
    sa.Column("hold_id", Id, nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("memo", sa.Text, nullable=False),
    sa.Column("result", sa.Text, nullable=False),
    # An account's statement, newest first: a page is a range of this index.
    sa.Index("ix_ledger_transactions_account_newest", "account_id", "id"),
)

postings = sa.Table(
    "postings",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("txn_id", Id, sa.ForeignKey("ledger_transactions.id"), nullable=False, index=True),
    sa.Column("book", sa.String(16), nullable=False),
    sa.Column("account_id", Id, nullable=False),
    sa.Column("lot_id", Id, nullable=True),
    sa.Column("hold_id", Id, nullable=True),
    sa.Column("amount", Tokens, nullable=False),
)

lots = sa.Table(
    "lots",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("account_id", Id, sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("amount", Tokens, nullable=False),
    sa.Column("remaining", Tokens, nullable=False),
    sa.Column("source", sa.String(20), nullable=False),
    sa.Column("expires_at", UtcDateTime, nullable=True, index=True),
    sa.Column("priority", sa.Integer, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("memo", sa.Text, nullable=False),
    sa.Column("starts_at", UtcDateTime, nullable=True),  # spendable from (NULL: granted)
    # Every movement reads the account's lots with tokens left: used-up lots, however
    # many years of them, are not in the way (on MariaDB, which has no partial
    # indexes, ``remaining`` in the key keeps them out of the range read).
    partial_index("ix_lots_live", "account_id", "remaining", where="remaining > 0"),
)

holds = sa.Table(
    "holds",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("account_id", Id, sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("amount", Tokens, nullable=False),
    sa.Column("list_tokens", Tokens, nullable=False),
    sa.Column("state", sa.String(12), nullable=False),
    sa.Column("captured", Tokens, nullable=False),
    sa.Column("allocation", sa.Text, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("expires_at", UtcDateTime, nullable=False),
    sa.Column("settled_at", UtcDateTime, nullable=True),
    partial_index("ix_holds_open", "account_id", "expires_at", where="state = 'open'"),
    sa.Index("ix_holds_state_expires_at", "state", "expires_at").ddl_if(dialect="mysql"),
)

subscriptions = sa.Table(
    "subscriptions",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("account_id", Id, sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("plan", sa.String(40), nullable=False),
    sa.Column("period_start", UtcDateTime, nullable=False),
    sa.Column("period_end", UtcDateTime, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.UniqueConstraint("account_id", "plan", "period_start", name="uq_subscription_period"),
)

entitlements = sa.Table(
    "entitlements",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("account_id", Id, sa.ForeignKey("accounts.id"), nullable=False, index=True),
    sa.Column("plan", sa.String(40), nullable=False),
    sa.Column("starts_at", UtcDateTime, nullable=False),
    sa.Column("ends_at", UtcDateTime, nullable=False),
    sa.Column("max_concurrent_jobs", sa.Integer, nullable=False),
    sa.Column(
        "subscription_id", Id, sa.ForeignKey("subscriptions.id"), nullable=False, unique=True
    ),
)
