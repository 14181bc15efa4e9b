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
