"""Orders and payments: a user orders a plan, a payment provider (or an operator, for
the ``manual`` provider) says it is paid, and the plan is granted exactly once.

Granting is idempotent by construction: a top-up is granted with the order id as its
idempotency key; a subscription plan through ``PlanService.purchase``, which grants
the order a period of its own (after any still to run) once. The order is marked paid
first, then granted: a crash in between leaves a paid order without its grant, which
the next confirmation, or the ``grant_paid`` chore, grants. A paid order is never
canceled nor made pending again. A provider tells us through a signed webhook
(``PaymentProvider.verify``); the ``manual`` provider has none: an operator confirms.
A notice that changes nothing here (a refund, a payment for an order the customer
canceled, a second payment of a paid order, a status we do not know) is answered, and
left to an operator in the audit log.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any, Protocol

from comfygate.domain.errors import (
    IdempotencyConflictError,
    InvalidInputError,
    OrderNotFoundError,
    OrderStateError,
    PaymentMismatchError,
    PaymentProviderNotFoundError,
)
from comfygate.domain.ids import new_id
from comfygate.services.audit import Actor, AuditLog
from comfygate.services.clock import Clock
from comfygate.services.identity_types import Principal, Role
from comfygate.services.plans import PlanService

MANUAL = "manual"

log = logging.getLogger(__name__)


class OrderState(StrEnum):
    PENDING = "pending"
    PAID = "paid"
    CANCELED = "canceled"


@dataclass(frozen=True, slots=True)
class Order:
    id: str
    account_id: str
    user_id: str
    plan: str
    provider: str
    state: OrderState
    amount: str
    """The price as a decimal string (``"29.00"``); informational, tokens are granted."""
    currency: str
    created_at: datetime
    paid_at: datetime | None = None
    provider_ref: str | None = None
    grant: Mapping[str, Any] | None = None
    """What confirming granted: plan kind, tokens, lot, period end."""
    idempotency_key: str | None = None
    """The key it was placed with: the account's retries with it find this order."""


@dataclass(frozen=True, slots=True)
class PaymentNotice:
    """A verified message from a provider about one order."""

    provider: str
    event_id: str
    order_id: str
    status: str
    """``paid``, ``failed`` or ``canceled``."""
    amount: str | None
    currency: str | None
    provider_ref: str | None


class PaymentProvider(Protocol):
    name: str

    def verify(self, *, body: bytes, headers: Mapping[str, str], now: datetime) -> PaymentNotice:
        """Check the signature and parse the body; ``InvalidSignatureError`` if forged."""
        ...


class OrderStore(Protocol):
    def insert(self, order: Order) -> bool:
        """Store a new order; False (nothing stored) if its account has an order with
        its idempotency key already."""
        ...

    def by_key(self, account_id: str, idempotency_key: str) -> Order | None: ...

    def get(self, order_id: str) -> Order | None: ...

    def list(
        self,
        *,
        account_id: str | None,
        state: str | None,
        limit: int,
        before: str | None,
        plan: str | None = None,
        user_id: str | None = None,
    ) -> list[Order]:
        """Newest first."""
        ...

    def settle(self, order: Order) -> bool:
        """Move a pending order to ``order.state`` (with its fields); False if not pending."""
        ...

    def record_grant(self, order: Order) -> bool:
        """Store a paid order's grant; False if it has one already."""
        ...

    def paid_without_grant(self, limit: int, *, after: str | None = None) -> Sequence[Order]:
        """Paid orders whose grant is not stored yet, oldest first (after ``after``)."""
        ...

    def record_event(self, notice: PaymentNotice, received_at: datetime) -> bool:
        """Remember a provider event; False if its (provider, event_id) was seen."""
        ...


def _second_payment(paid_before: bool, paid_as: str | None, told: str | None) -> str | None:
    """Why a paid notice for an order now paid is not the payment that paid it, if it
    is not: another payment reference than the one that paid it (a notice that lost a
    race to pay it too), or a notice for an order paid already where either reference
    is missing, so no one can tell (an operator's to check)."""
    if paid_as is not None and told is not None:
        return "already_paid" if paid_as != told else None
    return "already_paid_unverified" if paid_before else None


