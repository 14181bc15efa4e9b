"""Read side of money: balances, statements, and the reconcile check."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from comfygate.domain import ledger as dl
from comfygate.services.clock import Clock
from comfygate.services.ledger import require_account
from comfygate.services.ledger_ports import Drift, LedgerStore, StatementLine
from comfygate.services.plans import PlanService


@dataclass(frozen=True, slots=True)
class LotView:
    lot_id: str
    source: str
    amount: int
    remaining: int
    """Tokens left to spend (or to expire)."""
    held: int
    """Tokens open holds took from it: they come back to it if released."""
    expires_at: datetime | None
    expired: bool
    starts_at: datetime | None
    started: bool
    """False for a lot granted ahead of its period: not spendable yet."""


@dataclass(frozen=True, slots=True)
class BalanceView:
    account_id: str
    available: int
    """Spendable now: lots started and not yet expired (held tokens excluded)."""
    held: int
    unlimited: bool
    unlimited_until: datetime | None
    lots: list[LotView]


@dataclass(frozen=True, slots=True)
class ReconcileReport:
    ok: bool
    drifts: list[Drift]
    book_totals: dict[str, int]


class AccountQueries:
    """Balances and statements as customers and operators see them."""

    def __init__(self, *, store: LedgerStore, plans: PlanService, clock: Clock) -> None:
        self._store = store
        self._plans = plans
        self._clock = clock

    def require(self, account_id: str) -> None:
        """``AccountNotFoundError`` unless the account exists."""
        require_account(self._store, account_id)

    def balance(self, *, account_id: str) -> BalanceView:
        """Derived from the lots (spendable) and the cached balance row (held); each
        lot with what it has left and what open holds took from it."""
        require_account(self._store, account_id)
        now = self._clock.now()
        cached = self._store.balance(account_id)
        with_held = self._store.lots(account_id)
        lots = sorted((lot for lot, _ in with_held), key=dl.burn_key)
        held_of = {lot.id: tokens for lot, tokens in with_held}
        views = [
            LotView(
                lot_id=lot.id,
                source=lot.source,
                amount=lot.amount,
                remaining=lot.remaining,
                held=held_of[lot.id],
                expires_at=lot.expires_at,
                expired=lot.is_expired(now),
                starts_at=lot.starts_at,
                started=lot.has_started(now),
            )
            for lot in lots
        ]
        entitlement = self._plans.entitlement(account_id=account_id)
        return BalanceView(
            account_id=account_id,
            available=sum(lot.remaining for lot in lots if lot.is_spendable(now)),
            held=cached.held if cached else 0,
            unlimited=entitlement is not None,
            unlimited_until=entitlement.ends_at if entitlement else None,
            lots=views,
        )

    def statement(
        self, *, account_id: str, limit: int = 100, before: str | None = None
    ) -> list[StatementLine]:
        """The account's ledger transactions, newest first."""
        require_account(self._store, account_id)
        return self._store.statement(account_id, limit=max(1, min(limit, 1000)), before=before)

    def reconcile(self) -> ReconcileReport:
        """Recompute cached balances, lots and holds from postings; report any drift."""
        drifts = self._store.reconcile()
        totals = self._store.posting_sums()
        ok = not drifts and sum(totals.values()) == 0
        return ReconcileReport(ok, drifts, totals)
