"""``GET /v1/admin/price-books/fit`` over HTTP on jobs the gateway ran itself (on the
preview engine): the jobs' recorded sizes, options and times are what the fit reads,
and its proposed book, posted back to ``/activate``, prices the next quote."""

from __future__ import annotations

from typing import Any

from comfygate import bootstrap
from tests.e2e.gateway_app import bearer
from tests.jobs_support import finished, new_customer, png_bytes, run, running_app, submit

FIT = "/v1/admin/price-books/fit"
SIZES = [(64, 48), (320, 240), (640, 480), (96, 96)]


def test_a_fit_over_real_jobs_is_activated_and_prices_the_next_quote(
    container: bootstrap.Container,
) -> None:
    issued = container.identity.bootstrap_operator()
    assert issued is not None
    operator = bearer(issued.api_key)
    acme = new_customer(container, tokens=1000)

    async def scenario() -> dict[str, Any]:
        async with running_app(container) as client:
            for i in range(12):
                image = png_bytes(SIZES[i % 4], seed=i)
                accepted = await submit(client, acme, image, upscale=str(1 + i % 2))
                assert accepted.status_code == 202, accepted.text
                assert (await finished(client, acme, accepted.json()["id"]))["state"] == "succeeded"
            out = {
                "default": await client.get(FIT, headers=operator),
                "admin": await client.get(FIT, headers=acme.headers),
                "bad_rate": await client.get(
                    FIT, params={"tokens_per_second": "-2"}, headers=operator
                ),
                "fit": await client.get(
                    FIT,
                    params={"engine": "preview", "tokens_per_second": "1000", "version": "fit-api"},
                    headers=operator,
                ),
            }
            book = out["fit"].json()["price_book"]
            out["activate"] = await client.post(
                "/v1/admin/price-books/activate", json={"document": book}, headers=operator
            )
            out["quote"] = await client.post(
                "/v1/quotes",
                headers=acme.headers,
                files={"image": ("p.png", png_bytes((640, 480)), "image/png")},
                data={"capability": "colorize.person"},
            )
            return out

    out = run(scenario)
    # preview's times say nothing of GPU costs: by default it is not read
    assert out["default"].status_code == 422
    assert out["default"].json()["code"] == "invalid_input"
    assert out["admin"].status_code == 403
    assert out["bad_rate"].status_code == 422
    assert out["fit"].status_code == 200, out["fit"].text
    report = out["fit"].json()
    person = report["capabilities"][0]
    assert (report["jobs"], report["engines"], person["capability"]) == (
        12,
        ["preview"],
        "colorize.person",
    )
    assert person["fitted"] and person["samples"] + person["outliers"] == 12
    assert report["tokens_per_second"] == "1000" and not report["revenue_neutral"]
    assert out["activate"].status_code == 201, out["activate"].text
    assert out["quote"].status_code in (200, 201), out["quote"].text
    quote = out["quote"].json()
    assert quote["price_book_version"] == "fit-api"
    terms = {t["key"]: t["proposed"] for t in person["terms"]}
    assert quote["breakdown"][0]["amount"] == terms["base"]
