"""Quotes and price books over HTTP: JSON and multipart quotes, bad uploads, drafts."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.e2e.gateway_app import Gateway, Tenant, running_gateway


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[Gateway]:
    with running_gateway(tmp_path, max_upload_bytes=200_000) as g:
        yield g


@pytest.fixture
def acme(gw: Gateway) -> Tenant:
    return gw.tenant("acme")


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("L", (width, height), 128).save(out, "PNG")
    return out.getvalue()


def test_json_quote_follows_the_seed_example(gw: Gateway, acme: Tenant) -> None:
    made = gw.client.post(
        "/v1/quotes", json={"capability": "colorize.person", "width": 800, "height": 600},
        headers=acme.user,
    )  # fmt: skip
    assert made.status_code == 201
    quote = made.json()
    assert quote["tokens"] == 11 and quote["price_book_version"] == "default-1"
    assert quote["quote_id"].startswith("quote_") and quote["expires_at"] > quote["priced_at"]
    steps = [line["step"] for line in quote["breakdown"]]
    assert steps[:4] == ["base", "pixels", "option:upscale", "subtotal"]  # upscale=1: +0
    upscaled = gw.client.post(
        "/v1/quotes",
        json={
            "capability": "colorize.person",
            "width": 800,
            "height": 600,
            "options": {"upscale": 2},
        },
        headers=acme.user,
    )
    assert upscaled.json()["tokens"] == 16


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"capability": "colorize.cat", "width": 800, "height": 600}, "unknown_capability"),
        (
            {
                "capability": "colorize.person",
                "width": 800,
                "height": 600,
                "options": {"upscale": 9},
            },
            "invalid_option",
        ),
        (
            {
                "capability": "colorize.person",
                "width": 800,
                "height": 600,
                "options": {"sepia": True},
            },
            "invalid_option",
        ),
        ({"capability": "colorize.person", "width": 0, "height": 600}, "invalid_input"),
        ({"capability": "colorize.person"}, "invalid_input"),
    ],
)
def test_bad_quote_requests(gw: Gateway, acme: Tenant, body: dict[str, object], code: str) -> None:
    refused = gw.client.post("/v1/quotes", json=body, headers=acme.user)
    assert refused.status_code == 422 and refused.json()["code"] == code


@pytest.mark.parametrize("width", [60_000_000, 10**15])  # past the cap; past any column
def test_a_quote_for_more_pixels_than_an_upload_may_have_is_refused(
    gw: Gateway, acme: Tenant, width: int
) -> None:
    body = {"capability": "colorize.person", "width": width, "height": 1}
    refused = gw.client.post("/v1/quotes", json=body, headers=acme.user)
    assert refused.status_code == 413 and refused.json()["code"] == "too_many_pixels"


def test_malformed_json_is_invalid_input(gw: Gateway, acme: Tenant) -> None:
    refused = gw.client.post(
        "/v1/quotes",
        content=b"{not json",
        headers={**acme.user, "Content-Type": "application/json"},
    )
    assert refused.status_code == 422 and refused.json()["code"] == "invalid_input"


def test_multipart_quote_reads_the_real_size_and_keeps_nothing(gw: Gateway, acme: Tenant) -> None:
    """A declared size must be the real one, as on a job (it was ignored here)."""

    def quote(**declared: str) -> Any:
        return gw.client.post(
            "/v1/quotes",
            files={"image": ("photo.png", png(800, 600), "image/png")},
            data={"capability": "colorize.person", "upscale": "2", **declared},
            headers=acme.user,
        )

    made, matching = quote(), quote(width="800", height="600")
    assert made.status_code == 201, made.text
    assert (made.json()["width"], made.json()["height"], made.json()["tokens"]) == (800, 600, 16)
    assert matching.status_code == 201 and matching.json()["tokens"] == 16
    for declared, code in [
        ({"width": "10", "height": "10"}, "declared_size_mismatch"),
        ({"width": "10"}, "invalid_image_size"),
    ]:
        wrong = quote(**declared)
        assert wrong.status_code == 422 and wrong.json()["code"] == code
    tmp = Path(gw.container.settings.data_dir) / "tmp"
    assert not tmp.exists() or list(tmp.iterdir()) == []


@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        (b"", 400, "empty_upload"),
        (b"hello, I am not a picture" * 10, 415, "not_an_image"),
        (png(400, 300)[:-20], 422, "truncated_image"),
        (png(8, 8), 422, "image_too_small"),
        (bytes(300_000), 413, "upload_too_large"),
    ],
)
def test_bad_uploads_get_their_own_codes(
    gw: Gateway, acme: Tenant, payload: bytes, status: int, code: str
) -> None:
    refused = gw.client.post(
        "/v1/quotes",
        files={"image": ("x.png", payload, "image/png")},
        data={"capability": "colorize.person"},
        headers=acme.user,
    )
    assert (refused.status_code, refused.json()["code"]) == (status, code)
    tmp = Path(gw.container.settings.data_dir) / "tmp"
    assert not tmp.exists() or list(tmp.iterdir()) == []


@pytest.mark.parametrize(
    "options",
    ["[" * 30_000 + "]" * 30_000, '{"a":' * 10_000 + "1" + "}" * 10_000, "[2]", "not json"],
)
def test_multipart_options_that_are_not_a_shallow_json_object(
    gw: Gateway, acme: Tenant, options: str
) -> None:
    refused = gw.client.post(
        "/v1/quotes",
        files={"image": ("p.png", png(100, 100), "image/png")},
        data={"capability": "colorize.person", "options": options},
        headers=acme.user,
    )
    assert (refused.status_code, refused.json()["code"]) == (422, "invalid_input"), refused.text
    assert refused.json()["field"] == "options"


def test_multipart_without_an_image_or_capability(gw: Gateway, acme: Tenant) -> None:
    no_image = gw.client.post(
        "/v1/quotes", files={"other": ("a.txt", b"x")}, data={"capability": "colorize.person"},
        headers=acme.user,
    )  # fmt: skip
    assert no_image.status_code == 422 and "image" in no_image.json()["detail"]
    no_capability = gw.client.post(
        "/v1/quotes", files={"image": ("p.png", png(100, 100), "image/png")}, headers=acme.user
    )
    assert no_capability.status_code == 422 and no_capability.json()["code"] == "invalid_input"


DRAFT = """
version = "spring-2"
timezone = "Asia/Shanghai"
rounding = "half_up"
time_windows = []

