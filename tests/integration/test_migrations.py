"""The migrations build exactly the tables the code declares, on every backend."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from comfygate.adapters.db import migrate
from comfygate.adapters.db.base import metadata
from comfygate.adapters.db.engine import create_engine
from comfygate.adapters.db.tables_ledger import holds


def test_upgraded_schema_matches_the_declared_tables(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        migrate.upgrade(engine)
        # Down past the newest ledger and identity revisions and up again: both work.
        command.downgrade(migrate.alembic_config(engine), "ledger_0001")
        command.downgrade(migrate.alembic_config(engine), "identity_0001")
        migrate.upgrade(engine)
        with engine.connect() as conn:
            diffs = compare_metadata(MigrationContext.configure(conn), metadata)
            indexes = {ix["name"]: ix for ix in sa.inspect(conn).get_indexes(holds.name)}
        mariadb = engine.dialect.name == "mysql"
        # Alembic's comparison ignores ``ddl_if``: this index is declared for MariaDB only.
        only_mariadb = ("add_index", "ix_holds_state_expires_at")
        assert [d for d in diffs if mariadb or (d[0], d[1].name) != only_mariadb] == []
        assert "ix_holds_open" in indexes
        assert ("ix_holds_state_expires_at" in indexes) == mariadb
        assert "ix_holds_account_id" not in indexes
    finally:
        engine.dispose()


def test_a_new_sqlite_database_has_small_pages_and_an_old_one_keeps_its_own(
    tmp_path: Path,
) -> None:
    """New files get 1 KiB pages (a commit writes whole pages); a file made with
    SQLite's default 4 KiB pages keeps them, in WAL mode, and upgrades as before."""
    old = tmp_path / "old.db"
    with sqlite3.connect(old) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE made_before (x)")
    for path, size in ((tmp_path / "new.db", 1024), (old, 4096)):
        engine = create_engine(f"sqlite:///{path}")
        try:
            migrate.upgrade(engine)
            with engine.connect() as conn:
                assert conn.exec_driver_sql("PRAGMA page_size").scalar() == size
                assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        finally:
            engine.dispose()
