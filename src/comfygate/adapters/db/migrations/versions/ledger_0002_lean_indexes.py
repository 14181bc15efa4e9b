"""ledger: fewer indexes on the hot tables

A hold and its capture each write a journal row, its postings and the hold; on SQLite
every B-tree page they touch is written to the WAL at commit, and on every backend
each index is maintained on every insert. Postings are only ever looked up by their
transaction (``reconcile`` scans them all), and the only lookup of holds by account
is for open ones that are due, so:

- postings lose their indexes on account_id, lot_id and hold_id;
- holds lose ix_holds_account_id and ix_holds_state_expires_at for ix_holds_open:
  (account_id, expires_at) of open holds only, on SQLite and PostgreSQL (partial); a
  capture then removes its entry instead of moving it. MariaDB has no partial indexes:
  there ix_holds_open covers every hold (and serves the account foreign key), and
  ix_holds_state_expires_at stays for the expiry sweep.

Revision ID: ledger_0002
Revises: ledger_0001
Create Date: 2026-11-28 01:10:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "ledger_0002"
down_revision: str | Sequence[str] | None = "ledger_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OPEN = sa.text("state = 'open'")


def upgrade() -> None:
    mariadb = op.get_bind().dialect.name == "mysql"
    with op.batch_alter_table("postings") as batch_op:
        for column in ("account_id", "lot_id", "hold_id"):
            batch_op.drop_index(f"ix_postings_{column}")
    with op.batch_alter_table("holds") as batch_op:
        batch_op.create_index(
            "ix_holds_open",
            ["account_id", "expires_at"],
            sqlite_where=OPEN,
            postgresql_where=OPEN,
        )
        batch_op.drop_index("ix_holds_account_id")
        if not mariadb:
            batch_op.drop_index("ix_holds_state_expires_at")


def downgrade() -> None:
    mariadb = op.get_bind().dialect.name == "mysql"
    with op.batch_alter_table("holds") as batch_op:
        if not mariadb:
            batch_op.create_index("ix_holds_state_expires_at", ["state", "expires_at"])
        batch_op.create_index("ix_holds_account_id", ["account_id"])
        batch_op.drop_index("ix_holds_open")
    with op.batch_alter_table("postings") as batch_op:
        for column in ("account_id", "lot_id", "hold_id"):
            batch_op.create_index(f"ix_postings_{column}", [column])
