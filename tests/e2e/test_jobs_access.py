"""Who sees which job, result and usage; listing; share links; result retention."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog.testing

from comfygate import bootstrap
from comfygate.services.identity_types import Role
from comfygate.services.settlement import ResultRetention
from tests.fakes import FakeClock
from tests.jobs_support import (
    Customer,
    FakeEngine,
    build,
    finished,
    new_customer,
    png_bytes,
    run,
    running_app,
    submit,
)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def container(tmp_path: Path, clock: FakeClock) -> Iterator[bootstrap.Container]:
    built = build(
        f"sqlite:///{tmp_path / 'db.sqlite'}",
        tmp_path / "data",
        clock=clock,
        engines=[FakeEngine()],
        result_retention_s=3600,
        share_max_s=7200,
    )
    yield built
    built.close()


def _user(container: bootstrap.Container, owner: Customer) -> Customer:
    issued = container.identity.create_key(account_id=owner.account_id, actor="cli", role=Role.USER)
    return Customer(owner.account_id, issued.api_key, issued.user_id)


def _operator(container: bootstrap.Container) -> Customer:
    issued = container.identity.bootstrap_operator()
    assert issued is not None
    return Customer(issued.account_id, issued.api_key, issued.user_id)


JOB_ROUTES = [
    ("GET", "/v1/jobs/{id}"),
    ("GET", "/v1/jobs/{id}/events"),
    ("GET", "/v1/jobs/{id}/result"),
    ("POST", "/v1/jobs/{id}/share"),
    ("POST", "/v1/jobs/{id}/cancel"),
]


def test_visibility_of_jobs_by_account_and_role(container: bootstrap.Container) -> None:
    admin = new_customer(container, tokens=100, name="acme")
    user = _user(container, admin)
    colleague = _user(container, admin)
    stranger = new_customer(container, tokens=100, name="globex")
    operator = _operator(container)

    async def scenario() -> dict[str, Any]:
        async with running_app(container) as client:
            job = (await submit(client, user, png_bytes(seed=1))).json()
            await finished(client, user, job["id"])
            own = (await submit(client, stranger, png_bytes(seed=2))).json()
            await finished(client, stranger, own["id"])
            out: dict[str, Any] = {"job": job}
            for name, who in [("stranger", stranger), ("colleague", colleague)]:
                out[name] = [
                    await client.request(m, p.format(id=job["id"]), headers=who.headers)
                    for m, p in JOB_ROUTES
                ]
            for name, who in [("user", user), ("admin", admin), ("operator", operator)]:
                out[name] = [
                    await client.request(m, p.format(id=job["id"]), headers=who.headers)
                    for m, p in JOB_ROUTES[:4]
                ]
            lists = {}
            for name, who in [("user", user), ("colleague", colleague), ("admin", admin)]:
                lists[name] = (await client.get("/v1/jobs", headers=who.headers)).json()
            lists["operator"] = (await client.get("/v1/jobs", headers=operator.headers)).json()
            lists["operator_acme"] = (
                await client.get(
                    "/v1/jobs", params={"account_id": admin.account_id}, headers=operator.headers
                )
            ).json()
            lists["stranger_peek"] = await client.get(
                "/v1/jobs", params={"account_id": admin.account_id}, headers=stranger.headers
            )
            out["lists"] = lists
            return out

    out = run(scenario)
    for name in ("stranger", "colleague"):
        for response in out[name]:
            assert response.status_code == 404, (name, response.request.url)
            assert response.json()["code"] == "job_not_found"
    for name in ("user", "admin", "operator"):
        assert [r.status_code for r in out[name]] == [200, 200, 200, 200], name
    lists = out["lists"]
    job_id = out["job"]["id"]
    assert [j["id"] for j in lists["user"]["items"]] == [job_id]
    assert lists["colleague"]["items"] == []
    assert [j["id"] for j in lists["admin"]["items"]] == [job_id]
    assert len(lists["operator"]["items"]) == 2
    assert [j["id"] for j in lists["operator_acme"]["items"]] == [job_id]
    assert lists["stranger_peek"].status_code == 404


def test_an_idempotency_key_does_not_hand_a_user_a_colleagues_job(
    container: bootstrap.Container,
) -> None:
    """Keys are the account's. A colleague's key, reused, once answered with the
    colleague's job (the same image) or named it (another image)."""
    admin = new_customer(container, tokens=100, name="acme")
    user, colleague = _user(container, admin), _user(container, admin)
    key = {"Idempotency-Key": "order-1"}

    async def scenario() -> list[httpx.Response]:
        async with running_app(container) as client:
            first = await submit(client, user, png_bytes(seed=7), headers=key)
            await finished(client, user, first.json()["id"])
            same = await submit(client, colleague, png_bytes(seed=7), headers=key)
            other = await submit(client, colleague, png_bytes(seed=8), headers=key)
            mine = await submit(client, user, png_bytes(seed=7), headers=key)
            return [first, same, other, mine]

    first, same, other, mine = run(scenario)
    job_id = first.json()["id"]
    for refused in (same, other):
        assert refused.status_code == 409 and refused.json()["code"] == "idempotency_conflict"
        assert job_id not in refused.text
    assert mine.status_code == 202 and mine.json()["id"] == job_id  # the user's own replay
    balance = container.accounts.balance(account_id=admin.account_id)
    assert (balance.available, balance.held) == (90, 0)


