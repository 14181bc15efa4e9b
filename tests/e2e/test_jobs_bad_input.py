"""Every bad submission gets its own 4xx code, moves no token and stores nothing.

Each case asserts the status, the problem code, that balance and ledger statement are
unchanged, and that no job row and no file (upload or job folder) is left behind.
"""

from __future__ import annotations

import io
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from comfygate import bootstrap
from tests.fakes import FakeClock
from tests.jobs_support import (
    CAPABILITY,
    Customer,
    FakeEngine,
    build,
    job_rows,
    new_customer,
    png_bytes,
    run,
    running_app,
    stored_files,
    submit,
)

MAX_UPLOAD = 200_000
MAX_PIXELS = 4_000_000


def _image(fmt: str, size: tuple[int, int] = (64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.new("L", size, 90).save(buf, fmt)
    return buf.getvalue()


Case = Callable[[httpx.AsyncClient, bootstrap.Container, Customer, FakeClock], Awaitable[Any]]


async def _post(client: httpx.AsyncClient, customer: Customer, image: bytes, **kw: Any) -> Any:
    return await submit(client, customer, image, **kw)


async def _no_key(client: httpx.AsyncClient, *_: Any) -> Any:
    files = {"image": ("a.png", png_bytes(), "image/png")}
    return await client.post("/v1/jobs", files=files, data={"capability": CAPABILITY})


async def _revoked_key(
    client: httpx.AsyncClient, container: bootstrap.Container, customer: Customer, _: Any
) -> Any:
    issued = container.identity.create_key(account_id=customer.account_id, actor="cli")
    container.identity.revoke_key(key_id=issued.key_id, actor="cli")
    headers = {"Authorization": f"Bearer {issued.api_key}"}
    files = {"image": ("a.png", png_bytes(), "image/png")}
    return await client.post(
        "/v1/jobs", headers=headers, files=files, data={"capability": CAPABILITY}
    )


async def _expired_quote(
    client: httpx.AsyncClient, container: bootstrap.Container, customer: Customer, clock: Any
) -> Any:
    quote = container.pricing.quotes.quote(
        capability=CAPABILITY, width=64, height=48, account_id=customer.account_id
    )
    clock.advance(seconds=container.settings.quote_lock_s + 1)
    return await _post(client, customer, png_bytes(), quote_id=quote.quote_id)


async def _foreign_quote(
    client: httpx.AsyncClient, container: bootstrap.Container, customer: Customer, _: Any
) -> Any:
    other = new_customer(container, tokens=100, name="other")
    quote = container.pricing.quotes.quote(
        capability=CAPABILITY, width=64, height=48, account_id=other.account_id
    )
    return await _post(client, customer, png_bytes(), quote_id=quote.quote_id)


async def _quote_for_another_size(
    client: httpx.AsyncClient, container: bootstrap.Container, customer: Customer, _: Any
) -> Any:
    quote = container.pricing.quotes.quote(
        capability=CAPABILITY, width=640, height=480, account_id=customer.account_id
    )
    return await _post(client, customer, png_bytes(), quote_id=quote.quote_id)


def simple(image: bytes, **fields: str) -> Case:
    async def case(client: httpx.AsyncClient, _c: Any, customer: Customer, _k: Any) -> Any:
        return await _post(client, customer, image, **fields)

    return case


async def _not_multipart(client: httpx.AsyncClient, _c: Any, customer: Customer, _k: Any) -> Any:
    return await client.post("/v1/jobs", headers=customer.headers, json={"capability": "x"})


async def _no_image_field(client: httpx.AsyncClient, _c: Any, customer: Customer, _k: Any) -> Any:
    return await client.post(
        "/v1/jobs",
        headers=customer.headers,
        files={"other": ("a.txt", b"hello", "text/plain")},
        data={"capability": CAPABILITY},
    )


CASES: dict[str, tuple[Case, int, str]] = {
    "empty": (simple(b""), 400, "empty_upload"),
    "not an image": (simple(b"hello, this is text and not a photo" * 4), 415, "not_an_image"),
    "truncated": (simple(png_bytes()[:-30]), 422, "truncated_image"),
    "unsupported": (simple(_image("GIF")), 415, "unsupported_format"),
    "too large": (simple(b"\x89PNG\r\n\x1a\n" + bytes(MAX_UPLOAD)), 413, "upload_too_large"),
    "too many pixels": (simple(png_bytes((2100, 2000))), 413, "too_many_pixels"),
    "too small": (simple(png_bytes((8, 8))), 422, "image_too_small"),
    "unknown capability": (
        simple(png_bytes(), capability="colorize.cat"),
        422,
        "unknown_capability",
    ),
    "missing capability": (simple(png_bytes(), capability=""), 422, "invalid_input"),
    "option out of range": (simple(png_bytes(), upscale="9"), 422, "invalid_option"),
    "option not a number": (simple(png_bytes(), upscale="big"), 422, "invalid_option"),
    "unknown option": (simple(png_bytes(), sharpen="1"), 422, "invalid_option"),
    "declared size mismatch": (
        simple(png_bytes(), width="800", height="600"),
        422,
        "declared_size_mismatch",
    ),
    # json.loads raises RecursionError, not ValueError, past the interpreter's limit.
    "options nested 30,000 deep": (
        simple(png_bytes(), options="[" * 30_000 + "]" * 30_000),
        422,
        "invalid_input",
    ),
    "options nested 33 deep": (
        simple(png_bytes(), options='{"upscale": ' + "[" * 32 + "2" + "]" * 32 + "}"),
        422,
        "invalid_input",
    ),
    "declared size malformed": (simple(png_bytes(), width="wide"), 422, "invalid_image_size"),
    # Digits to str.isdigit, not to int: once a 500.
    "declared size superscript": (
        simple(png_bytes(), width="\u00b2", height="2"),
        422,
        "invalid_image_size",
    ),
    "declared size of 5,000 digits": (
        simple(png_bytes(), width="9" * 5000, height="600"),
        422,
        "invalid_image_size",
    ),
    "unknown quote": (simple(png_bytes(), quote_id="quote_nope"), 404, "quote_not_found"),
    "expired quote": (_expired_quote, 410, "quote_expired"),
    "foreign quote": (_foreign_quote, 404, "quote_not_found"),  # as if none: no probing
    "quote for another request": (_quote_for_another_size, 422, "quote_mismatch"),
    "not multipart": (_not_multipart, 422, "invalid_input"),
    "no image field": (_no_image_field, 422, "invalid_input"),
    "missing key": (_no_key, 401, "unauthenticated"),
    "revoked key": (_revoked_key, 401, "unauthenticated"),
    "insufficient balance": (simple(png_bytes((1600, 1200))), 402, "insufficient_balance"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_submission_moves_nothing_and_stores_nothing(name: str, tmp_path: Path) -> None:
    case, status, code = CASES[name]
    clock = FakeClock()
    data_dir = tmp_path / "data"
    container = build(
        f"sqlite:///{tmp_path / 'db.sqlite'}",
        data_dir,
        clock=clock,
        engines=[FakeEngine()],
        max_upload_bytes=MAX_UPLOAD,
        max_image_pixels=MAX_PIXELS,
        min_image_side_px=16,
    )
    # 1600x1200 costs 10 + 1.92 x 2 = 13.84 -> 14 tokens; 12 do not afford it.
    customer = new_customer(container, tokens=12)

    async def scenario() -> httpx.Response:
        async with running_app(container) as client:
            before = container.accounts.balance(account_id=customer.account_id)
            statement = container.accounts.statement(account_id=customer.account_id)
            response: httpx.Response = await case(client, container, customer, clock)
            assert container.accounts.balance(account_id=customer.account_id) == before
            after = container.accounts.statement(account_id=customer.account_id)
            assert after == statement
            return response

    try:
        response = run(scenario)
        assert response.status_code == status, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["code"] == code
        assert job_rows(container) == 0
        assert stored_files(data_dir) == []
        assert container.accounts.reconcile().ok
    finally:
        container.close()


def test_insufficient_balance_lists_the_plans(tmp_path: Path) -> None:
    container = build(
        f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path / "data", engines=[FakeEngine()]
    )
    customer = new_customer(container, tokens=5)

    async def scenario() -> httpx.Response:
        async with running_app(container) as client:
            return await submit(client, customer, png_bytes())

    try:
        body = run(scenario).json()
        assert body["code"] == "insufficient_balance"
        assert body["required"] == 10 and body["available"] == 5
        assert {p["name"] for p in body["plans"]} >= {"monthly", "vip", "topup-500"}
    finally:
        container.close()
