"""Identity, audit and payments on every backend: the stores behind the gateway."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from comfygate import bootstrap
from comfygate.config import Settings
from comfygate.domain.errors import AuthenticationError, OrderStateError
from comfygate.services.identity import OPERATOR_ACCOUNT_ID
from comfygate.services.identity_types import Role
from comfygate.services.payments import OrderState
from tests.fakes import FakeClock


def test_accounts_users_keys_round_trip(container: bootstrap.Container) -> None:
    identity = container.identity
    made = identity.create_account(name="Acme 照相馆", actor="cli")
    user = identity.create_user(account_id=made.account_id, name="ann", role=Role.USER, actor="cli")
    key = identity.create_key(account_id=made.account_id, user_id=user.id, actor="cli", label="app")
    assert identity.account(account_id=made.account_id, actor="cli").name == "Acme 照相馆"
    assert {u.id for u in identity.users(account_id=made.account_id, actor="cli")} == {
        made.user.id,
        user.id,
    }
    keys = identity.keys(account_id=made.account_id, actor="cli")
    assert {k.id for k in keys} == {made.key.key_id, key.key_id}
    assert all(k.active for k in keys)
    principal = identity.authenticate(key.api_key)
    assert (principal.account_id, principal.user_id, principal.role) == (
        made.account_id,
        user.id,
        Role.USER,
    )
    revoked = identity.revoke_key(key_id=key.key_id, actor="cli")
    assert revoked.revoked_at is not None
    assert identity.revoke_key(key_id=key.key_id, actor="cli").revoked_at == revoked.revoked_at
    with pytest.raises(AuthenticationError):
        identity.authenticate(key.api_key)


def test_accounts_page_by_id(container: bootstrap.Container) -> None:
    ids = [
        container.identity.create_account(name=f"a{i}", actor="cli").account_id for i in range(5)
    ]
    first = container.identity.accounts(actor="cli", limit=3)
    rest = container.identity.accounts(actor="cli", limit=10, after=first[-1].id)
    assert [a.id for a in first + rest] == sorted(ids)


def test_operator_bootstrap_happens_once_even_when_racing(database_url: str) -> None:
    containers = [bootstrap.build(Settings(database_url=database_url)) for _ in range(4)]
    containers[0].upgrade_database()
    try:
        with ThreadPoolExecutor(4) as pool:
            issued = list(pool.map(lambda c: c.identity.bootstrap_operator(), containers))
        winners = [i for i in issued if i is not None]
        assert len(winners) == 1
        assert winners[0].account_id == OPERATOR_ACCOUNT_ID
        assert containers[1].identity.authenticate(winners[0].api_key).is_operator
        assert containers[2].identity.bootstrap_operator() is None
    finally:
        for c in containers:
            c.close()


def test_audit_entries_page_newest_first_per_account(
    container: bootstrap.Container, clock: FakeClock
) -> None:
    a = container.identity.create_account(name="a", actor="cli")
    b = container.identity.create_account(name="b", actor="cli")
    for i in range(3):
        clock.advance(seconds=1)
        container.audit.record(
            actor="cli", action="test.step", target=str(i), account_id=a.account_id,
            details={"i": i, "note": "免费"},
        )  # fmt: skip
    entries = container.audit.entries(account_id=a.account_id, limit=2)
    assert [e.target for e in entries] == ["2", "1"]
    assert entries[0].details == {"i": 2, "note": "免费"}
    older = container.audit.entries(account_id=a.account_id, limit=10, before=entries[-1].id)
    assert [e.target for e in older] == ["0", a.account_id]  # then "accounts.create"
    assert older[-1].action == "accounts.create"
    assert all(
        e.account_id == b.account_id for e in container.audit.entries(account_id=b.account_id)
    )


def test_manual_order_grants_once_through_the_real_ledger(container: bootstrap.Container) -> None:
    made = container.identity.create_account(name="buyer", actor="cli")
    buyer = container.identity.authenticate(made.key.api_key)
    operator_key = container.identity.bootstrap_operator()
    assert operator_key is not None
    operator = container.identity.authenticate(operator_key.api_key)
    order = container.payments.create_order(actor=buyer, plan="topup-500")
    with ThreadPoolExecutor(4) as pool:
        results = list(
            pool.map(
                lambda _: container.payments.confirm(order_id=order.id, actor=operator), range(4)
            )
        )
    assert {r.state for r in results} == {OrderState.PAID}
    assert container.accounts.balance(account_id=made.account_id).available == 500
    monthly = container.payments.create_order(actor=buyer, plan="monthly")
    container.payments.confirm(order_id=monthly.id, actor=operator)
    assert container.accounts.balance(account_id=made.account_id).available == 1500
    with pytest.raises(OrderStateError):
        container.payments.create_order(actor=buyer, plan="monthly")
    listed = container.payments.orders(account_id=made.account_id)
    assert [o.id for o in listed] == [monthly.id, order.id]
    assert container.accounts.reconcile().ok
