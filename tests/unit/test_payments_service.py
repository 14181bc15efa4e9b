"""Orders and payments with fakes: confirm grants once, webhooks are verified and idempotent."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest

from comfygate.adapters.payments import HmacWebhookProvider, sign
from comfygate.domain.errors import (
    IdempotencyConflictError,
    InvalidInputError,
    InvalidSignatureError,
    OrderNotFoundError,
    OrderStateError,
    PaymentMismatchError,
    PaymentProviderNotFoundError,
)
from comfygate.domain.plans import PlanCatalog, parse_catalog
from comfygate.services.audit import AuditLog
from comfygate.services.identity_types import Principal, Role
from comfygate.services.payments import Order, OrderState, PaymentNotice, PaymentService
from comfygate.services.plans import SubscriptionReceipt
from tests.fakes import FakeClock
from tests.unit.test_identity_service import FakeAuditStore

SECRET = "whsec_test"
CATALOG = {
    "timezone": "UTC",
    "plans": {
        "monthly": {"title": "M", "kind": "tokens", "tokens": 1000, "period": "calendar_month",
                    "price": "29.00 CNY"},
        "topup-500": {"title": "T", "kind": "topup", "tokens": 500, "valid_days": 365,
                      "price": "19.00 CNY"},
    },
}  # fmt: skip


class FakeOrderStore:
    def __init__(self) -> None:
        self.orders: dict[str, Order] = {}
        self.events: set[tuple[str, str]] = set()

    def insert(self, order: Order) -> bool:
        key = order.idempotency_key
        if key is not None and self.by_key(order.account_id, key) is not None:
            return False
        self.orders[order.id] = order
        return True

    def by_key(self, account_id: str, idempotency_key: str) -> Order | None:
        return next(
            (o for o in self.orders.values()
             if (o.account_id, o.idempotency_key) == (account_id, idempotency_key)),
            None,
        )  # fmt: skip

    def get(self, order_id: str) -> Order | None:
        return self.orders.get(order_id)

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
        found = [
            o
            for o in self.orders.values()
            if account_id in (None, o.account_id)
            and state in (None, o.state.value)
            and plan in (None, o.plan)
            and user_id in (None, o.user_id)
        ]
        return sorted(found, key=lambda o: o.id, reverse=True)[:limit]

    def settle(self, order: Order) -> bool:
        if self.orders[order.id].state is not OrderState.PENDING:
            return False
        self.orders[order.id] = order
        return True

    def record_grant(self, order: Order) -> bool:
        stored = self.orders[order.id]
        if stored.state is not OrderState.PAID or stored.grant is not None:
            return False
        self.orders[order.id] = order
        return True

    def paid_without_grant(self, limit: int, *, after: str | None = None) -> list[Order]:
        found = [
            o
            for o in self.orders.values()
            if o.state is OrderState.PAID and not o.grant and (after is None or o.id > after)
        ]
        return sorted(found, key=lambda o: o.id)[:limit]

    def record_event(self, notice: PaymentNotice, received_at: datetime) -> bool:
        key = (notice.provider, notice.event_id)
        seen = key in self.events
        self.events.add(key)
        return not seen


class FakePlans:
    """Records grants; idempotent like the real PlanService (top-ups per key)."""

    def __init__(self, clock: FakeClock) -> None:
        self.catalog: PlanCatalog = parse_catalog(CATALOG)
        self.clock = clock
        self.topups: dict[str, int] = {}
        self.subscribed: list[tuple[str, str]] = []
        self.ends: dict[tuple[str, str], datetime] = {}
        self.while_granting: Callable[[], None] = lambda: None

    def buy_topup(self, *, account_id: str, plan: str, idempotency_key: str) -> SubscriptionReceipt:
        self.while_granting()  # what another request does meanwhile
        self.topups.setdefault(idempotency_key, self.catalog.get(plan).tokens)
        now = self.clock.now()
        return SubscriptionReceipt(
            account_id, plan, "topup", now, now + timedelta(days=365), 500, "lot_1", False
        )

    def paid_until(self, *, account_id: str, plan: str) -> datetime | None:
        end = self.ends.get((account_id, plan))
        return end if end is not None and end > self.clock.now() else None

    def purchase(self, *, account_id: str, plan: str, order_id: str) -> SubscriptionReceipt:
        self.while_granting()
        self.subscribed.append((account_id, plan))
        now = self.clock.now()
        self.ends[(account_id, plan)] = now + timedelta(days=30)
        return SubscriptionReceipt(
            account_id, plan, "tokens", now, now + timedelta(days=30), 1000, "lot_2", False
        )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def parts(clock: FakeClock) -> tuple[PaymentService, FakeOrderStore, FakePlans, FakeAuditStore]:
    store, plans, audit = FakeOrderStore(), FakePlans(clock), FakeAuditStore()
    service = PaymentService(
        store=store,
        plans=plans,  # type: ignore[arg-type]
        audit=AuditLog(store=audit, clock=clock),
        clock=clock,
        providers={"acme": HmacWebhookProvider(name="acme", secret=SECRET)},
    )
    return service, store, plans, audit


USER = Principal("acct_a", "user_a", Role.USER, "key_a")
OTHER = Principal("acct_b", "user_b", Role.ADMIN, "key_b")
OPERATOR = Principal("acct_operator", "user_operator", Role.OPERATOR, "key_o")


def test_manual_order_is_confirmed_once(parts) -> None:  # type: ignore[no-untyped-def]
    service, _, plans, audit = parts
    order = service.create_order(actor=USER, plan="topup-500")
    assert (order.state, order.amount, order.currency) == (OrderState.PENDING, "19.00", "CNY")
    paid = service.confirm(order_id=order.id, actor=OPERATOR)
    again = service.confirm(order_id=order.id, actor=OPERATOR)
    assert paid.state is OrderState.PAID and again == paid
    assert plans.topups == {f"order:{order.id}": 500}
    assert [e.action for e in audit.entries_list] == ["orders.create", "orders.confirm"]


def test_another_accounts_or_another_users_orders_do_not_exist(parts) -> None:  # type: ignore[no-untyped-def]
    """A user once saw and canceled a colleague's pending order; admins see the
    account's."""
    service, *_ = parts
    colleague = Principal(USER.account_id, "user_c", Role.USER, "key_c")
    admin = Principal(USER.account_id, "user_admin", Role.ADMIN, "key_admin")
    order = service.create_order(actor=USER, plan="topup-500")
    for stranger in (OTHER, colleague):
        with pytest.raises(OrderNotFoundError):
            service.order(order_id=order.id, actor=stranger)
        with pytest.raises(OrderNotFoundError):
            service.cancel(order_id=order.id, actor=stranger)
    assert service.order(order_id=order.id, actor=USER) == order
    assert service.order(order_id=order.id, actor=admin) == order
    assert service.orders(account_id=USER.account_id, user_id="user_c") == []
    assert service.orders(account_id=USER.account_id) == [order]
    assert service.cancel(order_id=order.id, actor=admin).state is OrderState.CANCELED


