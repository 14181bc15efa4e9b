"""The gateway over HTTP: authentication, roles, keys, problem+json, request ids, rate
limits, health and metrics."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from comfygate.adapters.db import migrate
from tests.e2e.gateway_app import Gateway, bearer, running_gateway


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[Gateway]:
    with running_gateway(tmp_path) as gateway:
        yield gateway


def test_missing_invalid_and_revoked_keys_get_401_problems(gw: Gateway) -> None:
    acme = gw.tenant("acme")
    missing = gw.client.get("/v1/balance")
    assert missing.status_code == 401
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.headers["www-authenticate"] == "Bearer"
    body = missing.json()
    assert body["code"] == "unauthenticated" and body["status"] == 401
    assert body["type"].endswith("/unauthenticated") and body["title"] and body["detail"]
    for header in (
        bearer("cg_key_nope.secret"),
        bearer(acme.user_key + "x"),
        {"Authorization": "Basic abc"},
    ):
        assert gw.client.get("/v1/balance", headers=header).json()["code"] == "unauthenticated"
    assert gw.client.get("/v1/balance", headers=acme.user).status_code == 200
    user_key_id = acme.user_key.partition(".")[0].removeprefix("cg_")
    revoked = gw.client.delete(f"/v1/admin/keys/{user_key_id}", headers=acme.admin)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    after = gw.client.get("/v1/balance", headers=acme.user)
    assert after.status_code == 401 and "revoked" in after.json()["detail"]


def test_roles_user_admin_operator(gw: Gateway) -> None:
    acme = gw.tenant("acme")
    assert gw.client.get("/v1/admin/accounts", headers=acme.user).status_code == 403
    assert gw.client.get("/v1/admin/accounts", headers=acme.admin).status_code == 403
    listed = gw.client.get("/v1/admin/accounts", headers=gw.operator)
    assert acme.account_id in [a["id"] for a in listed.json()["items"]]
    forbidden = gw.client.post(
        f"/v1/admin/accounts/{acme.account_id}/users", json={"name": "x"}, headers=acme.user
    )
    assert forbidden.status_code == 403 and forbidden.json()["code"] == "forbidden"
    made = gw.client.post(
        f"/v1/admin/accounts/{acme.account_id}/users",
        json={"name": "bob", "role": "admin"},
        headers=acme.admin,
    )
    assert made.status_code == 201 and made.json()["role"] == "admin"
    escalate = gw.client.post(
        f"/v1/admin/accounts/{acme.account_id}/users",
        json={"name": "eve", "role": "operator"},
        headers=acme.admin,
    )
    assert escalate.status_code == 403
    grant = gw.client.post(
        f"/v1/admin/accounts/{acme.account_id}/grants", json={"tokens": 5}, headers=acme.admin
    )
    assert grant.status_code == 403


def test_admin_reaches_only_its_own_account(gw: Gateway) -> None:
    acme, other = gw.tenant("acme"), gw.tenant("other")
    for path in ("users", "keys"):
        mine = gw.client.get(f"/v1/admin/accounts/{acme.account_id}/{path}", headers=acme.admin)
        assert mine.status_code == 200
        theirs = gw.client.get(f"/v1/admin/accounts/{other.account_id}/{path}", headers=acme.admin)
        assert theirs.status_code == 404 and theirs.json()["code"] == "account_not_found"
        assert other.admin_user_id not in theirs.text and "other" not in theirs.text


def test_keys_issued_over_http_work_and_are_listed_without_secrets(gw: Gateway) -> None:
    acme = gw.tenant("acme")
    issued = gw.client.post(
        f"/v1/admin/accounts/{acme.account_id}/keys",
        json={"user_id": acme.admin_user_id, "label": "ci"},
        headers=acme.admin,
    ).json()
    assert issued["role"] == "admin" and issued["api_key"].startswith("cg_")
    assert gw.client.get("/v1/balance", headers=bearer(issued["api_key"])).status_code == 200
    listing = gw.client.get(f"/v1/admin/accounts/{acme.account_id}/keys", headers=acme.admin)
    secrets = [acme.admin_key, acme.user_key, issued["api_key"]]
    assert not any(s.partition(".")[2] in listing.text for s in secrets)
    assert "key_hash" not in listing.text
    assert {k["label"] for k in listing.json()} >= {"ci", "app", "first key"}


def test_request_id_is_echoed_or_made(gw: Gateway) -> None:
    given = gw.client.get("/healthz", headers={"X-Request-ID": "trace-123"})
    assert given.headers["x-request-id"] == "trace-123"
    made = gw.client.get("/healthz", headers={"X-Request-ID": "bad id with spaces"})
    assert (
        made.headers["x-request-id"] != "bad id with spaces"
        and len(made.headers["x-request-id"]) == 32
    )
    problem = gw.client.get("/v1/balance", headers={"X-Request-ID": "trace-9"})
    assert problem.json()["request_id"] == "trace-9"


def test_problems_speak_the_clients_language(gw: Gateway) -> None:
    zh = gw.client.get("/v1/balance", headers={"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.8"})
    assert zh.headers["content-language"] == "zh-Hans"
    assert zh.json()["title"] == "需要身份验证" and zh.json()["code"] == "unauthenticated"
    en = gw.client.get("/v1/balance", headers={"Accept-Language": "en-GB"})
    assert (
        en.headers["content-language"] == "en" and en.json()["title"] == "Authentication required"
    )


def test_framework_errors_are_problems_too(gw: Gateway) -> None:
    acme = gw.tenant("acme")
    invalid = gw.client.post("/v1/orders", json={"plan": 5, "junk": 1}, headers=acme.user)
    assert invalid.status_code == 422
    assert invalid.headers["content-type"] == "application/problem+json"
    assert invalid.json()["code"] == "invalid_input"
    assert {tuple(e["loc"]) for e in invalid.json()["errors"]} >= {
        ("body", "plan"),
        ("body", "junk"),
    }
    assert gw.client.get("/v1/nothing-here").json()["code"] == "not_found"
    wrong_method = gw.client.put("/v1/balance")
    assert wrong_method.status_code == 405 and wrong_method.json()["code"] == "method_not_allowed"
    bad_query = gw.client.get("/v1/ledger?limit=0", headers=acme.admin)
    assert bad_query.status_code == 422 and bad_query.json()["code"] == "invalid_input"


def test_rate_limit_per_key_with_retry_after(tmp_path: Path) -> None:
    with running_gateway(tmp_path, rate_limit_per_minute=3) as gw:
        acme = gw.tenant("acme")  # uses the operator's and admin's buckets, not the user's
        codes = [gw.client.get("/v1/balance", headers=acme.user).status_code for _ in range(3)]
        limited = gw.client.get("/v1/balance", headers=acme.user)
        assert codes == [200, 200, 200]
        assert limited.status_code == 429 and limited.json()["code"] == "rate_limited"
        assert 1 <= int(limited.headers["retry-after"]) <= 20
        assert gw.client.get("/v1/balance", headers=acme.admin).status_code == 200
        metrics = gw.client.get("/metrics").text
        assert "comfygate_rate_limited_requests_total 1.0" in metrics


def test_readiness_checks_the_data_dir_takes_files(tmp_path: Path) -> None:
    """Uploads land in data_dir/tmp: when it cannot take a file, /readyz says so (and
    why) rather than answering ready while every submission fails. It makes nothing:
    a data dir whose volume went away is not made again, empty, on another disk."""
    data = tmp_path / "data"
    with running_gateway(tmp_path, data_dir=data) as gw:
        ready = gw.client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["checks"]["data_dir"] is True
        (data / "tmp").rmdir()
        (data / "tmp").write_text("not a folder")
        not_ready = gw.client.get("/readyz")
        (data / "tmp").unlink()
        gone = gw.client.get("/readyz")
        assert not (data / "tmp").exists()
    for answer in (not_ready, gone):
        assert answer.status_code == 503
        assert answer.json()["checks"]["data_dir"] == (
            f"error: ValidationFailedError: the data dir {data} (COMFYGATE_DATA_DIR) is"
            " missing or not writable (its tmp/ folder)"
        )


def test_readiness_checks_the_schema_is_the_code_s(gw: Gateway, tmp_path: Path) -> None:
    """A gateway whose database was moved back (behind its code) is kept out of the
    load balancer, and says which revisions. One a newer release moved ahead of it
    keeps serving, as a rolling deploy needs (it was once taken out the moment the
    new release migrated: an outage); it is refused a start (``test_cli_db``)."""

    def record(revision: str) -> None:
        with sqlite3.connect(tmp_path / "gateway.db") as conn:
            conn.execute(
                "UPDATE alembic_version SET version_num = ? WHERE version_num LIKE 'jobs_%'",
                (revision,),
            )

    head = next(h for h in migrate.scripts().get_heads() if h.startswith("jobs"))
    previous = migrate.scripts().get_revision(head).down_revision
    ready = gw.client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"]["schema"] is True
    record("jobs_0099")
    ahead = gw.client.get("/readyz")
    record(previous)
    behind = gw.client.get("/readyz")
    record(head)
    again = gw.client.get("/readyz")
    assert ahead.status_code == 200 and ahead.json()["checks"]["schema"] is True
    assert behind.status_code == 503
    assert behind.json()["checks"]["schema"] == (
        "error: SchemaOutOfDateError: the database schema is behind this comfygate:"
        f" 1 revision pending ({head}); run `comfygate db upgrade`"
    )
    assert again.status_code == 200 and again.json()["checks"]["schema"] is True


def test_health_readiness_and_metrics(gw: Gateway) -> None:
    assert gw.client.get("/healthz").json() == {"status": "ok"}
    ready = gw.client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"]["database"] is True

    async def engines_down() -> bool:
        return False

    async def broken() -> bool:
        raise RuntimeError("model missing")

    gw.container.readiness_checks["engines"] = engines_down
    not_ready = gw.client.get("/readyz")
    assert not_ready.status_code == 503 and not_ready.json()["checks"]["engines"] is False
    gw.container.readiness_checks["engines"] = broken
    assert "model missing" in gw.client.get("/readyz").json()["checks"]["engines"]

    acme = gw.tenant("acme")
    gw.client.get(f"/v1/admin/accounts/{acme.account_id}/users", headers=acme.admin)
    for method in ("ZZ0", "ZZ1"):  # any token is a method to the server: one label
        gw.client.request(method, "/healthz")
    metrics = gw.client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    assert 'route="/v1/admin/accounts/{account_id}/users",status="200"' in text
    assert acme.account_id not in text  # labelled by template, never by raw path
    assert "ZZ0" not in text and 'method="OTHER",route="/healthz",status="405"' in text
    assert "comfygate_http_request_duration_seconds_bucket" in text
    for family in ("comfygate_jobs_total", "comfygate_queue_depth", "comfygate_tokens_held_total",
                   "comfygate_inference_seconds", "comfygate_cold_starts_total"):  # fmt: skip
        assert f"# TYPE {family.removesuffix('_total')}" in text


def test_each_app_counts_on_its_own_registry(tmp_path: Path) -> None:
    with running_gateway(tmp_path / "a") as first, running_gateway(tmp_path / "b") as second:
        for _ in range(3):
            first.client.get("/healthz")
        second.client.get("/healthz")
        line = 'comfygate_http_requests_total{method="GET",route="/healthz",status="200"}'
        assert f"{line} 3.0" in first.client.get("/metrics").text
        assert f"{line} 1.0" in second.client.get("/metrics").text


def test_lifespan_runs_the_containers_hooks(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from comfygate import bootstrap
    from comfygate.config import Settings
    from comfygate.entrypoints.api.app import create_app

    container = bootstrap.build(Settings(database_url=f"sqlite:///{tmp_path / 'x.db'}"))
    container.upgrade_database()
    calls: list[str] = []

    async def start() -> None:
        calls.append("start")

    async def stop() -> None:
        calls.append("stop")

    container.on_startup.append(start)
    container.on_shutdown.append(stop)
    try:
        with TestClient(create_app(container)) as client:
            assert calls == ["start"]
            client.get("/healthz")
        assert calls == ["start", "stop"]
    finally:
        container.close()


def test_openapi_and_docs_are_served(gw: Gateway) -> None:
    schema = gw.client.get("/openapi.json").json()
    assert {"/v1/quotes", "/v1/balance", "/v1/admin/accounts"} <= set(schema["paths"])
    assert "ApiKey" in schema["components"]["securitySchemes"]
    # Working offline: the pages' scripts and styles come from the gateway, not a CDN.
    for page in ("/docs", "/redoc"):
        html = gw.client.get(page)
        assert html.status_code == 200 and "cdn." not in html.text and "://" not in html.text
        assets = re.findall(r'(?:src|href)="(/docs-static/[^"]+)"', html.text)
        assert assets and all(gw.client.get(a).status_code == 200 for a in assets), assets