def _replayed(actor: Principal, earlier: Order, plan: str, provider: str) -> Order:
    """The order a retry finds, if it asked for the same plan from the same provider,
    and its caller may see it (keys are the account's; a user key sees its own orders
    only, as with jobs)."""
    if not _sees(actor, earlier):
        raise IdempotencyConflictError(
            "this Idempotency-Key was used by another user of the account"
        )
    if (earlier.plan, earlier.provider) != (plan, provider):
        raise IdempotencyConflictError(
            f"Idempotency-Key already used for order {earlier.id} "
            f"({earlier.plan} by {earlier.provider})",
            order_id=earlier.id,
        )
    return earlier


def _sees(principal: Principal, order: Order) -> bool:
    """Operators see every order, admins their account's, users their own."""
    if principal.role is Role.USER:
        return order.user_id == principal.user_id and order.account_id == principal.account_id
    return principal.can_see_account(order.account_id)


def split_price(price: str) -> tuple[str, str]:
    """``"29.00 CNY"`` -> ``("29.00", "CNY")``."""
    amount, _, currency = price.strip().partition(" ")
    try:
        Decimal(amount)
    except InvalidOperation:
        raise InvalidInputError(f"plan price {price!r} is not 'AMOUNT CURRENCY'") from None
    return amount, currency.strip()


