"""Plans: subscribe, renew, buy a top-up, and the unlimited (VIP) entitlement.

Every grant a plan makes goes through ``LedgerService.grant`` with an idempotency key
derived from the plan and the period, so subscribing or renewing twice for the same
period grants once. Period rows are unique per (account, plan, period start).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from comfygate.domain import plans as dp
from comfygate.domain.errors import InvalidInputError
from comfygate.domain.ids import new_id
from comfygate.services.clock import Clock
from comfygate.services.ledger import LedgerService, require_account
from comfygate.services.ledger_ports import LedgerStore


@dataclass(frozen=True, slots=True)
class Entitlement:
    plan: str
    starts_at: datetime
    ends_at: datetime
    max_concurrent_jobs: int


@dataclass(frozen=True, slots=True)
class SubscriptionReceipt:
    account_id: str
    plan: str
    kind: str
    period_start: datetime
    period_end: datetime
    tokens_granted: int
    lot_id: str | None
    unlimited: bool
    replayed: bool = False
    """Granted before (the same period, or the same key): this call moved nothing."""
    subscription_id: str | None = None
    """The period's subscription (None for a top-up pack)."""


class SubscriptionStore(Protocol):
    def choose_period(
        self,
        *,
        account_id: str,
        plan: str,
        choose: Callable[[list[dp.Period]], dp.Period],
        created_at: datetime,
        subscription_id: str | None = None,
    ) -> tuple[str, dp.Period]:
        """Record the period ``choose`` picks from the account's periods of ``plan``
        (a no-op if recorded already), deciding under the account's lock so that
        concurrent subscribers choose one after the other; its subscription id. Given
        a ``subscription_id`` already recorded, its period, without choosing again."""
        ...

    def add_entitlement(
        self, *, subscription_id: str, account_id: str, plan: dp.Plan, period: dp.Period
    ) -> bool:
        """Record an unlimited entitlement for the period; False if it was there."""
        ...

    def periods(self, account_id: str, plan: str) -> list[dp.Period]:
        """The account's recorded periods of ``plan``."""
        ...

    def active_entitlement(self, account_id: str, at: datetime) -> Entitlement | None: ...


