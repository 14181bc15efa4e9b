"""Alembic environment: runs on the engine handed over by ``migrate.upgrade``."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Engine

from comfygate.adapters.db import tables
from comfygate.adapters.db.base import metadata

assert tables  # imported for its side effect: every table registered on ``metadata``

engine: Engine = context.config.attributes["engine"]

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        transactional_ddl=connection.dialect.name != "mysql",
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
