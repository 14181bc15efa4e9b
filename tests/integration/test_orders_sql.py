"""Paid orders on every backend: each paid subscription order grants a period of its
own, once, whatever was granted around it (an operator's subscription, another
order, a crash between marking it paid and granting)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from comfygate import bootstrap
from comfygate.adapters.db.sql_payments import SqlOrderStore
from comfygate.config import Settings
from comfygate.services.identity_types import Principal, Role
from comfygate.services.payments import OrderState, PaymentNotice
from tests.fakes import FakeClock

MARCH = datetime(2026, 3, 10, 4, 0, tzinfo=UTC)  # 12:00 in Asia/Shanghai
APRIL = datetime(2026, 3, 31, 16, 0, tzinfo=UTC)  # April 1st, 00:00 in Shanghai


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(MARCH)


@pytest.fixture
def c(database_url: str, clock: FakeClock, tmp_path: Path) -> Iterator[bootstrap.Container]:
    built = bootstrap.build(Settings(database_url=database_url, data_dir=tmp_path), clock=clock)
    built.upgrade_database()
    yield built
    built.close()


def _buyer(c: bootstrap.Container) -> tuple[str, Principal]:
    account_id = c.ledger.open_account(name="buyer")
    return account_id, Principal(account_id, "user_b", Role.ADMIN, "key_b")


def _available(c: bootstrap.Container, account_id: str) -> int:
    return c.accounts.balance(account_id=account_id).available


def test_an_order_paid_while_a_period_runs_buys_the_next_one(
    c: bootstrap.Container, clock: FakeClock
) -> None:
    """An operator subscribed the account between the order and its payment: the
    order once granted nothing (it confirmed the period in force)."""
    account_id, buyer = _buyer(c)
    order = c.payments.create_order(actor=buyer, plan="monthly")
    c.plans.subscribe(account_id=account_id, plan="monthly")
    paid = c.payments.confirm(order_id=order.id, actor="operator")
    assert paid.grant is not None and paid.grant["tokens_granted"] == 1000
    assert paid.grant["period_end"] == datetime(2026, 4, 30, 16, tzinfo=UTC).isoformat()
    assert _available(c, account_id) == 1000  # April's is not spendable in March
    clock.current = APRIL
    assert _available(c, account_id) == 1000  # March's expired, April's began
    assert c.payments.confirm(order_id=order.id, actor="operator") == paid  # once
    assert c.accounts.reconcile().ok


def test_two_orders_paid_at_once_buy_a_period_each(
    c: bootstrap.Container, clock: FakeClock
) -> None:
    """Two pending orders (created at once): both paid once granted one period."""
    account_id, buyer = _buyer(c)
    first = c.payments.create_order(actor=buyer, plan="monthly")
    second = replace(first, id=first.id[:-1] + ("x" if first.id[-1] != "x" else "y"))
    c.payments._store.insert(second)  # as a concurrent create would have
    start = threading.Barrier(2)

    def pay(order_id: str) -> dict[str, object]:
        start.wait(10)
        grant = c.payments.confirm(order_id=order_id, actor="operator").grant
        assert grant is not None
        return dict(grant)

    with ThreadPoolExecutor(2) as pool:
        grants = list(pool.map(pay, [first.id, second.id]))
    assert sorted(g["period_end"] for g in grants) == [
        datetime(2026, 3, 31, 16, tzinfo=UTC).isoformat(),
        datetime(2026, 4, 30, 16, tzinfo=UTC).isoformat(),
    ]
    assert _available(c, account_id) == 1000
    clock.current = APRIL
    assert _available(c, account_id) == 1000
    assert c.accounts.reconcile().ok


def test_an_order_left_paid_without_its_grant_is_granted_once_by_the_chore(
    c: bootstrap.Container,
) -> None:
    """A crash between marking the order paid and granting: the order once waited
    for a confirm that nothing sent, and could be ordered (and paid) again."""
    account_id, buyer = _buyer(c)
    for plan in ("monthly", "topup-500", "vip"):
        order = c.payments.create_order(actor=buyer, plan=plan)
        claimed = replace(order, state=OrderState.PAID, paid_at=MARCH)
        assert c.payments._store.settle(claimed)  # and then the process died
    assert c.payments.grant_paid() == 3
    assert c.payments.grant_paid() == 0
    assert _available(c, account_id) == 1500
    assert c.plans.entitlement(account_id=account_id) is not None
    actions = [e.action for e in c.audit.entries(account_id=account_id)]
    assert actions.count("orders.confirm") == 3
    assert c.accounts.reconcile().ok


def test_a_vip_order_paid_while_vip_runs_extends_it(c: bootstrap.Container) -> None:
    """It once paid for the VIP period in force: the same end, 99 CNY later."""
    account_id, buyer = _buyer(c)
    order = c.payments.create_order(actor=buyer, plan="vip")
    c.plans.subscribe(account_id=account_id, plan="vip")
    current = c.plans.entitlement(account_id=account_id)
    assert current is not None
    c.payments.confirm(order_id=order.id, actor="operator")
    assert c.plans.paid_until(account_id=account_id, plan="vip") > current.ends_at


def test_a_confirm_and_the_grant_chore_at_once_grant_an_order_once(
    c: bootstrap.Container,
) -> None:
    """A paid order left without its grant, granted by a late confirm and the chore at
    the same moment, on separate connections."""
    account_id, buyer = _buyer(c)
    orders = [c.payments.create_order(actor=buyer, plan=p) for p in ("topup-500", "monthly")]
    for order in orders:
        assert c.payments._store.settle(replace(order, state=OrderState.PAID, paid_at=MARCH))
    start = threading.Barrier(2)

    def confirm_all(_: int) -> None:
        start.wait(10)
        for order in orders:
            c.payments.confirm(order_id=order.id, actor="operator")

    def chore(_: int) -> None:
        start.wait(10)
        c.payments.grant_paid()

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda f: f(0), [confirm_all, chore]))
    assert _available(c, account_id) == 1500
    confirms = [e for e in c.audit.entries(account_id=account_id) if e.action == "orders.confirm"]
    assert len(confirms) == 2
    assert c.accounts.reconcile().ok


def test_retries_of_an_order_at_once_make_one_order(c: bootstrap.Container) -> None:
    """Eight retries of one POST /v1/orders (one Idempotency-Key) at once: one order,
    and every retry answered with it. Keys are the account's: another account's same
    key is its own order; keys differing only in case are different keys."""
    account_id, buyer = _buyer(c)
    barrier = threading.Barrier(8)

    def place(_: int) -> str:
        barrier.wait()
        return c.payments.create_order(actor=buyer, plan="topup-500", idempotency_key="k-1").id

    with ThreadPoolExecutor(8) as pool:
        ids = set(pool.map(place, range(8)))
    placed = c.payments.orders(account_id=account_id, state=None, limit=10, before=None)
    assert len(ids) == 1 and [o.id for o in placed] == list(ids)
    other_account, other = _buyer(c)
    theirs = c.payments.create_order(actor=other, plan="topup-500", idempotency_key="k-1")
    upper = c.payments.create_order(actor=buyer, plan="topup-500", idempotency_key="K-1")
    assert len({*ids, theirs.id, upper.id}) == 3 and theirs.account_id == other_account


def test_a_notice_of_a_status_longer_than_its_column_is_recorded_once(
    c: bootstrap.Container,
) -> None:
    """A provider's own long status (``payment_intent.requires_action``) is taken, and
    recorded cut to the column, so the provider is answered and stops sending it."""
    notice = PaymentNotice("acme", "evt_long", "ord_x", "payment_intent.requires_action",
                           None, None, None)  # fmt: skip
    store = SqlOrderStore(c.engine)
    assert store.record_event(notice, MARCH) and not store.record_event(notice, MARCH)
