"""``GET /v1/capabilities``: the capabilities and terms of the book pricing the caller's
account, readable with any key, and a capability added by data appearing with no code."""

from __future__ import annotations

import copy
from importlib import resources
from typing import Any

from comfygate.domain.pricing_document import parse_toml
from tests.e2e.gateway_app import Gateway

PATH = "/v1/capabilities"


def default_doc() -> dict[str, Any]:
    text = resources.files("comfygate").joinpath("data", "price_book.toml").read_text("utf-8")
    return parse_toml(text)


def test_a_user_reads_the_default_terms_and_each_options_schema(gw: Gateway) -> None:
    acme = gw.tenant("acme")
    got = gw.client.get(PATH, headers=acme.user)
    assert got.status_code == 200, got.text
    body = got.json()
    assert (body["price_book_version"], body["timezone"], body["rounding"]) == (
        "default-1", "Asia/Shanghai", "half_up",
    )  # fmt: skip
    person, building = body["capabilities"]
    assert (person["name"], person["base"], person["per_megapixel"], person["minimum"]) == (
        "colorize.person", "10", "2", 10,
    )  # fmt: skip
    assert person["served"] and building["served"] and building["base"] == "15"
    (upscale,) = person["options"]
    assert upscale == {
        "name": "upscale", "type": "number", "default": 1,
        "description": "Upscale factor of the result", "min": "1", "max": "4", "choices": [],
        "surcharge": "5", "surcharge_above": "1", "surcharge_per_unit": "0",
        "choice_surcharges": {},
    }  # fmt: skip
    assert gw.client.get(PATH).status_code == 401


def test_an_enterprise_book_gives_its_own_terms_and_new_capabilities(gw: Gateway) -> None:
    acme, other = gw.tenant("acme-ent"), gw.tenant("other")
    doc = copy.deepcopy(default_doc())
    doc["version"] = "acme-ent-1"
    doc["capabilities"]["restore.scratches"] = {"base": 20, "minimum": 20, "coefficients": {}}
    doc["accounts"] = {
        acme.account_id: {
            "discount_percent": "12.5",
            "capabilities": {"colorize.person": {"base": "8", "minimum": 8}},
        }
    }
    activated = gw.client.post(
        "/v1/admin/price-books/activate",
        json={"document": doc, "account_id": acme.account_id},
        headers=gw.operator,
    )
    assert activated.status_code == 201, activated.text
    mine = gw.client.get(PATH, headers=acme.user).json()
    assert mine["price_book_version"] == "acme-ent-1"
    by_name = {c["name"]: c for c in mine["capabilities"]}
    person, scratches = by_name["colorize.person"], by_name["restore.scratches"]
    assert (person["base"], person["minimum"], person["discount_percent"]) == ("8", 8, "12.5")
    assert by_name["colorize.building"]["base"] == "15"  # not overridden
    assert not scratches["served"] and scratches["options"] == []  # no engine runs it
    theirs = gw.client.get(PATH, headers=other.user).json()
    assert theirs["price_book_version"] == "default-1"
    assert len(theirs["capabilities"]) == 2
    seen = gw.client.get(PATH, params={"account_id": acme.account_id}, headers=gw.operator)
    assert seen.json()["price_book_version"] == "acme-ent-1"
    peek = gw.client.get(PATH, params={"account_id": acme.account_id}, headers=other.admin)
    assert peek.status_code == 404 and peek.json()["code"] == "account_not_found"