def test_cancel_and_confirm_exclude_each_other(parts) -> None:  # type: ignore[no-untyped-def]
    service, *_ = parts
    first = service.create_order(actor=USER, plan="topup-500")
    service.cancel(order_id=first.id, actor=USER)
    with pytest.raises(OrderStateError):
        service.confirm(order_id=first.id, actor=OPERATOR)
    second = service.create_order(actor=USER, plan="topup-500")
    service.confirm(order_id=second.id, actor=OPERATOR)
    with pytest.raises(OrderStateError):
        service.cancel(order_id=second.id, actor=USER)


def test_a_running_paid_subscription_cannot_be_ordered_again(parts, clock) -> None:  # type: ignore[no-untyped-def]
    service, *_ = parts
    order = service.create_order(actor=USER, plan="monthly")
    service.confirm(order_id=order.id, actor=OPERATOR)
    with pytest.raises(OrderStateError):
        service.create_order(actor=USER, plan="monthly")
    service.create_order(actor=USER, plan="topup-500")  # top-ups stack
    clock.advance(days=31)
    pending = service.create_order(actor=USER, plan="monthly")
    # Two pending orders for one period: once both were paid, and the second took the
    # money for nothing.
    with pytest.raises(OrderStateError, match="pending already"):
        service.create_order(actor=USER, plan="monthly")
    service.cancel(order_id=pending.id, actor=USER)
    service.create_order(actor=USER, plan="monthly")