def test_listing_filters_by_state_and_pages_with_a_cursor(container: bootstrap.Container) -> None:
    customer = new_customer(container, tokens=200)

    async def scenario() -> list[Any]:
        async with running_app(container) as client:
            ids = []
            for seed in range(5):
                job = (await submit(client, customer, png_bytes(seed=seed))).json()
                ids.append(job["id"])
                await finished(client, customer, job["id"])
            h = customer.headers
            first = (await client.get("/v1/jobs", params={"limit": 2}, headers=h)).json()
            second = (
                await client.get(
                    "/v1/jobs", params={"limit": 2, "cursor": first["next_cursor"]}, headers=h
                )
            ).json()
            failed = (await client.get("/v1/jobs", params={"state": "failed"}, headers=h)).json()
            bad = await client.get("/v1/jobs", params={"state": "exploded"}, headers=h)
            return [ids, first, second, failed, bad]

    ids, first, second, failed, bad = run(scenario)
    newest_first = list(reversed(ids))
    assert [j["id"] for j in first["items"]] == newest_first[:2]
    assert [j["id"] for j in second["items"]] == newest_first[2:4]
    assert failed["items"] == []
    assert bad.status_code == 422


def test_share_links_expire_and_cannot_be_forged(
    container: bootstrap.Container, clock: FakeClock
) -> None:
    customer = new_customer(container, tokens=100)

    async def scenario() -> list[httpx.Response]:
        async with running_app(container) as client:
            job = (await submit(client, customer, png_bytes())).json()
            await finished(client, customer, job["id"])
            h = customer.headers
            link = (
                await client.post(
                    f"/v1/jobs/{job['id']}/share", json={"expires_in_s": 60}, headers=h
                )
            ).json()
            too_long = await client.post(
                f"/v1/jobs/{job['id']}/share", json={"expires_in_s": 99_999}, headers=h
            )
            fetched = await client.get(link["url"])  # no API key needed
            job_part, expiry, mac = link["token"].split(".")
            forged = await client.get(f"/v1/shared/{job_part}.{int(expiry) + 3600}.{mac}")
            garbage = [
                await client.get(f"/v1/shared/{token}")
                for token in (
                    "not-a-token",
                    f"{job_part}.{expiry}.{mac[:-1]}é",  # compare_digest: a 500
                    f"{job_part}.{'9' * 5000}.{mac}",  # int(): a 500
                )
            ]
            clock.advance(seconds=61)
            expired = await client.get(link["url"])
            return [fetched, too_long, forged, garbage, expired]

    fetched, too_long, forged, garbage, expired = run(scenario)
    assert fetched.status_code == 200 and fetched.headers["content-type"] == "image/png"
    assert fetched.headers["cache-control"] == "private, no-store"  # no cache outlives it
    assert too_long.status_code == 422
    assert forged.status_code == 404 and forged.json()["code"] == "invalid_share_link"
    for refused in garbage:
        assert refused.status_code == 404 and refused.json()["code"] == "invalid_share_link"
    assert expired.status_code == 410 and expired.json()["code"] == "share_link_expired"


