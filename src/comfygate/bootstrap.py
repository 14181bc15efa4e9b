"""The composition root: builds adapters from ``Settings`` and wires the services.

Nothing is built at import time; ``build(settings)`` makes one ``Container`` per
process (the CLI, the server, a test).
"""

from __future__ import annotations

import asyncio
import dataclasses
import tomllib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from comfygate.adapters.db import migrate
from comfygate.adapters.db.engine import create_engine, is_backend
from comfygate.adapters.db.sql_identity import SqlAuditStore, SqlIdentityStore
from comfygate.adapters.db.sql_ledger import SqlLedgerStore
from comfygate.adapters.db.sql_payments import SqlOrderStore
from comfygate.adapters.db.sql_plans import SqlSubscriptionStore
from comfygate.adapters.db.sql_pricing import build_pricing_services
from comfygate.adapters.db.sql_reports import SqlCostSamples, SqlUsageCounts
from comfygate.adapters.metrics import GatewayMetrics
from comfygate.adapters.payments import HmacWebhookProvider
from comfygate.adapters.ratelimit import RateLimiter, RedisRateLimiter, TokenBucketRateLimiter
from comfygate.adapters.serial import SerialWorker
from comfygate.adapters.storage.local import check_data_dir, prepare_data_dir
from comfygate.bootstrap_jobs import JobServices, build_job_services
from comfygate.config import Settings
from comfygate.domain.errors import ValidationFailedError
from comfygate.domain.plans import PlanCatalog, parse_catalog
from comfygate.services.accounts import AccountQueries
from comfygate.services.audit import AuditLog
from comfygate.services.clock import Clock, SystemClock
from comfygate.services.cost_fit import CostFitting
from comfygate.services.identity import IdentityService
from comfygate.services.ledger import LedgerService
from comfygate.services.payments import PaymentService
from comfygate.services.plans import PlanService
from comfygate.services.quoting import PricingServices
from comfygate.services.reports import UsageReports

HOT_PATH_LANES = 8
"""Threads of ``Container.serial`` on PostgreSQL or MariaDB (see ``adapters.serial``)."""


def _read_toml(path: Path | None, shipped: str) -> dict[str, Any]:
    if path is None:
        text = resources.files("comfygate.data").joinpath(shipped).read_text("utf-8")
        return tomllib.loads(text)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:  # the operator's file: say which, in a line
        raise ValidationFailedError(f"{path} is not valid TOML: {error}", errors=[]) from None


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
    # gateway: identity, audit, payments, observability (entrypoints/api)
    audit: AuditLog
    identity: IdentityService
    payments: PaymentService
    metrics: GatewayMetrics
    rate_limiter: RateLimiter
    pricing: PricingServices
    # jobs: submit, dispatch, settle, results, usage (bootstrap_jobs)
    jobs: JobServices
    reports: UsageReports
    cost_fit: CostFitting
    serial: SerialWorker
    """Runs the hot path's blocking calls: quotes, submissions, job starts, settlements."""
    # Fields with defaults stay last (dataclass rule): lifecycle hooks the API's
    # lifespan runs, and readiness checks /readyz runs (name -> async "is it ready?").
    on_startup: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    on_shutdown: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    readiness_checks: dict[str, Callable[[], Awaitable[bool]]] = field(default_factory=dict)

    def upgrade_database(self) -> None:
        """Create or upgrade the schema (idempotent), and record the built-in price
        book (refusing one whose prices changed under an old version)."""
        migrate.upgrade(self.engine)
        self.pricing.price_books.check_builtin()

    def check_database(self) -> None:
        """``upgrade_database`` without migrating: ``SchemaMismatchError`` unless the
        schema is exactly the code's (``auto_migrate`` off)."""
        migrate.check(self.engine)
        self.pricing.price_books.check_builtin()

    def prepare_data_dir(self) -> None:
        """Create the data dir and its folders; refuse one that cannot be written."""
        prepare_data_dir(self.settings.data_dir)

    def close(self) -> None:
        self.serial.close()
        self.ledger_store.close()
        self.engine.dispose()