class PaymentService:
    """Creates orders and turns confirmed payments into plan grants."""

    def __init__(
        self,
        *,
        store: OrderStore,
        plans: PlanService,
        audit: AuditLog,
        clock: Clock,
        providers: Mapping[str, PaymentProvider],
    ) -> None:
        self._store = store
        self._plans = plans
        self._audit = audit
        self._clock = clock
        self._providers = dict(providers)

    @property
    def provider_names(self) -> list[str]:
        return [MANUAL, *sorted(self._providers)]

    def create_order(
        self,
        *,
        actor: Principal,
        plan: str,
        provider: str = MANUAL,
        idempotency_key: str | None = None,
    ) -> Order:
        """A pending order for ``plan`` by the caller's account; refused while a paid
        period of the same subscription plan is still running.

        With ``idempotency_key``, a retry answers the order first placed with it (in
        whatever state it is now), and the same key for another plan or provider is
        ``IdempotencyConflictError``.
        """
        account_id, user_id = actor.account_id, actor.user_id
        if idempotency_key is not None:
            earlier = self._store.by_key(account_id, idempotency_key)
            if earlier is not None:
                return _replayed(actor, earlier, plan, provider)
        if provider != MANUAL and provider not in self._providers:
            raise PaymentProviderNotFoundError(f"no payment provider {provider!r}")
        spec = self._plans.catalog.get(plan)
        now = self._clock.now()
        if spec.kind != "topup":
            self._check_subscription_orderable(account_id, plan)
        amount, currency = split_price(spec.price)
        order = Order(
            new_id("ord"),
            account_id,
            user_id,
            plan,
            provider,
            OrderState.PENDING,
            amount,
            currency,
            now,
            idempotency_key=idempotency_key,
        )
        if not self._store.insert(order):  # a concurrent retry with the key placed it
            assert idempotency_key is not None
            earlier = self._store.by_key(account_id, idempotency_key)
            assert earlier is not None
            return _replayed(actor, earlier, plan, provider)
        self._audit.record(
            actor=actor,
            action="orders.create",
            target=order.id,
            account_id=account_id,
            details={"plan": plan, "provider": provider},
        )
        return order

    def order(self, *, order_id: str, actor: Actor) -> Order:
        """One order, if the actor may see it."""
        found = self._store.get(order_id)
        if found is None or (isinstance(actor, Principal) and not _sees(actor, found)):
            raise OrderNotFoundError(f"no order {order_id}", order_id=order_id)
        return found

    def orders(
        self,
        *,
        account_id: str | None,
        state: str | None = None,
        limit: int = 50,
        before: str | None = None,
        user_id: str | None = None,
    ) -> list[Order]:
        """Orders of one account (None: every account), or of one of its users, newest
        first."""
        if state is not None and state not in set(OrderState):
            raise InvalidInputError(f"unknown order state {state!r}", state=state)
        return self._store.list(
            account_id=account_id,
            state=state,
            limit=max(1, min(limit, 500)),
            before=before,
            user_id=user_id,
        )

    def _check_subscription_orderable(self, account_id: str, plan: str) -> None:
        """A subscription order while a period of the plan is granted (by an order or
        an operator), or while another order for it is pending, would be paid and
        grant nothing."""
        until = self._plans.paid_until(account_id=account_id, plan=plan)
        if until is not None:
            raise OrderStateError(
                f"plan {plan} runs until {until.isoformat()}; order it again after that",
                plan=plan,
                paid_until=until.isoformat(),
            )
        pending = self._store.list(
            account_id=account_id, state="pending", limit=1, before=None, plan=plan
        )
        if pending:
            raise OrderStateError(
                f"an order for plan {plan} is pending already: pay or cancel it first", plan=plan
            )

    def confirm(self, *, order_id: str, actor: Actor, provider_ref: str | None = None) -> Order:
        """Mark the order paid, then grant its plan; confirming again changes nothing.

        The order is claimed (pending to paid) before anything is granted, so a cancel
        racing the confirm either wins before the grant or is refused after the claim.
        A confirm that finds the order paid but not yet granted (a concurrent one, or
        one whose grant failed or died) grants it: grants are idempotent per order. A
        paid order stays paid, granted or not: it was once given back to pending when
        its grant failed, and could then be canceled with the grant made meanwhile.
        """
        order = self.order(order_id=order_id, actor=actor)
        if order.state is OrderState.PENDING:
            claim = replace(
                order, state=OrderState.PAID, paid_at=self._clock.now(), provider_ref=provider_ref
            )
            claimed = self._store.settle(claim)
            order = claim if claimed else self.order(order_id=order_id, actor=actor)
        if order.state is OrderState.CANCELED:
            raise OrderStateError(f"order {order_id} is canceled", state=order.state.value)
        if order.grant is not None:
            self._audit_grant(order, actor)  # once: in case a failure lost the first
            return order
        return self._record_grant(order, actor)

    def grant_paid(self, *, batch: int = 100, most: int = 1000) -> int:
        """Grant the paid orders whose grant is not stored (a crash, or a failure, after
        they were marked paid), up to ``most`` a run; how many. A housekeeping chore."""
        granted, seen, after = 0, 0, None
        while seen < most and (orders := self._store.paid_without_grant(batch, after=after)):
            for order in orders:
                try:
                    self._record_grant(order, "system:orders")
                except Exception:  # one order's failure (a plan gone, say) holds up none
                    log.exception("order %s: paid, and its grant failed again", order.id)
                    continue
                granted += 1
            seen, after = seen + len(orders), orders[-1].id
        return granted

    def _record_grant(self, order: Order, actor: Actor) -> Order:
        order_id = order.id
        grant = self._grant(order)
        paid = replace(order, grant=grant)
        if not self._store.record_grant(paid):
            return self.order(order_id=order_id, actor=actor)  # a concurrent confirm did
        self._audit_grant(paid, actor)
        return paid

    def _audit_grant(self, order: Order, actor: Actor) -> None:
        """The order's grant's entry, written once per order (a confirm that finds the
        order granted writes it if a failure lost it)."""
        assert order.grant is not None
        self._audit.record(
            actor=actor,
            action="orders.confirm",
            target=order.id,
            account_id=order.account_id,
            details={"plan": order.plan, **order.grant},
            once_for=order.id,
        )

    def cancel(self, *, order_id: str, actor: Actor, reason: str = "") -> Order:
        """Cancel a pending order (a paid one cannot be canceled here)."""
        order = self.order(order_id=order_id, actor=actor)
        if order.state is OrderState.CANCELED:
            return order
        canceled = replace(order, state=OrderState.CANCELED)
        if order.state is OrderState.PAID or not self._store.settle(canceled):
            raise OrderStateError(f"order {order_id} is paid", state=OrderState.PAID.value)
        self._audit.record(
            actor=actor,
            action="orders.cancel",
            target=order_id,
            account_id=order.account_id,
            details={"reason": reason},
        )
        return canceled

    def handle_webhook(self, *, provider: str, body: bytes, headers: Mapping[str, str]) -> Order:
        """Verify a provider's signed notice and apply it (idempotent per event)."""
        verifier = self._providers.get(provider)
        if verifier is None:
            raise PaymentProviderNotFoundError(f"no payment provider {provider!r} with a webhook")
        notice = verifier.verify(body=body, headers=headers, now=self._clock.now())
        actor = f"provider:{provider}"
        order = self._store.get(notice.order_id)
        if order is None or order.provider != provider:
            raise OrderNotFoundError(f"no order {notice.order_id} for {provider}")
        applied, why = True, "nothing_to_apply"
        if notice.status == "paid" and order.state is not OrderState.CANCELED:
            paid_before = order.state is OrderState.PAID
            try:
                self._check_amount(order, notice)
                order = self.confirm(
                    order_id=order.id, actor=actor, provider_ref=notice.provider_ref
                )
            except (PaymentMismatchError, OrderStateError) as refused:  # (canceled meanwhile)
                self._unapplied(order.id, notice, actor, why=refused.code)
                raise
            second = _second_payment(paid_before, order.provider_ref, notice.provider_ref)
            if second is not None:
                applied, why = False, second
        elif notice.status == "canceled" and order.state is OrderState.PENDING:
            order = self.cancel(order_id=order.id, actor=actor, reason=notice.status)
        elif notice.status == "failed" and order.state is OrderState.PENDING:
            pass  # a failed attempt: the customer may pay it yet
        else:  # it changes nothing here: an operator's to act on (a refund, say)
            applied = False
        if not applied:
            self._unapplied(order.id, notice, actor, why=why)
        else:
            self._store.record_event(notice, self._clock.now())
        return order

    def _unapplied(self, order_id: str, notice: PaymentNotice, actor: str, *, why: str) -> None:
        """Record a notice that changed nothing, and audit it the first time (a provider
        sends one again until it is answered 2xx), for an operator to act on."""
        if not self._store.record_event(notice, self._clock.now()):
            return
        order = self._store.get(order_id)
        assert order is not None
        self._audit.record(
            actor=actor,
            action="orders.notice_unapplied",
            target=order.id,
            account_id=order.account_id,
            details={
                "event_id": notice.event_id,
                "status": notice.status,
                "why": why,
                "order_state": order.state.value,
                "amount": notice.amount,
                "currency": notice.currency,
                "provider_ref": notice.provider_ref,
            },
        )

    @staticmethod
    def _check_amount(order: Order, notice: PaymentNotice) -> None:
        try:
            # A paid notice must say what was paid: one that does not cannot be matched.
            same_amount = notice.amount is not None and Decimal(notice.amount) == Decimal(
                order.amount
            )
        except InvalidOperation:
            same_amount = False
        same_currency = notice.currency == order.currency
        if not (same_amount and same_currency):
            raise PaymentMismatchError(
                f"paid {notice.amount} {notice.currency}, order is {order.amount} {order.currency}",
                order_id=order.id,
            )

    def _grant(self, order: Order) -> dict[str, Any]:
        spec = self._plans.catalog.get(order.plan)
        if spec.kind == "topup":
            receipt = self._plans.buy_topup(
                account_id=order.account_id, plan=order.plan, idempotency_key=f"order:{order.id}"
            )
        else:
            receipt = self._plans.purchase(
                account_id=order.account_id, plan=order.plan, order_id=order.id
            )
        return {
            "kind": receipt.kind,
            "tokens_granted": receipt.tokens_granted,
            "lot_id": receipt.lot_id,
            "unlimited": receipt.unlimited,
            "period_end": receipt.period_end.isoformat(),
        }