[capabilities."colorize.person"]
base = 20
minimum = 10
coefficients = { megapixels = "2.0" }
"""


def test_price_books_validate_simulate_activate(gw: Gateway, acme: Tenant) -> None:
    base = "/v1/admin/price-books"
    broken = gw.client.post(
        f"{base}/validate", json={"document": {"version": ""}}, headers=gw.operator
    )
    assert broken.status_code == 200 and broken.json()["valid"] is False
    assert len(broken.json()["errors"]) >= 2  # every problem at once
    not_toml = gw.client.post(f"{base}/validate", json={"toml": "[[["}, headers=gw.operator)
    assert not_toml.json()["valid"] is False
    good = gw.client.post(f"{base}/validate", json={"toml": DRAFT}, headers=gw.operator)
    assert good.json() == {"valid": True, "errors": []}
    simulated = gw.client.post(
        f"{base}/simulate",
        json={"toml": DRAFT, "capability": "colorize.person", "width": 800, "height": 600},
        headers=gw.operator,
    )
    assert simulated.status_code == 200 and simulated.json()["tokens"] == 21
    quote = {"capability": "colorize.person", "width": 800, "height": 600}
    assert gw.client.post("/v1/quotes", json=quote, headers=acme.user).json()["tokens"] == 11
    assert (
        gw.client.post(f"{base}/activate", json={"toml": DRAFT}, headers=acme.admin).status_code
        == 403
    )
    activated = gw.client.post(f"{base}/activate", json={"toml": DRAFT}, headers=gw.operator)
    assert activated.status_code == 201 and activated.json()["version"] == "spring-2"
    assert activated.json()["left_out"] == []  # the default book itself
    own = DRAFT.replace('"spring-2"', '"acme-1"').replace("colorize.person", "colorize.building")
    for_acme = gw.client.post(
        f"{base}/activate",
        json={"toml": own, "account_id": acme.account_id, "effective_at": "2099-01-01T00:00Z"},
        headers=gw.operator,
    )
    assert for_acme.status_code == 201, for_acme.text
    assert for_acme.json()["left_out"] == ["capability colorize.person"]  # spring-2 has it
    for_no_one = gw.client.post(
        f"{base}/activate",
        json={"toml": DRAFT.replace('"spring-2"', '"x-1"'), "account_id": "acct_nobody"},
        headers=gw.operator,
    )
    assert for_no_one.status_code == 404 and for_no_one.json()["code"] == "account_not_found"
    after = gw.client.post("/v1/quotes", json=quote, headers=acme.user).json()
    assert (after["tokens"], after["price_book_version"]) == (21, "spring-2")
    dup = gw.client.post(f"{base}/activate", json={"toml": DRAFT}, headers=gw.operator)
    assert dup.status_code == 409 and dup.json()["code"] == "duplicate_price_book_version"
    invalid = gw.client.post(
        f"{base}/activate", json={"document": {"version": ""}}, headers=gw.operator
    )
    assert invalid.status_code == 422 and invalid.json()["code"] == "validation_failed"
    assert len(invalid.json()["errors"]) >= 2
    both = gw.client.post(
        f"{base}/validate", json={"toml": DRAFT, "document": {}}, headers=gw.operator
    )
    assert both.status_code == 422
    active = gw.client.get(f"{base}/active", headers=gw.operator).json()
    assert active["version"] == "spring-2" and active["document"]["version"] == "spring-2"
    assert [v["version"] for v in gw.client.get(base, headers=gw.operator).json()] == ["spring-2"]
    audit = gw.client.get("/v1/admin/audit", headers=gw.operator).json()["items"]
    assert any(e["action"] == "price_books.activate" and e["target"] == "spring-2" for e in audit)