def test_a_pending_subscription_order_is_found_behind_any_number_of_top_ups(parts) -> None:  # type: ignore[no-untyped-def]
    """The check once read the newest 500 pending orders: 500 top-ups after it hid a
    pending monthly order, and a second one for the same period was accepted."""
    service, *_ = parts
    service.create_order(actor=USER, plan="monthly")
    for _ in range(500):
        service.create_order(actor=USER, plan="topup-500")
    with pytest.raises(OrderStateError, match="pending already"):
        service.create_order(actor=USER, plan="monthly")


def test_unknown_plan_and_provider(parts) -> None:  # type: ignore[no-untyped-def]
    service, *_ = parts
    with pytest.raises(PaymentProviderNotFoundError):
        service.create_order(actor=USER, plan="topup-500", provider="nobody")
    with pytest.raises(Exception, match="unknown plan"):
        service.create_order(actor=USER, plan="gold")


def _webhook(
    clock: FakeClock, body: dict[str, Any], secret: str = SECRET, skew_s: int = 0
) -> tuple[bytes, dict[str, str]]:
    raw = json.dumps(body).encode()
    stamp = int(clock.now().timestamp()) + skew_s
    return raw, {"Comfygate-Signature": sign(secret, raw, stamp)}


def test_signed_webhook_grants_once(parts, clock) -> None:  # type: ignore[no-untyped-def]
    service, store, plans, _ = parts
    order = service.create_order(actor=USER, plan="topup-500", provider="acme")
    event = {"id": "evt_1", "order_id": order.id, "status": "paid", "amount": "19.0",
             "currency": "CNY", "provider_ref": "ch_9"}  # fmt: skip
    body, headers = _webhook(clock, event)
    paid = service.handle_webhook(provider="acme", body=body, headers=headers)
    replay = service.handle_webhook(provider="acme", body=body, headers=headers)
    assert paid.state is OrderState.PAID and paid.provider_ref == "ch_9"
    assert replay.state is OrderState.PAID and len(plans.topups) == 1
    assert ("acme", "evt_1") in store.events


@pytest.mark.parametrize(
    ("secret", "skew_s", "headers_override"),
    [
        ("wrong-secret", 0, None),
        (SECRET, -3600, None),
        (SECRET, 0, {}),
        (SECRET, 0, {"Comfygate-Signature": "garbage"}),
        (SECRET, 0, {"Comfygate-Signature": "t=1,v1="}),
        # Once 500s: int() of a huge number, compare_digest() of non-ASCII text.
        (SECRET, 0, {"Comfygate-Signature": f"t={'9' * 400},v1=ab"}),
        (SECRET, 0, {"Comfygate-Signature": f"t={'9' * 5000},v1=ab"}),
        (SECRET, 0, {"Comfygate-Signature": "t=\u00b2,v1=ab"}),
        (SECRET, 0, {"Comfygate-Signature": "t=1,v1=\u00e9"}),
    ],
)
def test_forged_or_stale_webhooks_are_refused(
    parts, clock, secret, skew_s, headers_override
) -> None:  # type: ignore[no-untyped-def]
    service, store, plans, _ = parts
    order = service.create_order(actor=USER, plan="topup-500", provider="acme")
    body, headers = _webhook(
        clock, {"id": "e", "order_id": order.id, "status": "paid"}, secret, skew_s
    )
    with pytest.raises(InvalidSignatureError):
        service.handle_webhook(
            provider="acme",
            body=body,
            headers=headers_override if headers_override is not None else headers,
        )
    assert store.orders[order.id].state is OrderState.PENDING and not plans.topups


