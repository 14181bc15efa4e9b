"""The migrations build exactly the tables the code declares, on every backend."""

from __future__ import annotations

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
        # Down past the newest ledger revision and up again: both directions work.
        command.downgrade(migrate.alembic_config(engine), "ledger_0001")
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
