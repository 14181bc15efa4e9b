"""The API's error table and language choice: every domain code maps, in both languages."""

from __future__ import annotations

import pytest

from comfygate.domain import errors as de
from comfygate.entrypoints.api import messages
from comfygate.entrypoints.api.errors import status_for


def _all_error_classes() -> list[type[de.ComfygateError]]:
    found: list[type[de.ComfygateError]] = []
    pending: list[type[de.ComfygateError]] = [de.ComfygateError]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return [c for c in found if c.__module__ == de.__name__]


@pytest.mark.parametrize("cls", _all_error_classes(), ids=lambda c: c.__name__)
def test_every_domain_error_has_a_status_and_both_titles(cls: type[de.ComfygateError]) -> None:
    error = cls.__new__(cls)
    assert 400 <= status_for(error) < 600
    assert status_for(error) != 500, f"{cls.__name__} falls through to 500"
    assert cls.code in messages.TITLES, f"no title for {cls.code}"
    en, zh = messages.TITLES[cls.code]
    assert en and zh and en != zh


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("insufficient_balance", 402),
        ("unauthenticated", 401),
        ("forbidden", 403),
        ("job_not_found", 404),
        ("account_not_found", 404),
        ("idempotency_conflict", 409),
        ("invalid_job_state", 409),
        ("quote_expired", 410),
        ("upload_too_large", 413),
        ("unsupported_format", 415),
        ("invalid_input", 422),
        ("rate_limited", 429),
        ("worker_unavailable", 503),
        ("empty_upload", 400),
    ],
)
def test_status_table(code: str, status: int) -> None:
    (cls,) = [c for c in _all_error_classes() if c.code == code]
    assert status_for(cls.__new__(cls)) == status


def test_an_unlisted_subclass_takes_its_parents_status() -> None:
    class NewKindOfNotFoundError(de.NotFoundError):
        code = "brand_new_thing_not_found"

    assert status_for(NewKindOfNotFoundError("x")) == 404


@pytest.mark.parametrize(
    ("header", "language"),
    [
        (None, "en"),
        ("", "en"),
        ("zh-CN", "zh-Hans"),
        ("zh", "zh-Hans"),
        ("zh-Hans-CN,zh;q=0.9", "zh-Hans"),
        ("en-US,en;q=0.9,zh-CN;q=0.8", "en"),
        ("zh-CN;q=0.5,en;q=0.9", "en"),
        ("fr-FR,zh-CN;q=0.7", "zh-Hans"),
        ("zh-TW", "en"),
        ("zh-Hant,zh-CN;q=0.5", "zh-Hans"),
        ("de, *;q=0.1", "en"),
        ("zh-CN;q=abc", "en"),
        # Once the other way round: Q is q, parameters may come before it, nan and out
        # of range weights are unreadable, and a Simplified script beats a region.
        ("zh;Q=0", "en"),
        ("zh;level=1;q=0", "en"),
        ("zh;q=nan", "en"),
        ("zh;q=2", "en"),
        ("zh-Hans-HK", "zh-Hans"),
        ("zh-Hans-TW", "zh-Hans"),
        ("zh-Hant-CN", "en"),
    ],
)
def test_choose_language(header: str | None, language: str) -> None:
    assert messages.choose_language(header) == language


def test_chinese_detail_keeps_the_specifics() -> None:
    detail = messages.detail("insufficient_balance", messages.ZH, "need 11 tokens, have 3")
    assert detail.startswith("余额不足") and "need 11 tokens, have 3" in detail
    assert messages.detail("insufficient_balance", messages.EN, "m") == "m"


@pytest.mark.parametrize(
    ("cause", "status"),
    [
        ("PostgreSQL text fields cannot contain NUL (0x00) bytes", 422),
        ("division by zero", 500),  # a server bug: not the client's to fix
    ],
)
def test_a_database_data_error_is_the_clients_only_for_a_nul(cause: str, status: int) -> None:
    import sqlalchemy as sa
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from comfygate.entrypoints.api.errors import install_error_handlers

    app = FastAPI()
    install_error_handlers(app)

    @app.get("/boom")
    def boom() -> None:
        raise sa.exc.DataError("SELECT 1", None, Exception(cause))

    response = TestClient(app, raise_server_exceptions=False).get("/boom")
    assert response.status_code == status
    assert response.json()["code"] == ("invalid_input" if status == 422 else "internal_error")