def test_tampered_body_fails_the_signature(parts, clock) -> None:  # type: ignore[no-untyped-def]
    service, _store, _, _ = parts
    order = service.create_order(actor=USER, plan="topup-500", provider="acme")
    body, headers = _webhook(
        clock, {"id": "e", "order_id": order.id, "status": "paid", "amount": "19.00"}
    )
    with pytest.raises(InvalidSignatureError):
        service.handle_webhook(
            provider="acme", body=body.replace(b"19.00", b"0.01"), headers=headers
        )


def test_webhook_amount_must_match_and_order_must_be_the_providers(parts, clock) -> None:  # type: ignore[no-untyped-def]
    service, _store, plans, _ = parts
    cheap = service.create_order(actor=USER, plan="topup-500", provider="acme")
    body, headers = _webhook(
        clock, {"id": "e1", "order_id": cheap.id, "status": "paid", "amount": "1.00"}
    )
    with pytest.raises(PaymentMismatchError):
        service.handle_webhook(provider="acme", body=body, headers=headers)
    manual = service.create_order(actor=USER, plan="topup-500")
    body, headers = _webhook(clock, {"id": "e2", "order_id": manual.id, "status": "paid"})
    with pytest.raises(OrderNotFoundError):
        service.handle_webhook(provider="acme", body=body, headers=headers)
    with pytest.raises(PaymentProviderNotFoundError):
        service.handle_webhook(provider="manual", body=body, headers=headers)
    assert not plans.topups


def test_a_failed_attempt_leaves_the_order_payable_and_a_cancel_ends_it(parts, clock) -> None:  # type: ignore[no-untyped-def]
    """A failed card attempt once canceled the order: the customer's next, successful
    attempt then met 409 and paid for nothing."""
    service, store, plans, _ = parts
    order = service.create_order(actor=USER, plan="topup-500", provider="acme")
    body, headers = _webhook(clock, {"id": "e1", "order_id": order.id, "status": "failed"})
    assert service.handle_webhook(provider="acme", body=body, headers=headers).state is (
        OrderState.PENDING
    )
    assert ("acme", "e1") in store.events
    paid = {"id": "e2", "order_id": order.id, "status": "paid", "amount": "19", "currency": "CNY"}
    body, headers = _webhook(clock, paid)
    assert service.handle_webhook(provider="acme", body=body, headers=headers).state is (
        OrderState.PAID
    )
    assert len(plans.topups) == 1
    other = service.create_order(actor=USER, plan="topup-500", provider="acme")
    body, headers = _webhook(clock, {"id": "e3", "order_id": other.id, "status": "canceled"})
    assert service.handle_webhook(provider="acme", body=body, headers=headers).state is (
        OrderState.CANCELED
    )