class PlanService:
    """Turns plans into grants and entitlements."""

    def __init__(
        self,
        *,
        catalog: dp.PlanCatalog,
        ledger: LedgerService,
        ledger_store: LedgerStore,
        subscriptions: SubscriptionStore,
        clock: Clock,
    ) -> None:
        self.catalog = catalog
        self._ledger = ledger
        self._ledger_store = ledger_store
        self._subs = subscriptions
        self._clock = clock

    def subscribe(self, *, account_id: str, plan: str) -> SubscriptionReceipt:
        """Start (or confirm) a subscription: the period in force, else a new one from
        now (``plans.subscription_period``)."""
        spec = self._subscribable(plan)
        require_account(self._ledger_store, account_id)
        clock, tz = self._clock, self.catalog.timezone

        def choose(periods: list[dp.Period]) -> dp.Period:  # under the lock, so "now" too
            return dp.subscription_period(spec, periods, clock.now(), tz)

        return self._grant_period(account_id, spec, choose)

    def renew(self, *, account_id: str, plan: str) -> SubscriptionReceipt:
        """Grant the period after the one in force (idempotent for that period), or the
        one running now when the renewal comes late (``plans.renewal_period``)."""
        spec = self._subscribable(plan)
        require_account(self._ledger_store, account_id)
        clock, tz = self._clock, self.catalog.timezone

        def choose(periods: list[dp.Period]) -> dp.Period:  # under the lock, so "now" too
            period = dp.renewal_period(spec, periods, clock.now(), tz)
            if period is None:
                raise InvalidInputError(f"account has no {plan} subscription to renew", plan=plan)
            return period

        return self._grant_period(account_id, spec, choose)

    def purchase(self, *, account_id: str, plan: str, order_id: str) -> SubscriptionReceipt:
        """Grant the period a paid order bought (``plans.purchase_period``): its own,
        after any still to run, once however often it is asked."""
        spec = self._subscribable(plan)
        require_account(self._ledger_store, account_id)
        clock, tz = self._clock, self.catalog.timezone

        def choose(periods: list[dp.Period]) -> dp.Period:  # under the lock, so "now" too
            return dp.purchase_period(spec, periods, clock.now(), tz)

        own = f"sub_{order_id.removeprefix('ord_')}"
        return self._grant_period(account_id, spec, choose, subscription_id=own)

    def buy_topup(self, *, account_id: str, plan: str, idempotency_key: str) -> SubscriptionReceipt:
        """Grant a top-up pack once per idempotency key (e.g. the payment order id)."""
        spec = self.catalog.get(plan)
        if spec.kind != "topup":
            raise InvalidInputError(f"plan {plan} is not a top-up pack", plan=plan)
        receipt = self._ledger.grant(
            account_id=account_id,
            amount=spec.tokens,
            source="topup",
            valid_for=dp.topup_validity(spec),  # from whenever it is granted: a replay
            idempotency_key=f"topup:{plan}:{idempotency_key}",  # later is the same request
            memo={"plan": plan},
        )
        assert receipt.expires_at is not None
        expires_at = datetime.fromisoformat(receipt.expires_at)
        granted_at = expires_at - dp.topup_validity(spec)
        return SubscriptionReceipt(
            account_id, plan, spec.kind, granted_at, expires_at, spec.tokens, receipt.lot_id,
            False, receipt.replayed,
        )  # fmt: skip

    def paid_until(self, *, account_id: str, plan: str) -> datetime | None:
        """The end of the account's last period of ``plan`` still to run (None when it
        has none), however it was granted: by an order, or by an operator."""
        now = self._clock.now()
        ends = [p.end for p in self._subs.periods(account_id, plan) if p.end > now]
        return max(ends, default=None)

    def entitlement(self, *, account_id: str) -> Entitlement | None:
        """The unlimited entitlement in force now, if any."""
        return self._subs.active_entitlement(account_id, self._clock.now())

    def _subscribable(self, plan: str) -> dp.Plan:
        spec = self.catalog.get(plan)
        if spec.kind == "topup":
            raise InvalidInputError(f"{plan} is a top-up pack: buy it, don't subscribe", plan=plan)
        return spec

    def _grant_period(
        self,
        account_id: str,
        spec: dp.Plan,
        choose: Callable[[list[dp.Period]], dp.Period],
        *,
        subscription_id: str | None = None,
    ) -> SubscriptionReceipt:
        """Grant the chosen period. ``tokens_granted`` is what this call granted, or,
        for a period of its own (``subscription_id``), what the period grants."""
        own = subscription_id is not None
        subscription_id, period = self._subs.choose_period(
            account_id=account_id,
            plan=spec.name,
            choose=choose,
            created_at=self._clock.now(),
            subscription_id=subscription_id,
        )
        if spec.kind == "unlimited":
            added = self._subs.add_entitlement(
                subscription_id=subscription_id, account_id=account_id, plan=spec, period=period
            )
            return SubscriptionReceipt(
                account_id, spec.name, spec.kind, period.start, period.end, 0, None, True,
                not added, subscription_id,
            )  # fmt: skip
        receipt = self._ledger.grant(
            account_id=account_id,
            amount=spec.tokens,
            source="plan",
            starts_at=period.start,  # a period renewed ahead is not spendable before it
            expires_at=period.end,
            idempotency_key=f"plan:{spec.name}:{period.start.isoformat()}",
            memo={"plan": spec.name, "subscription_id": subscription_id},
        )
        return SubscriptionReceipt(
            account_id,
            spec.name,
            spec.kind,
            period.start,
            period.end,
            spec.tokens if own or not receipt.replayed else 0,
            receipt.lot_id,
            False,
            receipt.replayed,
            subscription_id,
        )


def new_subscription_id() -> str:
    return new_id("sub")
