"""Subscription periods and unlimited entitlements on SQL.

Every submission asks for the account's entitlement in force. Entitlements are only
ever inserted, so the store keeps each account's list (not filtered by time) for
``entitlements_ttl_s`` (1 s) and picks the one in force in process: exact at any
instant for every entitlement it knows. The list is dropped whenever this store
records an entitlement; one recorded by another process is seen here at most that
long after it was stored.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from comfygate.adapters.db.engine import read_only
from comfygate.adapters.db.tables_ledger import balances, entitlements, subscriptions
from comfygate.domain import plans as dp
from comfygate.services.plans import Entitlement, new_subscription_id

_e = entitlements.c
# Newest end first, so the first one in force is the one that lasts longest.
_ACCOUNT_ENTITLEMENTS = (
    sa.select(_e.plan, _e.starts_at, _e.ends_at, _e.max_concurrent_jobs)
    .where(_e.account_id == sa.bindparam("account_id"))
    .order_by(_e.ends_at.desc())
)


class SqlSubscriptionStore:
    """``SubscriptionStore`` on a SQLAlchemy engine; inserts are idempotent."""

    def __init__(
        self, engine: Engine, *, entitlements_ttl_s: float = 1.0, cache_size: int = 4096
    ) -> None:
        self.engine = engine
        self._ttl_s = entitlements_ttl_s
        self._cache_size = cache_size
        self._lock = threading.Lock()
        # account id -> (read at, monotonic s; its entitlements, newest end first)
        self._cache: OrderedDict[str, tuple[float, list[Entitlement]]] = OrderedDict()
        self._generation = 0  # bumped by every invalidation (see ``_entitlements``)

    def choose_period(
        self,
        *,
        account_id: str,
        plan: str,
        choose: Callable[[list[dp.Period]], dp.Period],
        created_at: datetime,
        subscription_id: str | None = None,
    ) -> tuple[str, dp.Period]:
        s = subscriptions.c
        # The lock: the account's balance row, as the ledger takes it (on SQLite the
        # write transaction itself). Two subscribes of one account never both see
        # "no period" and each start a run of its own.
        lock = sa.select(balances.c.account_id).where(balances.c.account_id == account_id)
        mine = (s.account_id == account_id) & (s.plan == plan)
        with self.engine.begin() as conn:
            conn.execute(lock.with_for_update())
            rows = conn.execute(sa.select(s.id, s.period_start, s.period_end).where(mine))
            known = {dp.Period(start, end): str(sub_id) for sub_id, start, end in rows}
            recorded = {sub_id: period for period, sub_id in known.items()}
            if subscription_id in recorded:
                return subscription_id, recorded[subscription_id]
            period = choose(list(known))
            if period in known:
                return known[period], period
            sub_id = subscription_id or new_subscription_id()
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
        return sub_id, period

    def periods(self, account_id: str, plan: str) -> list[dp.Period]:
        s = subscriptions.c
        query = sa.select(s.period_start, s.period_end).where(
            s.account_id == account_id, s.plan == plan
        )
        with read_only(self.engine.connect()) as conn:
            return [dp.Period(start, end) for start, end in conn.execute(query)]

    def add_entitlement(
        self, *, subscription_id: str, account_id: str, plan: dp.Plan, period: dp.Period
    ) -> bool:
        find = sa.select(entitlements.c.id).where(entitlements.c.subscription_id == subscription_id)
        with read_only(self.engine.connect()) as conn:
            if conn.execute(find).first() is not None:
                return False
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
            return False  # recorded by a concurrent call: the key is derived, so same row
        finally:
            with self._lock:  # this process sees its own entitlements at once
                self._cache.pop(account_id, None)
                self._generation += 1
        return True

    def active_entitlement(self, account_id: str, at: datetime) -> Entitlement | None:
        return next(
            (e for e in self._entitlements(account_id) if e.starts_at <= at < e.ends_at), None
        )

    def _entitlements(self, account_id: str) -> list[Entitlement]:
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(account_id)
            if cached is not None and now - cached[0] < self._ttl_s:
                self._cache.move_to_end(account_id)
                return cached[1]
            generation = self._generation
        with read_only(self.engine.connect()) as conn:
            rows = conn.execute(_ACCOUNT_ENTITLEMENTS, {"account_id": account_id}).all()
        found = [Entitlement(r.plan, r.starts_at, r.ends_at, r.max_concurrent_jobs) for r in rows]
        with self._lock:
            # Not if an entitlement was recorded meanwhile: this read may predate it.
            if generation == self._generation:
                self._cache[account_id] = (now, found)
                self._cache.move_to_end(account_id)
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return found
