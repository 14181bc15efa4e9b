"""The composition root: builds adapters from ``Settings`` and wires the services.

Nothing is built at import time; ``build(settings)`` makes one ``Container`` per
process (the CLI, the server, a test).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from comfygate.adapters.db import migrate
from comfygate.adapters.db.engine import create_engine
from comfygate.adapters.db.sql_ledger import SqlLedgerStore
from comfygate.adapters.db.sql_plans import SqlSubscriptionStore
from comfygate.config import Settings
from comfygate.domain.plans import PlanCatalog, parse_catalog
from comfygate.services.accounts import AccountQueries
from comfygate.services.clock import Clock, SystemClock
from comfygate.services.ledger import LedgerService
from comfygate.services.plans import PlanService


def _read_toml(path: Path | None, shipped: str) -> dict[str, Any]:
    if path is not None:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    return tomllib.loads(resources.files("comfygate.data").joinpath(shipped).read_text("utf-8"))


def load_plan_catalog(settings: Settings) -> PlanCatalog:
    """The operator's catalog file if configured, else the shipped one."""
    return parse_catalog(_read_toml(settings.plans_file, "plans.toml"))


@dataclass
class Container:
    """Everything a process needs, built once."""

    settings: Settings
    engine: Engine
    clock: Clock
    ledger_store: SqlLedgerStore
    ledger: LedgerService
    plans: PlanService
    accounts: AccountQueries

    def upgrade_database(self) -> None:
        """Create or upgrade the schema (idempotent)."""
        migrate.upgrade(self.engine)

    def close(self) -> None:
        self.engine.dispose()


def build(settings: Settings, *, clock: Clock | None = None) -> Container:
    """Wire the embedded default or scale-out adapters, as ``settings`` say."""
    clock = clock or SystemClock()
    engine = create_engine(settings.database_url)
    ledger_store = SqlLedgerStore(engine)
    ledger = LedgerService(store=ledger_store, clock=clock, hold_ttl_s=settings.hold_ttl_s)
    plans = PlanService(
        catalog=load_plan_catalog(settings),
        ledger=ledger,
        ledger_store=ledger_store,
        subscriptions=SqlSubscriptionStore(engine),
        clock=clock,
    )
    accounts = AccountQueries(store=ledger_store, plans=plans, clock=clock)
    return Container(settings, engine, clock, ledger_store, ledger, plans, accounts)
