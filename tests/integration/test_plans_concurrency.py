"""Plans under concurrency, on every backend, on the real clock: subscribers of one
account choose their period one after the other, so a plan is granted once per period
however many subscribe (or confirm one paid order) at the same moment."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from comfygate import bootstrap
from comfygate.config import Settings
from comfygate.domain.errors import OrderStateError
from comfygate.services.identity_types import Principal, Role

THREADS = 8


@pytest.fixture
def container(database_url: str) -> Iterator[bootstrap.Container]:
    built = bootstrap.build(Settings(database_url=database_url))  # the system clock
    built.upgrade_database()
    yield built
    built.close()


def _at_once(call: Callable[[], Any], threads: int = THREADS) -> list[Any]:
    start = threading.Barrier(threads)

    def run(_: int) -> Any:
        start.wait()
        return call()

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(run, range(threads)))


@pytest.mark.parametrize("plan", ["yearly", "vip"])
def test_concurrent_first_subscriptions_make_one_period(
    container: bootstrap.Container, plan: str
) -> None:
    """Once, each subscriber began a run at its own "now": 7 yearly grants for 8 calls."""
    account = container.ledger.open_account(name="race")
    receipts = _at_once(lambda: container.plans.subscribe(account_id=account, plan=plan))
    assert len({(r.period_start, r.period_end) for r in receipts}) == 1
    expected = 0 if plan == "vip" else 10_000
    assert container.ledger_store.balance(account).available == expected  # type: ignore[union-attr]
    assert container.accounts.reconcile().ok


def test_one_paid_order_confirmed_twice_at_once_grants_once(
    container: bootstrap.Container,
) -> None:
    account = container.ledger.open_account(name="buyer")
    buyer = Principal(account, "usr_buyer", Role.ADMIN, "key_buyer")
    order = container.payments.create_order(actor=buyer, plan="yearly")
    confirmed = _at_once(
        lambda: container.payments.confirm(order_id=order.id, actor="operator"), threads=2
    )
    assert {o.state.value for o in confirmed} == {"paid"}
    assert container.ledger_store.balance(account).available == 10_000  # type: ignore[union-attr]
    assert container.accounts.reconcile().ok


def test_a_confirm_whose_grant_fails_leaves_the_order_paid_and_grants_on_the_retry(
    container: bootstrap.Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = container.ledger.open_account(name="flaky")
    buyer = Principal(account, "usr_flaky", Role.ADMIN, "key_flaky")
    order = container.payments.create_order(actor=buyer, plan="topup-500")
    real = container.plans.buy_topup

    def down(**_: Any) -> Any:
        raise RuntimeError("the ledger went away")

    monkeypatch.setattr(container.plans, "buy_topup", down)
    with pytest.raises(RuntimeError):
        container.payments.confirm(order_id=order.id, actor="operator")
    assert container.payments.order(order_id=order.id, actor="operator").state.value == "paid"
    with pytest.raises(OrderStateError):  # paid: not the customer's to cancel now
        container.payments.cancel(order_id=order.id, actor=buyer)
    monkeypatch.setattr(container.plans, "buy_topup", real)
    paid = container.payments.confirm(order_id=order.id, actor="operator")
    assert paid.state.value == "paid" and paid.grant is not None
    stored = container.payments.order(order_id=order.id, actor="operator")
    assert stored.grant == paid.grant
    assert container.ledger_store.balance(account).available == 500  # type: ignore[union-attr]


def test_a_plan_running_from_an_operator_subscription_cannot_be_ordered(
    container: bootstrap.Container,
) -> None:
    """Once such an order was paid, and its confirm granted nothing: the period ran."""
    account = container.ledger.open_account(name="subscribed")
    buyer = Principal(account, "usr_sub", Role.ADMIN, "key_sub")
    container.plans.subscribe(account_id=account, plan="monthly")  # the operator, by CLI
    with pytest.raises(OrderStateError, match="runs until"):
        container.payments.create_order(actor=buyer, plan="monthly")
    container.payments.create_order(actor=buyer, plan="topup-500")  # top-ups stack
