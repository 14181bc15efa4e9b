"""Create or upgrade a database to the newest schema with Alembic.

Each area of the schema (ledger, pricing, gateway, ...) is its own Alembic branch, so
``upgrade heads`` brings all of them up; a migration that needs another area's tables
says so with ``depends_on``.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine) -> None:
    """Bring the database to every head; a no-op when it is current."""
    command.upgrade(alembic_config(engine), "heads")


def pending(engine: Engine) -> set[str]:
    """Heads not yet applied (empty when the schema is current)."""
    script = ScriptDirectory.from_config(alembic_config(engine))
    with engine.connect() as conn:
        current = set(MigrationContext.configure(conn).get_current_heads())
    return set(script.get_heads()) - current
