"""The gateway over HTTP: grants, subscriptions, balance, statement, orders, payments,
the 402 body and the audit trail."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import APIRouter

from comfygate.adapters.payments import sign
from comfygate.domain.errors import InsufficientBalanceError
from tests.e2e.gateway_app import Gateway, running_gateway

WEBHOOK_SECRET = "whsec_e2e"


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[Gateway]:
    with running_gateway(tmp_path, payment_webhook_secrets={"acme-pay": WEBHOOK_SECRET}) as g:
        yield g


def test_grants_are_idempotent_by_header_and_audited(gw: Gateway) -> None:
    acme = gw.tenant("acme")
    url = f"/v1/admin/accounts/{acme.account_id}/grants"
    headers = {**gw.operator, "Idempotency-Key": "promo-42"}
    first = gw.client.post(url, json={"tokens": 50, "source": "promotion"}, headers=headers)
    again = gw.client.post(url, json={"tokens": 50, "source": "promotion"}, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json()["replayed"] is True and again.json()["lot_id"] == first.json()["lot_id"]
    conflict = gw.client.post(url, json={"tokens": 51}, headers=headers)
    assert conflict.status_code == 409 and conflict.json()["code"] == "idempotency_conflict"
    assert gw.client.get("/v1/balance", headers=acme.user).json()["available"] == 50
    audit = gw.client.get("/v1/admin/audit", headers=acme.admin).json()["items"]
    grants = [e for e in audit if e["action"] == "ledger.grant"]
    assert len(grants) == 1 and grants[0]["details"]["tokens"] == 50
    missing = gw.client.post(
        "/v1/admin/accounts/acct_nope/grants", json={"tokens": 1}, headers=headers
    )
    assert missing.status_code == 404
    # Without a key a retry would grant again (once it did: a random key each time).
    keyless = gw.client.post(url, json={"tokens": 100}, headers=gw.operator)
    assert keyless.status_code == 422 and keyless.json()["code"] == "invalid_input"
    assert gw.client.get("/v1/balance", headers=acme.user).json()["available"] == 50


def test_statement_pages_with_a_cursor(gw: Gateway) -> None:
    acme = gw.tenant("acme")
    for i in range(5):
        gw.client.post(
            f"/v1/admin/accounts/{acme.account_id}/grants",
            json={"tokens": i + 1, "idempotency_key": f"g{i}"},
            headers=gw.operator,
        )
    seen: list[int] = []
    cursor = None
    for _ in range(4):
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = gw.client.get("/v1/ledger", params=params, headers=acme.admin).json()
        seen += [line["available_delta"] for line in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [5, 4, 3, 2, 1]
    admin_view = gw.client.get(f"/v1/admin/accounts/{acme.account_id}/ledger", headers=acme.admin)
    assert [x["available_delta"] for x in admin_view.json()["items"]] == [5, 4, 3, 2, 1]


def test_the_statement_is_for_the_accounts_admins_not_its_users(gw: Gateway) -> None:
    """It lists every user's holds and every grant; a user sees their own jobs."""
    acme = gw.tenant("acme", tokens=10)
    refused = gw.client.get("/v1/ledger", headers=acme.user)
    assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
    assert "grant" not in refused.text
    assert gw.client.get("/v1/ledger", headers=acme.admin).json()["items"][0]["kind"] == "grant"


