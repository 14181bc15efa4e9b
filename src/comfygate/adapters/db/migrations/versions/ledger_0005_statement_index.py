"""ledger: an account's statement reads one page, not its whole history

The statement lists an account's transactions newest first, a page at a time. Its
index had the account alone, so every page found all of the account's transactions,
summed their postings and sorted them to keep fifty: 0.4 s a page for an account
with 100,000 transactions, and growing with it. On (account_id, id) a page is a range
of the index, read backwards from the cursor.

On MariaDB the new index serves the account's foreign key, so it is created before
the old one is dropped.

Revision ID: ledger_0005
Revises: ledger_0004
Create Date: 2026-11-28 11:40:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "ledger_0005"
down_revision: str | Sequence[str] | None = "ledger_0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "ledger_transactions"


def upgrade() -> None:
    op.create_index("ix_ledger_transactions_account_newest", TABLE, ["account_id", "id"])
    op.drop_index("ix_ledger_transactions_account_id", table_name=TABLE)


def downgrade() -> None:
    op.create_index("ix_ledger_transactions_account_id", TABLE, ["account_id"])
    op.drop_index("ix_ledger_transactions_account_newest", table_name=TABLE)
