"""Subscription periods and unlimited entitlements on SQL."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from comfygate.adapters.db.engine import read_only
from comfygate.adapters.db.tables_ledger import entitlements, subscriptions
from comfygate.domain import plans as dp
from comfygate.services.plans import Entitlement, new_subscription_id


class SqlSubscriptionStore:
    """``SubscriptionStore`` on a SQLAlchemy engine; inserts are idempotent."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def first_period_start(self, account_id: str, plan: str) -> datetime | None:
        query = sa.select(sa.func.min(subscriptions.c.period_start)).where(
            subscriptions.c.account_id == account_id, subscriptions.c.plan == plan
        )
        with read_only(self.engine.connect()) as conn:
            return conn.execute(query).scalar_one_or_none()

    def add_period(
        self, *, account_id: str, plan: str, period: dp.Period, created_at: datetime
    ) -> str:
        find = sa.select(subscriptions.c.id).where(
            subscriptions.c.account_id == account_id,
            subscriptions.c.plan == plan,
            subscriptions.c.period_start == period.start,
        )
        with read_only(self.engine.connect()) as conn:
            existing = conn.execute(find).scalar_one_or_none()
        if existing is not None:
            return str(existing)
        sub_id = new_subscription_id()
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    subscriptions.insert(),
                    {
                        "id": sub_id,
                        "account_id": account_id,
                        "plan": plan,
                        "period_start": period.start,
                        "period_end": period.end,
                        "created_at": created_at,
                    },
                )
        except sa.exc.IntegrityError:
            # A concurrent subscribe recorded the same period first: use that one.
            with read_only(self.engine.connect()) as conn:
                return str(conn.execute(find).scalar_one())
        return sub_id

    def add_entitlement(
        self, *, subscription_id: str, account_id: str, plan: dp.Plan, period: dp.Period
    ) -> None:
        find = sa.select(entitlements.c.id).where(entitlements.c.subscription_id == subscription_id)
        with read_only(self.engine.connect()) as conn:
            if conn.execute(find).first() is not None:
                return
        row = {
            "id": f"ent_{subscription_id.removeprefix('sub_')}",
            "account_id": account_id,
            "plan": plan.name,
            "starts_at": period.start,
            "ends_at": period.end,
            "max_concurrent_jobs": plan.max_concurrent_jobs or 1,
            "subscription_id": subscription_id,
        }
        try:
            with self.engine.begin() as conn:
                conn.execute(entitlements.insert(), row)
        except sa.exc.IntegrityError:
            return  # recorded by a concurrent call: the primary key is derived, so same row

    def active_entitlement(self, account_id: str, at: datetime) -> Entitlement | None:
        query = (
            sa.select(entitlements)
            .where(
                entitlements.c.account_id == account_id,
                entitlements.c.starts_at <= at,
                entitlements.c.ends_at > at,
            )
            .order_by(entitlements.c.ends_at.desc())
            .limit(1)
        )
        with read_only(self.engine.connect()) as conn:
            row = conn.execute(query).first()
        if row is None:
            return None
        return Entitlement(row.plan, row.starts_at, row.ends_at, row.max_concurrent_jobs)
