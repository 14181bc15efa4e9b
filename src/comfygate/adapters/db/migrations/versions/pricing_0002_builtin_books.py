"""pricing: the built-in default books a database has been priced by

Revision ID: pricing_0002
Revises: pricing_0001
Create Date: 2026-11-28 07:45:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from comfygate.adapters.db.base import UtcDateTime
from comfygate.adapters.db.tables_pricing import Document

revision: str = "pricing_0002"
down_revision: str | Sequence[str] | None = "pricing_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "builtin_price_books",
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("document", Document, nullable=False),
        sa.Column("first_used_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("version"),
    )


def downgrade() -> None:
    books = sa.table("builtin_price_books", sa.column("version"))
    replaced = op.get_bind().execute(sa.select(sa.func.count()).select_from(books)).scalar_one()
    if replaced > 1:  # the one in use comes back from its file; the others would not
        raise RuntimeError(
            "cannot downgrade: the database keeps built-in price books that a newer one "
            "replaced, and quotes and charges priced by them would lose their prices"
        )
    op.drop_table("builtin_price_books")