def test_notices_that_change_nothing_are_left_to_an_operator_in_the_audit_log(parts, clock) -> None:  # type: ignore[no-untyped-def]
    """A refund, a payment for an order the customer had canceled, a status we do not
    know: once answered 200 (or 409, never recorded) and seen by no one."""
    service, store, plans, audit = parts
    paid = service.create_order(actor=USER, plan="topup-500", provider="acme")
    service.confirm(order_id=paid.id, actor=OPERATOR)
    canceled = service.create_order(actor=USER, plan="topup-500", provider="acme")
    service.cancel(order_id=canceled.id, actor=USER)
    notices = [
        {"id": "r1", "order_id": paid.id, "status": "refunded", "amount": "19", "currency": "CNY"},
        {"id": "r1", "order_id": paid.id, "status": "refunded", "amount": "19", "currency": "CNY"},
        {"id": "p1", "order_id": canceled.id, "status": "paid", "amount": "19", "currency": "CNY"},
        {"id": "x1", "order_id": paid.id, "status": "disputed"},
    ]
    for notice in notices:
        body, headers = _webhook(clock, notice)
        service.handle_webhook(provider="acme", body=body, headers=headers)
    unapplied = [e for e in audit.entries_list if e.action == "orders.notice_unapplied"]
    assert [(e.target, e.details["status"], e.details["order_state"]) for e in unapplied] == [
        (paid.id, "refunded", "paid"),  # once, however often the provider sends it
        (canceled.id, "paid", "canceled"),
        (paid.id, "disputed", "paid"),
    ]
    assert store.orders[canceled.id].state is OrderState.CANCELED
    assert len(plans.topups) == 1


def test_a_paid_notice_must_say_what_was_paid(parts, clock) -> None:  # type: ignore[no-untyped-def]
    """One without an amount and currency once granted 2,000 tokens."""
    service, _store, plans, _ = parts
    order = service.create_order(actor=USER, plan="topup-500", provider="acme")
    for i, event in enumerate(({"status": "paid"}, {"status": "paid", "amount": "19"})):
        body, headers = _webhook(clock, {"id": f"e{i}", "order_id": order.id, **event})
        with pytest.raises(PaymentMismatchError):
            service.handle_webhook(provider="acme", body=body, headers=headers)
    assert not plans.topups


def test_webhook_body_must_be_a_notice(clock) -> None:  # type: ignore[no-untyped-def]
    provider = HmacWebhookProvider(name="acme", secret=SECRET)
    for raw in (b"[]", b"not json", json.dumps({"id": "e"}).encode()):
        stamp = int(clock.now().timestamp())
        with pytest.raises(InvalidInputError):
            provider.verify(
                body=raw, headers={"comfygate-signature": sign(SECRET, raw, stamp)}, now=clock.now()
            )


def test_secret_rotation_accepts_either_signature(clock) -> None:  # type: ignore[no-untyped-def]
    provider = HmacWebhookProvider(name="acme", secret=SECRET)
    raw = json.dumps({"id": "e", "order_id": "o", "status": "paid"}).encode()
    stamp = int(clock.now().timestamp())
    old = sign("old-secret", raw, stamp).partition("v1=")[2]
    header = f"{sign(SECRET, raw, stamp)},v1={old}"
    notice = provider.verify(body=raw, headers={"Comfygate-Signature": header}, now=clock.now())
    assert replace(notice, provider="x").order_id == "o"


def test_a_cancel_racing_a_confirm_never_leaves_tokens_on_a_canceled_order(parts) -> None:  # type: ignore[no-untyped-def]
    """Confirm granted, then tried pending -> paid: a cancel in between won, and the
    canceled order kept its tokens. The order is now claimed before the grant."""
    service, store, plans, _ = parts
    order = service.create_order(actor=USER, plan="topup-500")
    refused: list[Exception] = []

    def cancel_meanwhile() -> None:
        try:
            service.cancel(order_id=order.id, actor=USER)
        except OrderStateError as exc:
            refused.append(exc)

    plans.while_granting = cancel_meanwhile
    paid = service.confirm(order_id=order.id, actor=OPERATOR)
    assert paid.state is OrderState.PAID and paid.grant is not None
    assert len(refused) == 1 and len(plans.topups) == 1
    assert store.orders[order.id].grant == paid.grant


