"""Values the database cannot take, and instants no time zone can show, in ids,
cursors, names, keys and filters: never a 500, and no token moves. PostgreSQL refuses
a NUL character in text, and answered 500 for each; there they are 422
``invalid_input`` (elsewhere a name may hold one, an id with one is not found), and
an idempotency key with one is refused on every backend."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.e2e.gateway_app import running_gateway

NUL = "\u0000"
# (method, path, who, JSON body): ``{a}`` is the tenant's account.
CASES: list[tuple[str, str, str, Any]] = [
    ("GET", "/v1/usage?since=0001-01-01T00:00:00%2B05:00", "user", None),
    ("GET", "/v1/usage?until=9999-12-31T23:59:59-05:00", "user", None),
    ("GET", "/v1/ledger?cursor=%00", "admin", None),
    ("GET", "/v1/jobs?cursor=%00", "user", None),
    ("GET", "/v1/jobs/job_%00", "user", None),
    ("GET", "/v1/orders/ord_%00", "user", None),
    ("GET", "/v1/admin/audit?cursor=%00", "admin", None),
    ("DELETE", "/v1/admin/keys/key_%00", "admin", None),
    ("GET", "/v1/admin/price-books?account_id=%00", "op", None),
    ("POST", "/v1/admin/accounts/{a}/keys", "admin", {"role": "user", "label": f"a{NUL}b"}),
    ("POST", "/v1/admin/accounts/{a}/users", "admin", {"name": f"a{NUL}"}),
    ("POST", "/v1/admin/accounts", "op", {"name": f"acme{NUL}"}),
    ("POST", "/v1/admin/accounts/{a}/grants", "op", {"tokens": 5, "idempotency_key": f"k{NUL}"}),
    ("GET", "/v1/reports/usage?since=0001-01-01T00:00:00%2B05:00", "admin", None),
    ("GET", "/v1/reports/usage?tz=Asia/Shanghai%00", "admin", None),
    ("GET", "/v1/reports/usage?account_id=acct_%00", "op", None),
]


def test_bad_values_are_invalid_input_and_move_nothing(database_url: str, tmp_path: Path) -> None:
    with running_gateway(tmp_path, database_url=database_url) as gw:
        tenant = gw.tenant("acme", tokens=10)
        who = {"op": gw.operator, "admin": tenant.admin, "user": tenant.user}
        answers = []
        for method, path, caller, body in CASES:
            content = None if body is None else json.dumps(body).encode()
            headers = {**who[caller], "Content-Type": "application/json"}
            response = gw.client.request(
                method, path.format(a=tenant.account_id), headers=headers, content=content
            )
            answers.append((method, path, response.status_code, response.json().get("code")))
        assert all(status < 500 for *_, status, _ in answers), answers
        refused = [a for a in answers if a[2] == 422]
        assert all(code == "invalid_input" for *_, code in refused), refused
        assert [a[:2] for a in answers[:2]] == [a[:2] for a in refused[:2]]  # out of range
        balance = gw.container.accounts.balance(account_id=tenant.account_id)
        assert (balance.available, balance.held) == (10, 0)
        assert gw.container.accounts.reconcile().ok


LISTS = [
    ("/v1/ledger", "admin"),
    ("/v1/jobs", "user"),
    ("/v1/usage", "user"),
    ("/v1/orders", "user"),
    ("/v1/admin/audit", "admin"),
    ("/v1/admin/accounts", "op"),
    ("/v1/admin/orders", "op"),
]


def test_a_list_refuses_a_cursor_no_page_gave_and_takes_an_empty_one_as_the_first(
    tmp_path: Path,
) -> None:
    """A malformed cursor was a silently empty page on some lists, and an empty one
    the first page on one list and an empty page on the others."""
    with running_gateway(tmp_path) as gw:
        tenant = gw.tenant("acme", tokens=10)
        who = {"op": gw.operator, "admin": tenant.admin, "user": tenant.user}
        for path, caller in LISTS:
            first = gw.client.get(path, headers=who[caller])
            empty = gw.client.get(f"{path}?cursor=", headers=who[caller])
            bad = gw.client.get(f"{path}?cursor=nonsense", headers=who[caller])
            assert first.status_code == 200, (path, first.text)
            assert empty.json()["items"] == first.json()["items"], path
            assert bad.status_code == 422 and bad.json()["code"] == "invalid_input", path


def test_an_account_filter_names_an_account_the_caller_sees_or_is_not_found(
    tmp_path: Path,
) -> None:
    """An operator's list of an unknown account was an empty page; an admin's audit
    log of another account was the admin's own entries."""
    with running_gateway(tmp_path) as gw:
        acme, globex = gw.tenant("acme", tokens=10), gw.tenant("globex", tokens=10)
        asked = [
            ("/v1/admin/audit", acme.admin, globex.account_id),
            ("/v1/usage", acme.admin, globex.account_id),
            ("/v1/jobs", acme.admin, globex.account_id),
            ("/v1/reports/usage", acme.admin, globex.account_id),
            ("/v1/admin/audit", gw.operator, "acct_nope"),
            ("/v1/reports/usage", gw.operator, "acct_nope"),
            ("/v1/usage", gw.operator, "acct_nope"),
            ("/v1/jobs", gw.operator, "acct_nope"),
        ]
        for path, headers, account in asked:
            answer = gw.client.get(path, params={"account_id": account}, headers=headers)
            assert answer.status_code == 404, (path, account, answer.text)
            assert answer.json()["code"] == "account_not_found", (path, account)
        own = gw.client.get(
            "/v1/admin/audit", params={"account_id": acme.account_id}, headers=acme.admin
        )
        assert own.status_code == 200 and own.json()["items"]


def test_a_json_body_nested_past_the_parsers_depth_is_invalid_input(tmp_path: Path) -> None:
    """FastAPI cannot parse it (400): it answered with the code ``error``."""
    with running_gateway(tmp_path) as gw:
        tenant = gw.tenant("acme", tokens=10)
        deep = b'{"tokens": 5, "idempotency_key": "k", "x": ' + b"[" * 30_000 + b"]" * 30_000
        refused = gw.client.post(
            f"/v1/admin/accounts/{tenant.account_id}/grants",
            content=deep + b"}",
            headers={**gw.operator, "Content-Type": "application/json"},
        )
        assert refused.status_code == 400 and refused.json()["code"] == "invalid_input"
        assert gw.container.accounts.balance(account_id=tenant.account_id).available == 10
