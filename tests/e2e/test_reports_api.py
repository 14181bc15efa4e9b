"""``GET /v1/reports/usage`` over HTTP, on jobs run by the preview engine: what an
operator and an account's admin see, and who may not see it."""

from __future__ import annotations

from typing import Any

import pytest

from comfygate import bootstrap
from comfygate.services.identity_types import Role
from tests.e2e.gateway_app import bearer
from tests.jobs_support import (
    CAPABILITY,
    corrupt_png,
    finished,
    new_customer,
    png_bytes,
    run,
    running_app,
    submit,
)


def test_operator_and_admin_reports_count_the_settled_jobs(
    container: bootstrap.Container,
) -> None:
    """Acme runs two person jobs (11 tokens each) and one that fails at the worker;
    Globex one building job (17). The operator sees all four, Acme's admin Acme's."""
    issued = container.identity.bootstrap_operator()
    assert issued is not None
    operator = bearer(issued.api_key)
    acme = new_customer(container, tokens=100, name="acme")
    globex = new_customer(container, tokens=100, name="globex")

    async def scenario() -> dict[str, Any]:
        async with running_app(container) as client:
            runs = [
                (acme, png_bytes((800, 600), seed=1), CAPABILITY),
                (acme, png_bytes((800, 600), seed=2), CAPABILITY),
                (acme, corrupt_png((640, 480)), CAPABILITY),
                (globex, png_bytes((1280, 960), seed=3), "colorize.building"),
            ]
            for customer, image, capability in runs:
                accepted = await submit(client, customer, image, capability=capability)
                assert accepted.status_code == 202, accepted.text
                await finished(client, customer, accepted.json()["id"])
            everyone = await client.get("/v1/reports/usage", headers=operator)
            hourly = await client.get(
                "/v1/reports/usage", params={"bucket": "hour", "tz": "UTC"}, headers=operator
            )
            own = await client.get("/v1/reports/usage", headers=acme.headers)
            one = await client.get(
                "/v1/reports/usage", params={"account_id": globex.account_id}, headers=operator
            )
            return {"everyone": everyone, "hourly": hourly, "own": own, "one": one}

    out = run(scenario)
    for name in out:
        assert out[name].status_code == 200, (name, out[name].text)
    everyone = out["everyone"].json()
    totals = everyone["totals"]
    assert (totals["calls"], totals["succeeded"], totals["failed"]) == (4, 3, 1)
    assert totals["tokens_charged"] == totals["list_tokens"] == 11 + 11 + 17
    assert totals["avg_tokens_per_call"] == 13.0
    assert totals["inference_p50_s"] is not None and totals["gpu_seconds_per_token"] > 0
    assert [c["capability"] for c in everyone["capabilities"]] == [
        "colorize.building",
        CAPABILITY,
    ]
    assert (everyone["bucket"], everyone["timezone"]) == ("day", "Asia/Shanghai")
    assert len(everyone["buckets"]) in (7, 8) and everyone["account_id"] is None
    for line in everyone["series"]:
        assert len(line["calls"]) == len(everyone["buckets"])
    assert sum(sum(line["calls"]) for line in everyone["series"]) == 4
    assert sum(map(sum, everyone["heatmap"])) == 4 and len(everyone["heatmap"]) == 7
    assert [(a["name"], a["calls"], a["tokens_charged"]) for a in everyone["top_accounts"]] == [
        ("acme", 3, 22),
        ("globex", 1, 17),
    ]
    (failure,) = everyone["failures"]
    assert failure["count"] == 1 and failure["code"] != "unknown"

    hourly = out["hourly"].json()
    assert (hourly["bucket"], hourly["timezone"]) == ("hour", "UTC")
    assert hourly["buckets"][0].endswith("Z") or hourly["buckets"][0].endswith("+00:00")

    own = out["own"].json()
    assert own["account_id"] == acme.account_id
    assert (own["totals"]["calls"], own["totals"]["tokens_charged"]) == (3, 22)
    assert [a["name"] for a in own["top_accounts"]] == ["acme"]
    assert out["one"].json()["totals"]["calls"] == 1


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"bucket": "week"}, 422),
        ({"tz": "Mars/Olympus"}, 422),
        ({"since": "2026-01-01T00:00:00"}, 422),
        ({"since": "2026-01-01T00:00:00Z", "until": "2025-01-01T00:00:00Z"}, 422),
        ({"since": "2026-01-01T00:00:00Z", "until": "2026-03-01T00:00:00Z", "bucket": "hour"}, 422),
        ({"tz": "x" * 65}, 422),
        ({"tz": "America"}, 422),  # a folder of the zone database: was a 500
        ({"until": "0001-01-03T00:00:00Z"}, 422),  # seven days before it: was a 500
        (
            {
                "since": "9999-12-29T00:00:00Z",
                "until": "9999-12-30T23:00:00Z",
                "bucket": "day",
                "tz": "Pacific/Kiritimati",
            },
            422,
        ),
    ],
)
def test_bad_report_windows_are_invalid_input(
    container: bootstrap.Container, params: dict[str, str], status: int
) -> None:
    admin = new_customer(container, name="acme")

    async def scenario() -> Any:
        async with running_app(container) as client:
            return await client.get("/v1/reports/usage", params=params, headers=admin.headers)

    answer = run(scenario)
    assert answer.status_code == status, answer.text
    assert answer.json()["code"] == "invalid_input"


def test_a_user_key_may_not_read_reports(container: bootstrap.Container) -> None:
    acme = new_customer(container, name="acme")
    user = container.identity.create_key(
        account_id=acme.account_id, role=Role.USER, label="app", actor="cli"
    )

    async def scenario() -> Any:
        async with running_app(container) as client:
            anonymous = await client.get("/v1/reports/usage")
            as_user = await client.get("/v1/reports/usage", headers=bearer(user.api_key))
            return anonymous, as_user

    anonymous, as_user = run(scenario)
    assert anonymous.status_code == 401
    assert as_user.status_code == 403 and as_user.json()["code"] == "forbidden"