def test_results_are_deleted_after_retention(
    container: bootstrap.Container, clock: FakeClock, tmp_path: Path
) -> None:
    customer = new_customer(container, tokens=100)

    async def scenario() -> list[Any]:
        async with running_app(container) as client:
            job = (await submit(client, customer, png_bytes())).json()
            done = await finished(client, customer, job["id"])
            before = await client.get(f"/v1/jobs/{job['id']}/result", headers=customer.headers)
            clock.advance(seconds=3601)
            # Past its retention, before the purge has come round: gone all the same.
            unpurged = [
                await client.get(f"/v1/jobs/{job['id']}/result", headers=customer.headers),
                await client.post(f"/v1/jobs/{job['id']}/share", headers=customer.headers),
            ]
            assert [r.status_code for r in unpurged] == [410, 410]
            purged = ResultRetention(
                store=container.jobs.store, storage=container.jobs.storage, clock=clock
            ).purge()
            after = await client.get(f"/v1/jobs/{job['id']}/result", headers=customer.headers)
            share = await client.post(f"/v1/jobs/{job['id']}/share", headers=customer.headers)
            view = (await client.get(f"/v1/jobs/{job['id']}", headers=customer.headers)).json()
            return [done, before, purged, after, share, view]

    done, before, purged, after, share, view = run(scenario)
    assert done["result"]["expires_at"] is not None
    assert before.status_code == 200
    assert purged == 1
    assert after.status_code == 410 and after.json()["code"] == "result_expired"
    assert share.status_code == 410
    assert view["state"] == "succeeded" and view["result"] is None
    assert not (tmp_path / "data" / "jobs" / done["id"]).exists()


def test_result_of_an_unfinished_or_failed_job_is_refused(container: bootstrap.Container) -> None:
    customer = new_customer(container, tokens=100)
    engine = container.jobs.engines[0]
    assert isinstance(engine, FakeEngine)
    engine.default = "fail"

    async def scenario() -> httpx.Response:
        async with running_app(container) as client:
            job = (await submit(client, customer, png_bytes())).json()
            await finished(client, customer, job["id"])
            return await client.get(f"/v1/jobs/{job['id']}/result", headers=customer.headers)

    response = run(scenario)
    assert response.status_code == 409 and response.json()["code"] == "result_not_ready"


