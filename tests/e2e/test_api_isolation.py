"""One account can never see or touch another's data, on every route.

The test enumerates the OpenAPI schema, so a route added later is covered as soon as it
exists: every operation with a path parameter is called by another account's admin and
user with the victim's ids, and must answer 403 (role) or 404 (never 200, never the
victim's data); list routes that accept an ``account_id`` filter must not return the
victim's data either. A path parameter this test does not know fails the test, so the
table below is kept complete.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.e2e.gateway_app import Gateway, Tenant, running_gateway

VICTIM_NAME = "victim-co-9f3b"

# Routes with a path parameter that are not authenticated by an API key, and why.
UNAUTHENTICATED = {
    ("POST", "/v1/payments/{provider}/webhook"): "HMAC-signed by the provider (own tests)",
    ("GET", "/v1/shared/{token}"): "the signed, expiring token is the permission (own tests)",
}

# Valid bodies, so a refusal comes from the ownership check, not from validation.
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/v1/admin/accounts/{account_id}/users"): {"name": "mallory"},
    ("POST", "/v1/admin/accounts/{account_id}/keys"): {"role": "user"},
    ("POST", "/v1/admin/accounts/{account_id}/grants"): {"tokens": 5},
    ("POST", "/v1/admin/accounts/{account_id}/subscriptions"): {"plan": "monthly"},
    ("POST", "/v1/jobs/{job_id}/share"): {"expires_in_s": 60},
}


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("L", (width, height), 90).save(out, "PNG")
    return out.getvalue()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Gateway, Tenant, Tenant, dict[str, str]]]:
    with running_gateway(tmp_path) as gw:
        victim = gw.tenant(VICTIM_NAME, tokens=100)
        intruder = gw.tenant("intruder", tokens=100)
        ids = {
            "account_id": victim.account_id,
            "key_id": victim.user_key.partition(".")[0].removeprefix("cg_"),
            "order_id": gw.client.post(
                "/v1/orders", json={"plan": "topup-500"}, headers=victim.user
            ).json()["id"],
        }
        paths = gw.client.get("/openapi.json").json()["paths"]
        if "/v1/jobs" in paths:
            job = gw.client.post(
                "/v1/jobs",
                files={"image": ("p.png", png(64, 64), "image/png")},
                data={"capability": "colorize.person"},
                headers=victim.user,
            )
            assert job.status_code in (200, 202), job.text
            ids["job_id"] = job.json()["id"]
        yield gw, victim, intruder, ids


def _operations(gw: Gateway) -> list[tuple[str, str, list[str]]]:
    ops = []
    for path, item in gw.client.get("/openapi.json").json()["paths"].items():
        for method in item:
            params = re.findall(r"{(\w+)}", path)
            if params and (method.upper(), path) not in UNAUTHENTICATED:
                ops.append((method.upper(), path, params))
    return ops


def _victim_markers(gw: Gateway, victim: Tenant) -> list[str]:
    """Strings that only the victim's data contains (its name, users, key secrets)."""
    return [VICTIM_NAME, victim.admin_user_id, victim.user_id,
            victim.user_key.partition(".")[2], victim.admin_key.partition(".")[2]]  # fmt: skip


def test_every_route_with_an_id_refuses_another_account(world) -> None:  # type: ignore[no-untyped-def]
    gw, victim, intruder, ids = world
    ops = _operations(gw)
    assert len(ops) >= 10
    checked = []
    for method, path, params in ops:
        unknown = [p for p in params if p not in ids]
        assert not unknown, f"{method} {path}: add a victim resource for {unknown} to this test"
        url = path.format(**{p: ids[p] for p in params})
        for who, headers in (("admin", intruder.admin), ("user", intruder.user)):
            response = gw.client.request(
                method, url, json=BODIES.get((method, path)), headers=headers
            )
            assert response.status_code in (403, 404), (
                f"{who} of another account got {response.status_code} on {method} {path}: "
                f"{response.text[:300]}"
            )
            for marker in _victim_markers(gw, victim):
                assert marker not in response.text, f"{method} {path} leaked {marker!r}"
        checked.append(f"{method} {path}")
    assert "GET /v1/orders/{order_id}" in checked and "DELETE /v1/admin/keys/{key_id}" in checked

    # and nothing happened to the victim
    statement = gw.client.get("/v1/ledger", headers=victim.admin).json()["items"]
    assert [line["available_delta"] for line in statement if line["kind"] == "grant"] == [100]
    order = gw.client.get(f"/v1/orders/{ids['order_id']}", headers=victim.user).json()
    assert order["state"] == "pending"
    users = gw.client.get(f"/v1/admin/accounts/{victim.account_id}/users", headers=victim.admin)
    assert "mallory" not in users.text and len(users.json()) == 2
    if "job_id" in ids:
        job = gw.client.get(f"/v1/jobs/{ids['job_id']}", headers=victim.user).json()
        assert job["state"] != "canceled"


def test_account_filters_on_lists_do_not_reach_another_account(world) -> None:  # type: ignore[no-untyped-def]
    gw, victim, intruder, ids = world
    schema = gw.client.get("/openapi.json").json()["paths"]
    filtered = [
        path
        for path, item in schema.items()
        if "get" in item
        and "{" not in path
        and any(p["name"] == "account_id" for p in item["get"].get("parameters", []))
    ]
    assert "/v1/admin/audit" in filtered
    for path in filtered:
        for headers in (intruder.admin, intruder.user):
            response = gw.client.get(
                path, params={"account_id": victim.account_id}, headers=headers
            )
            assert response.status_code in (200, 403, 404), f"{path}: {response.status_code}"
            for marker in [*_victim_markers(gw, victim), *ids.values()]:
                if marker != victim.account_id:
                    assert marker not in response.text, f"{path} leaked {marker!r}"
            if response.status_code == 200:
                assert f'"account_id":"{victim.account_id}"' not in response.text.replace(" ", "")


def test_own_account_lists_show_only_own_data(world) -> None:  # type: ignore[no-untyped-def]
    gw, victim, intruder, ids = world
    for path in ("/v1/orders", "/v1/ledger", "/v1/balance", "/v1/admin/audit"):
        response = gw.client.get(path, headers=intruder.admin)
        assert response.status_code == 200, path
        assert victim.account_id not in response.text and ids["order_id"] not in response.text