def test_a_grant_that_fails_leaves_the_order_paid_for_a_retry_or_the_chore(parts) -> None:  # type: ignore[no-untyped-def]
    """The claim was once given back (pending again): a concurrent confirm's grant
    could then be kept by an order the customer canceled."""
    service, store, plans, _ = parts
    first = service.create_order(actor=USER, plan="topup-500")
    second = service.create_order(actor=USER, plan="topup-500")

    def fail() -> None:
        raise RuntimeError("the ledger went away")

    plans.while_granting = fail
    for order in (first, second):
        with pytest.raises(RuntimeError):
            service.confirm(order_id=order.id, actor=OPERATOR)
        assert store.orders[order.id].state is OrderState.PAID and not plans.topups
        with pytest.raises(OrderStateError):
            service.cancel(order_id=order.id, actor=USER)
    assert service.grant_paid() == 0  # still failing: each is tried, none holds up another
    plans.while_granting = lambda: None
    assert service.confirm(order_id=first.id, actor=OPERATOR).grant is not None
    assert service.grant_paid(batch=1) == 1 and service.grant_paid() == 0
    assert store.orders[second.id].grant is not None
    assert sorted(plans.topups) == sorted(f"order:{o.id}" for o in (first, second))


def test_the_grant_chore_goes_past_orders_that_keep_failing(parts) -> None:  # type: ignore[no-untyped-def]
    """It once read the oldest few only: orders that always fail hid every later one."""
    service, store, plans, _ = parts
    orders = [service.create_order(actor=USER, plan="topup-500") for _ in range(3)]
    for order in orders:
        assert store.settle(replace(order, state=OrderState.PAID))  # and then a crash
    broken = {f"order:{o.id}" for o in orders[:2]}
    buy = plans.buy_topup

    def plan_gone(*, account_id: str, plan: str, idempotency_key: str) -> Any:
        if idempotency_key in broken:
            raise InvalidInputError("unknown plan")
        return buy(account_id=account_id, plan=plan, idempotency_key=idempotency_key)

    plans.buy_topup = plan_gone
    assert service.grant_paid(batch=1) == 1
    assert list(plans.topups) == [f"order:{orders[2].id}"]


def test_a_refused_paid_notice_is_audited_once(parts, clock) -> None:  # type: ignore[no-untyped-def]
    """A paid notice refused (the wrong amount; the order canceled a moment before)
    was recorded as seen first, so neither it nor its retries reached the audit log:
    money taken, and nobody told."""
    service, store, plans, audit = parts
    wrong = service.create_order(actor=USER, plan="topup-500", provider="acme")
    raced = service.create_order(actor=USER, plan="topup-500", provider="acme")
    settle = store.settle

    def canceled_first(order: Order) -> bool:
        if order.id == raced.id and order.state is OrderState.PAID:
            settle(replace(order, state=OrderState.CANCELED))  # the customer, just then
        return settle(order)

    store.settle = canceled_first
    notices = [
        (
            {"id": "w1", "order_id": wrong.id, "amount": "1", "currency": "CNY"},
            PaymentMismatchError,
        ),
        ({"id": "r1", "order_id": raced.id, "amount": "19", "currency": "CNY"}, OrderStateError),
    ]
    for notice, refusal in notices:
        body, headers = _webhook(clock, {**notice, "status": "paid"})
        with pytest.raises(refusal):
            service.handle_webhook(provider="acme", body=body, headers=headers)
        with contextlib.suppress(refusal):  # the provider's retry
            service.handle_webhook(provider="acme", body=body, headers=headers)
    unapplied = [e for e in audit.entries_list if e.action == "orders.notice_unapplied"]
    assert [(e.target, e.details["why"], e.details["order_state"]) for e in unapplied] == [
        (wrong.id, "payment_mismatch", "pending"),
        (raced.id, "invalid_order_state", "canceled"),
    ]
    assert not plans.topups


