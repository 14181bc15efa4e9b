"""Pricing tables: price book versions (insert-only) and locked quotes.

``price_book_versions`` rows are never updated or deleted: a new price is a new
version with its own ``effective_at``. ``account_id`` is NULL for the default book and
an account id for an enterprise customer's own book; it is deliberately not a foreign
key, so pricing does not depend on the ledger's schema. The index serves the one
hot-path query: "newest version in effect for this account or the default".
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from comfygate.adapters.db.base import Id, Tokens, UtcDateTime, metadata

VERSION_LENGTH = 64
Document = sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")
"""JSON text; MEDIUMTEXT on MariaDB, whose TEXT stops at 64 KiB."""

price_book_versions = sa.Table(
    "price_book_versions",
    metadata,
    sa.Column("version", sa.String(VERSION_LENGTH), primary_key=True),
    sa.Column("account_id", Id, nullable=True),
    sa.Column("document", Document, nullable=False),
    sa.Column("effective_at", UtcDateTime, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Index("ix_price_book_versions_account_effective", "account_id", "effective_at"),
)

builtin_price_books = sa.Table(
    "builtin_price_books",
    metadata,
    sa.Column("version", sa.String(VERSION_LENGTH), primary_key=True),
    sa.Column("document", Document, nullable=False),
    sa.Column("first_used_at", UtcDateTime, nullable=False),
)
"""Every built-in default book (a file, not a database version) this database has been
priced by, as it was: so a quote or a job names a version whose prices can be read
back, and a file edited without a new version is caught at start."""

quote_locks = sa.Table(
    "quote_locks",
    metadata,
    sa.Column("quote_id", Id, primary_key=True),
    sa.Column("account_id", Id, nullable=True),
    sa.Column("capability", sa.String(100), nullable=False),
    sa.Column("width", sa.Integer, nullable=False),
    sa.Column("height", sa.Integer, nullable=False),
    sa.Column("options", sa.Text, nullable=False),
    sa.Column("tokens", Tokens, nullable=False),
    sa.Column("breakdown", sa.Text, nullable=False),
    sa.Column("price_book_version", sa.String(VERSION_LENGTH), nullable=False),
    sa.Column("quoted_at", UtcDateTime, nullable=False),
    sa.Column("expires_at", UtcDateTime, nullable=False, index=True),
)