def _audit_fails_once(gw: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    """The next audit insert fails (the database, busy a moment), after the action."""
    store = gw.container.audit._store
    real, failures = store.append, [sa.exc.OperationalError("INSERT", {}, Exception("locked"))]

    def append(entry: Any) -> None:
        if failures:
            raise failures.pop()
        real(entry)

    monkeypatch.setattr(store, "append", append)


@pytest.mark.parametrize(
    ("action", "path", "body"),
    [
        ("ledger.grant", "grants", {"tokens": 70, "idempotency_key": "deal-42"}),
        ("subscriptions.create", "subscriptions", {"plan": "monthly"}),
        ("subscriptions.create", "subscriptions", {"plan": "vip"}),
    ],
)
def test_a_grant_whose_audit_entry_failed_is_audited_once_by_its_retry(
    gw: Gateway, monkeypatch: pytest.MonkeyPatch, action: str, path: str, body: Any
) -> None:
    """The retry of a grant that committed is a replay, which once wrote no entry: the
    tokens moved with none at all. Now it writes the lost one, and a third call none."""
    acme = gw.tenant("acme")
    url = f"/v1/admin/accounts/{acme.account_id}/{path}"
    _audit_fails_once(gw, monkeypatch)
    failed = gw.client.post(url, json=body, headers=gw.operator)
    retries = [gw.client.post(url, json=body, headers=gw.operator) for _ in range(2)]
    assert failed.status_code == 500
    assert [r.status_code for r in retries] == [201, 201]
    assert all(r.json()["replayed"] for r in retries)
    audit = gw.client.get("/v1/admin/audit", headers=acme.admin).json()["items"]
    entries = [e for e in audit if e["action"] == action]
    assert len(entries) == 1 and entries[0]["actor"].startswith("operator:")


def test_a_confirmed_order_whose_audit_entry_failed_is_audited_once_by_the_next_confirm(
    gw: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    acme = gw.tenant("acme")
    order = gw.client.post("/v1/orders", json={"plan": "topup-500"}, headers=acme.admin).json()
    confirm = f"/v1/admin/orders/{order['id']}/confirm"
    _audit_fails_once(gw, monkeypatch)
    failed = gw.client.post(confirm, headers=gw.operator)
    again = [gw.client.post(confirm, headers=gw.operator) for _ in range(2)]
    assert failed.status_code == 500 and [r.status_code for r in again] == [200, 200]
    assert gw.client.get("/v1/balance", headers=acme.admin).json()["available"] == 500
    audit = gw.client.get("/v1/admin/audit", headers=acme.admin).json()["items"]
    assert [e["target"] for e in audit if e["action"] == "orders.confirm"] == [order["id"]]


def test_plans_are_public_and_subscriptions_are_the_operators(gw: Gateway) -> None:
    plans = gw.client.get("/v1/plans").json()
    assert {p["name"] for p in plans} >= {"monthly", "yearly", "vip", "topup-500"}
    acme = gw.tenant("acme")
    body = {"account_id": acme.account_id, "plan": "monthly"}
    assert gw.client.post("/v1/subscriptions", json=body, headers=acme.admin).status_code == 403
    made = gw.client.post("/v1/subscriptions", json=body, headers=gw.operator)
    assert made.status_code == 201 and made.json()["tokens_granted"] == 1000
    again = gw.client.post(
        f"/v1/admin/accounts/{acme.account_id}/subscriptions",
        json={"plan": "monthly"},
        headers=gw.operator,
    )
    assert again.status_code == 201
    assert (again.json()["replayed"], again.json()["tokens_granted"]) == (True, 0)
    assert gw.client.get("/v1/balance", headers=acme.user).json()["available"] == 1000
    vip = gw.client.post(
        f"/v1/admin/accounts/{acme.account_id}/subscriptions",
        json={"plan": "vip"},
        headers=gw.operator,
    )
    assert vip.json()["unlimited"] is True and vip.json()["replayed"] is False
    audit = gw.container.audit.entries(account_id=acme.account_id)
    # One entry per grant: a replay, which moves nothing, once wrote another.
    assert [e.details["plan"] for e in audit if e.action == "subscriptions.create"] == [
        "vip",
        "monthly",
    ]
    assert gw.client.get("/v1/balance", headers=acme.user).json()["unlimited"] is True
    unknown = gw.client.post(
        "/v1/subscriptions", json={**body, "plan": "gold"}, headers=gw.operator
    )
    assert unknown.status_code == 404 and unknown.json()["code"] == "unknown_plan"


def test_manual_order_confirmed_by_the_operator_grants_once(gw: Gateway) -> None:
    acme = gw.tenant("acme")
    order = gw.client.post("/v1/orders", json={"plan": "topup-500"}, headers=acme.user)
    assert order.status_code == 201 and order.json()["state"] == "pending"
    order_id = order.json()["id"]
    assert (
        gw.client.post(f"/v1/admin/orders/{order_id}/confirm", headers=acme.admin).status_code
        == 403
    )
    pending = gw.client.get("/v1/admin/orders", params={"state": "pending"}, headers=gw.operator)
    assert [o["id"] for o in pending.json()["items"]] == [order_id]
    for _ in range(2):
        confirmed = gw.client.post(f"/v1/admin/orders/{order_id}/confirm", headers=gw.operator)
        assert confirmed.status_code == 200 and confirmed.json()["state"] == "paid"
    assert gw.client.get("/v1/balance", headers=acme.user).json()["available"] == 500
    mine = gw.client.get("/v1/orders", headers=acme.user).json()["items"]
    assert [(o["id"], o["grant"]["tokens_granted"]) for o in mine] == [(order_id, 500)]
    cancel = gw.client.post(f"/v1/orders/{order_id}/cancel", headers=acme.user)
    assert cancel.status_code == 409 and cancel.json()["code"] == "invalid_order_state"
    actions = [
        e["action"] for e in gw.client.get("/v1/admin/audit", headers=gw.operator).json()["items"]
    ]
    assert actions.count("orders.confirm") == 1 and "orders.create" in actions


def _signed(body: dict[str, object], secret: str = WEBHOOK_SECRET) -> tuple[bytes, dict[str, str]]:
    raw = json.dumps(body).encode()
    return raw, {"Comfygate-Signature": sign(secret, raw, int(time.time())),
                 "Content-Type": "application/json"}  # fmt: skip


def test_provider_webhook_with_a_valid_signature_grants_the_plan(gw: Gateway) -> None:
    acme = gw.tenant("acme")
    order = gw.client.post(
        "/v1/orders", json={"plan": "topup-2000", "provider": "acme-pay"}, headers=acme.user
    ).json()
    event = {"id": "evt_1", "order_id": order["id"], "status": "paid", "amount": "69.00",
             "currency": "CNY", "provider_ref": "pay_77"}  # fmt: skip
    forged_raw, forged_headers = _signed(event, secret="not-the-secret")
    forged = gw.client.post(
        "/v1/payments/acme-pay/webhook", content=forged_raw, headers=forged_headers
    )
    assert forged.status_code == 401 and forged.json()["code"] == "invalid_signature"
    assert gw.client.get("/v1/balance", headers=acme.user).json()["available"] == 0
    raw, headers = _signed(event)
    for _ in range(2):  # providers retry deliveries
        paid = gw.client.post("/v1/payments/acme-pay/webhook", content=raw, headers=headers)
        assert paid.status_code == 200 and paid.json()["state"] == "paid"
    assert paid.json()["provider_ref"] == "pay_77"
    assert gw.client.get("/v1/balance", headers=acme.user).json()["available"] == 2000
    unknown = gw.client.post("/v1/payments/nobody/webhook", content=raw, headers=headers)
    assert unknown.status_code == 404 and unknown.json()["code"] == "unknown_payment_provider"


def test_orders_of_unknown_providers_or_plans_are_refused(gw: Gateway) -> None:
    acme = gw.tenant("acme")
    bad_provider = gw.client.post(
        "/v1/orders", json={"plan": "monthly", "provider": "x"}, headers=acme.user
    )
    assert bad_provider.status_code == 404
    bad_plan = gw.client.post("/v1/orders", json={"plan": "gold"}, headers=acme.user)
    assert bad_plan.status_code == 404 and bad_plan.json()["code"] == "unknown_plan"


def test_insufficient_balance_problem_lists_the_plans_to_buy(gw: Gateway) -> None:
    probe = APIRouter()

    @probe.get("/test/spend")
    def spend() -> None:
        raise InsufficientBalanceError("need 11 tokens, have 3", available=3, required=11)

    gw.client.app.include_router(probe)  # type: ignore[attr-defined]
    refused = gw.client.get("/test/spend", headers={"Accept-Language": "zh-CN"})
    assert refused.status_code == 402
    body = refused.json()
    assert (body["code"], body["available"], body["required"]) == ("insufficient_balance", 3, 11)
    assert body["title"] == "余额不足"
    assert {p["name"] for p in body["plans"]} >= {"monthly", "topup-500"}
    assert all({"price", "tokens", "title"} <= set(p) for p in body["plans"])


def test_admin_account_view_shows_the_balance(gw: Gateway) -> None:
    acme = gw.tenant("acme", tokens=30)
    view = gw.client.get(f"/v1/admin/accounts/{acme.account_id}", headers=acme.admin).json()
    assert (view["name"], view["balance"]["available"]) == ("acme", 30)
    report = gw.client.get("/v1/admin/reports/ledger", headers=gw.operator).json()
    assert report["ok"] is True and sum(report["book_totals"].values()) == 0
    assert gw.client.get("/v1/admin/reports/ledger", headers=acme.admin).status_code == 403


def test_an_order_retried_with_its_idempotency_key_is_placed_once(gw: Gateway) -> None:
    acme = gw.tenant("acme")
    key = {**acme.user, "Idempotency-Key": "buy-monthly-1"}
    first, again = (
        gw.client.post("/v1/orders", json={"plan": "monthly"}, headers=key) for _ in "12"
    )
    assert (first.status_code, again.status_code) == (201, 201), first.text
    assert again.json() == first.json()
    other = gw.client.post("/v1/orders", json={"plan": "topup-500"}, headers=key)
    assert other.status_code == 409 and other.json()["code"] == "idempotency_conflict"
    empty = gw.client.post(
        "/v1/orders", json={"plan": "monthly"}, headers={**acme.user, "Idempotency-Key": ""}
    )
    assert empty.status_code == 422
    too_long = {**acme.user, "Idempotency-Key": "k" * 201}
    long_key = gw.client.post("/v1/orders", json={"plan": "monthly"}, headers=too_long)
    assert long_key.status_code == 422 and long_key.json()["code"] == "invalid_input"
    mine = gw.client.get("/v1/orders", headers=acme.user).json()["items"]
    assert [o["id"] for o in mine] == [first.json()["id"]]