def test_a_second_payment_of_a_paid_order_is_left_to_an_operator(parts, clock) -> None:  # type: ignore[no-untyped-def]
    """A distinct paid notice (another event, another payment reference) for an order
    paid already was counted as applied, with nothing audited: a customer charged
    twice went unseen. The same payment told again (another event, the same
    reference) is not a second payment."""
    service, _, plans, audit = parts
    order = service.create_order(actor=USER, plan="topup-500", provider="acme")
    paid = {"order_id": order.id, "status": "paid", "amount": "19", "currency": "CNY"}
    for event in (
        {"id": "evt_1", "provider_ref": "pay_1", **paid},
        {"id": "evt_1b", "provider_ref": "pay_1", **paid},  # the same payment, told again
        {"id": "evt_2", "provider_ref": "pay_2", **paid},
        {"id": "evt_2", "provider_ref": "pay_2", **paid},  # redelivered
    ):
        body, headers = _webhook(clock, event)
        assert (
            service.handle_webhook(provider="acme", body=body, headers=headers).provider_ref
            == "pay_1"
        )
    unapplied = [e for e in audit.entries_list if e.action == "orders.notice_unapplied"]
    assert [
        (e.details["event_id"], e.details["why"], e.details["provider_ref"]) for e in unapplied
    ] == [("evt_2", "already_paid", "pay_2")]
    assert len(plans.topups) == 1


@pytest.mark.parametrize(
    ("field", "length"), [("id", 201), ("provider_ref", 201), ("order_id", 41), ("currency", 9)]
)
def test_a_notice_whose_fields_the_rows_cannot_hold_is_refused_whole(
    clock, field: str, length: int
) -> None:  # type: ignore[no-untyped-def]
    """A long event id was granted, then failed to record (a 500 the provider retried
    for ever); a long payment reference failed the claim and left a paid order pending.
    Such a notice is now refused before anything is applied."""
    provider = HmacWebhookProvider(name="acme", secret=SECRET)
    notice = {"id": "e", "order_id": "o", "status": "paid", "currency": "CNY", field: "x" * length}
    raw = json.dumps(notice).encode()
    stamp = int(clock.now().timestamp())
    with pytest.raises(InvalidInputError, match=f"{field} "):
        provider.verify(
            body=raw, headers={"comfygate-signature": sign(SECRET, raw, stamp)}, now=clock.now()
        )


def test_the_notice_limits_are_the_columns_lengths() -> None:
    from comfygate.adapters.db.tables_payments import orders, payment_events
    from comfygate.adapters.payments import NOTICE_FIELD_LENGTHS

    columns = {
        "id": payment_events.c.event_id, "order_id": payment_events.c.order_id,
        "amount": orders.c.amount,
        "currency": orders.c.currency, "provider_ref": orders.c.provider_ref,
    }  # fmt: skip
    assert {name: c.type.length for name, c in columns.items()} == NOTICE_FIELD_LENGTHS  # type: ignore[attr-defined]


def test_an_order_retried_with_its_key_is_the_first_order(parts) -> None:  # type: ignore[no-untyped-def]
    """A POST /v1/orders retried after a lost answer made a second order (and, for a
    subscription, refused the retry: "pending already")."""
    service, store, _, audit = parts
    first = service.create_order(actor=USER, plan="monthly", idempotency_key="buy-1")
    again = service.create_order(actor=USER, plan="monthly", idempotency_key="buy-1")
    assert again == first and len(store.orders) == 1
    service.confirm(order_id=first.id, actor=OPERATOR)
    paid = service.create_order(actor=USER, plan="monthly", idempotency_key="buy-1")
    assert (paid.id, paid.state) == (first.id, OrderState.PAID)  # as it is now
    with pytest.raises(IdempotencyConflictError, match=first.id):
        service.create_order(actor=USER, plan="topup-500", idempotency_key="buy-1")
    other = service.create_order(actor=USER, plan="topup-500", idempotency_key="buy-2")
    assert other.id != first.id and len(store.orders) == 2
    creates = [e for e in audit.entries_list if e.action == "orders.create"]
    assert [e.target for e in creates] == [first.id, other.id]