def test_usage_scopes_and_csv_export(container: bootstrap.Container) -> None:
    admin = new_customer(container, tokens=100, name="acme")
    user = _user(container, admin)
    stranger = new_customer(container, tokens=100, name="globex")
    operator = _operator(container)

    async def scenario() -> dict[str, Any]:
        async with running_app(container) as client:
            for who, seed in [(admin, 1), (user, 2), (stranger, 3)]:
                job = (await submit(client, who, png_bytes(seed=seed))).json()
                await finished(client, who, job["id"])
            out: dict[str, Any] = {}
            for name, who in [("admin", admin), ("user", user), ("operator", operator)]:
                out[name] = (await client.get("/v1/usage", headers=who.headers)).json()
            out["operator_acme"] = (
                await client.get(
                    "/v1/usage", params={"account_id": admin.account_id}, headers=operator.headers
                )
            ).json()
            out["peek"] = await client.get(
                "/v1/usage", params={"account_id": admin.account_id}, headers=stranger.headers
            )
            out["csv"] = await client.get(
                "/v1/usage", params={"format": "csv"}, headers=admin.headers
            )
            first = (await client.get("/v1/usage?limit=1", headers=admin.headers)).json()
            cursor = {"limit": 1, "cursor": first["next_cursor"]}
            last = (await client.get("/v1/usage", params=cursor, headers=admin.headers)).json()
            out["pages"] = [first, last]
            return out

    out = run(scenario)
    totals = {"jobs": 2, "succeeded": 2, "tokens_charged": 20, "list_tokens": 20}
    assert out["admin"]["totals"] == totals
    # Totals come with the first page only; a full last page says there is no next.
    first, last = out["pages"]
    assert first["totals"] == totals and last["totals"] is None
    assert len(first["items"]) == len(last["items"]) == 1 and last["next_cursor"] is None
    assert first["items"][0]["job_id"] != last["items"][0]["job_id"]
    assert out["user"]["totals"]["jobs"] == 1
    assert {e["user_id"] for e in out["user"]["items"]} == {user.user_id}
    assert out["operator"]["totals"]["jobs"] == 3
    assert out["operator_acme"]["totals"]["jobs"] == 2
    assert out["peek"].status_code == 404
    response = out["csv"]
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == 2 and {r["account_id"] for r in rows} == {admin.account_id}
    assert {r["tokens_charged"] for r in rows} == {"10"}


def test_a_cancel_says_who_canceled_and_is_audited_under_their_name(
    container: bootstrap.Container,
) -> None:
    """An operator's or admin's cancel of someone's job said "canceled by the
    customer", and only the system's release of the hold was audited."""
    admin = new_customer(container, tokens=100, name="acme")
    user = _user(container, admin)
    operator = _operator(container)
    engine = container.jobs.engines[0]
    assert isinstance(engine, FakeEngine)
    engine.default = "hang"

    async def scenario() -> list[dict[str, Any]]:
        async with running_app(container) as client:
            jobs = [(await submit(client, user, png_bytes(seed=s))).json() for s in (1, 2, 3)]
            done = []
            for job, who in zip(jobs, (user, admin, operator), strict=True):
                url = f"/v1/jobs/{job['id']}/cancel"
                done.append((await client.post(url, headers=who.headers)).json())
            return done

    done = run(scenario)
    assert [j["failure"]["reason"] for j in done] == [
        "canceled by the customer",
        "canceled by an admin of the account",
        "canceled by an operator",
    ]
    entries = container.audit.entries(account_id=admin.account_id)
    cancels = {e.target: e.actor for e in entries if e.action == "jobs.cancel"}
    assert cancels == {
        done[0]["id"]: f"user:{user.user_id}",
        done[1]["id"]: f"admin:{admin.user_id}",
        done[2]["id"]: f"operator:{operator.user_id}",
    }
    assert container.accounts.balance(account_id=admin.account_id).available == 100


def test_a_share_link_is_not_written_to_the_access_log(container: bootstrap.Container) -> None:
    """The path of /v1/shared/{token} is the credential: anyone reading the logs could
    fetch the result while the link lasts."""
    customer = new_customer(container, tokens=100)

    async def scenario() -> tuple[str, list[dict[str, Any]]]:
        async with running_app(container) as client:
            job = (await submit(client, customer, png_bytes())).json()
            await finished(client, customer, job["id"])
            url = f"/v1/jobs/{job['id']}/share"
            link = (await client.post(url, headers=customer.headers)).json()
            with structlog.testing.capture_logs() as logs:
                assert (await client.get(link["url"])).status_code == 200
                await client.get(f"/v1/jobs/{job['id']}", headers=customer.headers)
            return link["token"], logs

    token, logs = run(scenario)
    access = [entry for entry in logs if entry.get("event") == "request"]
    assert access[0]["path"] == "/v1/shared/{token}"
    assert access[1]["path"].startswith("/v1/jobs/job_")  # other paths as sent
    assert token not in repr(logs)
