"""pricing: price book versions and locked quotes

Revision ID: pricing_0001
Revises:
Create Date: 2026-11-27 22:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

import comfygate.adapters.db.base

revision: str = "pricing_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("pricing",)
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "price_book_versions",
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.String(length=40), nullable=True),
        sa.Column(
            "document",
            sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb"),
            nullable=False,
        ),
        sa.Column("effective_at", comfygate.adapters.db.base.UtcDateTime(), nullable=False),
        sa.Column("created_at", comfygate.adapters.db.base.UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("version", name=op.f("pk_price_book_versions")),
    )
    with op.batch_alter_table("price_book_versions", schema=None) as batch_op:
        batch_op.create_index(
            "ix_price_book_versions_account_effective",
            ["account_id", "effective_at"],
            unique=False,
        )

    op.create_table(
        "quote_locks",
        sa.Column("quote_id", sa.String(length=40), nullable=False),
        sa.Column("account_id", sa.String(length=40), nullable=True),
        sa.Column("capability", sa.String(length=100), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("options", sa.Text(), nullable=False),
        sa.Column("tokens", sa.BigInteger(), nullable=False),
        sa.Column("breakdown", sa.Text(), nullable=False),
        sa.Column("price_book_version", sa.String(length=64), nullable=False),
        sa.Column("quoted_at", comfygate.adapters.db.base.UtcDateTime(), nullable=False),
        sa.Column("expires_at", comfygate.adapters.db.base.UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("quote_id", name=op.f("pk_quote_locks")),
    )
    with op.batch_alter_table("quote_locks", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_quote_locks_expires_at"), ["expires_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("quote_locks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_quote_locks_expires_at"))

    op.drop_table("quote_locks")
    with op.batch_alter_table("price_book_versions", schema=None) as batch_op:
        batch_op.drop_index("ix_price_book_versions_account_effective")

    op.drop_table("price_book_versions")