def build(settings: Settings, *, clock: Clock | None = None) -> Container:
    """Wire the embedded default or scale-out adapters, as ``settings`` say."""
    clock = clock or SystemClock()
    engine = create_engine(settings.database_url)
    ledger_store = SqlLedgerStore(engine)
    ledger = LedgerService(
        store=ledger_store,
        clock=clock,
        hold_ttl_s=settings.hold_ttl_s,
        batch_max=settings.ledger_batch_max or (32 if is_backend(engine, "sqlite") else 1),
    )
    plans = PlanService(
        catalog=load_plan_catalog(settings),
        ledger=ledger,
        ledger_store=ledger_store,
        subscriptions=SqlSubscriptionStore(engine),
        clock=clock,
    )
    accounts = AccountQueries(store=ledger_store, plans=plans, clock=clock)
    audit = AuditLog(store=SqlAuditStore(engine), clock=clock)
    identity = IdentityService(
        store=SqlIdentityStore(engine),
        ledger=ledger,
        audit=audit,
        clock=clock,
        auth_cache_ttl_s=settings.auth_cache_ttl_s,
    )
    payments = PaymentService(
        store=SqlOrderStore(engine),
        plans=plans,
        audit=audit,
        clock=clock,
        providers={
            name: HmacWebhookProvider(name=name, secret=secret)
            for name, secret in settings.payment_webhook_secrets.items()
        },
    )
    rate_limiter = _rate_limiter(settings)
    metrics = GatewayMetrics()
    # SQLite has one writer at a time: one lane. A server database: several.
    lanes = 1 if engine.dialect.name == "sqlite" else HOT_PATH_LANES
    serial = SerialWorker("comfygate-hot-path", lanes=lanes)
    pricing = build_pricing_services(
        engine,
        clock=clock,
        lock_s=settings.quote_lock_s,
        price_book_file=settings.price_book_file,
        max_pixels=settings.max_image_pixels,
        account_exists=ledger_store.account_exists,
    )
    jobs = build_job_services(
        settings,
        engine=engine,
        clock=clock,
        ledger=ledger,
        plans=plans,
        quotes=pricing.quotes,
        audit=audit,
        metrics=metrics,
        offload=serial.call,
        chores=[payments.grant_paid],
    )
    container = Container(
        settings=settings,
        engine=engine,
        clock=clock,
        ledger_store=ledger_store,
        ledger=ledger,
        plans=plans,
        accounts=accounts,
        audit=audit,
        identity=identity,
        payments=payments,
        metrics=metrics,
        rate_limiter=rate_limiter,
        pricing=pricing,
        jobs=jobs,
        reports=UsageReports(
            SqlUsageCounts(engine),
            clock,
            default_timezone=lambda account: (
                pricing.price_books.show(account_id=account).book.timezone
            ),
        ),
        cost_fit=CostFitting(SqlCostSamples(engine), pricing.price_books, clock),
        serial=serial,
    )

    async def close_serial() -> None:  # the last hook to run (they run in reverse)
        await asyncio.to_thread(serial.close)

    container.on_shutdown.append(close_serial)
    container.on_shutdown.append(rate_limiter.close)
    container.on_startup.append(jobs.dispatcher.start)
    container.on_shutdown.append(jobs.dispatcher.stop)
    container.readiness_checks["engines"] = jobs.dispatcher.is_ready

    async def data_dir_writable() -> bool:  # raises, naming the folder, when it is not
        await asyncio.to_thread(check_data_dir, settings.data_dir)
        return True

    async def make_data_dir() -> None:  # (serve and init have, before; an embedding app not)
        await asyncio.to_thread(prepare_data_dir, settings.data_dir)

    container.on_startup.insert(0, make_data_dir)

    container.readiness_checks["data_dir"] = data_dir_writable

    async def schema_matches() -> bool:  # raises, naming the revisions, when behind
        # A schema ahead of the code is a newer release's, migrated while this one
        # still serves (a rolling deploy): it keeps serving, and is refused a start.
        found = await asyncio.to_thread(migrate.status, engine)
        if found.pending:
            migrate.refuse_mismatch(dataclasses.replace(found, unknown=()))
        return True

    container.readiness_checks["schema"] = schema_matches
    return container


def _rate_limiter(settings: Settings) -> RateLimiter:
    """Redis buckets when configured (shared by every gateway), else in process."""
    if settings.redis_url:
        return RedisRateLimiter(url=settings.redis_url, per_minute=settings.rate_limit_per_minute)
    return TokenBucketRateLimiter(per_minute=settings.rate_limit_per_minute)