def test_a_key_found_taken_at_insert_answers_the_order_that_took_it(parts) -> None:  # type: ignore[no-untyped-def]
    """Two retries at once: both miss the key, one inserts, the other finds it taken."""
    service, store, _, _ = parts
    winner = service.create_order(actor=USER, plan="topup-500", idempotency_key="k")
    missed = store.by_key
    store.by_key = lambda account_id, key: None  # the first look, before the insert
    calls = []

    def insert(order: Order) -> bool:
        calls.append(order.id)
        store.by_key = missed
        return False

    store.insert = insert
    assert service.create_order(actor=USER, plan="topup-500", idempotency_key="k") == winner
    assert len(calls) == 1


@pytest.mark.parametrize(
    ("first_ref", "second_ref", "why"),
    [
        ("pay_1", None, "already_paid_unverified"),  # once "already_paid": a false alarm
        (None, "pay_2", "already_paid_unverified"),  # once nothing: a double charge missed
        (None, None, "already_paid_unverified"),
        ("pay_1", "pay_1", None),
    ],
)
def test_a_paid_order_told_paid_again_without_references_to_compare_is_flagged(
    parts, clock, first_ref: str | None, second_ref: str | None, why: str | None
) -> None:  # type: ignore[no-untyped-def]
    service, _, plans, audit = parts
    order = service.create_order(actor=USER, plan="topup-500", provider="acme")
    paid = {"order_id": order.id, "status": "paid", "amount": "19", "currency": "CNY"}
    for event_id, ref in (("evt_1", first_ref), ("evt_2", second_ref)):
        body, headers = _webhook(clock, {"id": event_id, "provider_ref": ref, **paid})
        service.handle_webhook(provider="acme", body=body, headers=headers)
    unapplied = [
        e.details["why"] for e in audit.entries_list if e.action == "orders.notice_unapplied"
    ]
    assert unapplied == ([why] if why else []) and len(plans.topups) == 1


def test_a_notice_that_lost_the_race_to_pay_an_order_is_a_second_payment(parts, clock) -> None:  # type: ignore[no-untyped-def]
    """Two notices for a pending order at once: both read it pending, one claims it.
    The other, with another reference, paid it a second time."""
    service, store, _, audit = parts
    order = service.create_order(actor=USER, plan="topup-500", provider="acme")
    paid = {"order_id": order.id, "status": "paid", "amount": "19", "currency": "CNY"}
    stale = store.get(order.id)
    body, headers = _webhook(clock, {"id": "evt_1", "provider_ref": "pay_1", **paid})
    service.handle_webhook(provider="acme", body=body, headers=headers)
    read, first_read = store.get, True

    def get_once_stale(order_id: str) -> Order | None:
        nonlocal first_read
        if first_read and order_id == order.id:
            first_read = False
            return stale  # as it was when this notice was read: pending
        return read(order_id)

    store.get = get_once_stale
    body, headers = _webhook(clock, {"id": "evt_2", "provider_ref": "pay_2", **paid})
    service.handle_webhook(provider="acme", body=body, headers=headers)
    unapplied = [e.details for e in audit.entries_list if e.action == "orders.notice_unapplied"]
    assert [(d["event_id"], d["why"]) for d in unapplied] == [("evt_2", "already_paid")]


def test_another_users_key_is_a_conflict_not_their_order(parts) -> None:  # type: ignore[no-untyped-def]
    """A second user of the account with the same key once got the first user's order
    (which it could not then read), and no order of its own. An admin sees it."""
    service, store, _, _ = parts
    first = service.create_order(actor=USER, plan="topup-500", idempotency_key="checkout-1")
    bob = Principal("acct_a", "user_b", Role.USER, "key_b")
    with pytest.raises(IdempotencyConflictError, match="another user") as refused:
        service.create_order(actor=bob, plan="topup-500", idempotency_key="checkout-1")
    assert first.id not in str(refused.value)
    admin = Principal("acct_a", "user_admin", Role.ADMIN, "key_admin")
    assert (
        service.create_order(actor=admin, plan="topup-500", idempotency_key="checkout-1") == first
    )
    assert len(store.orders) == 1
