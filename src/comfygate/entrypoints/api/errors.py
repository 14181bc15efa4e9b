"""One table from domain error codes to HTTP status, and problem+json responses.

Nothing below the entrypoints knows HTTP: services raise ``ComfygateError`` subclasses
with a stable ``code``; here the code (or, for a code not in the table, the nearest
ancestor's) picks the status. Bodies are ``application/problem+json`` (RFC 9457) with
``type``, ``title``, ``status``, ``detail``, ``code`` and the error's details, in the
language the client prefers (English or Simplified Chinese).

Another account's resource is always ``404`` (never ``403``) so ids cannot be probed;
``403`` only means "your role may not do this".
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
import structlog
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from comfygate.domain.errors import (
    AuthenticationError,
    ComfygateError,
    InsufficientBalanceError,
    InvalidSignatureError,
    RateLimitedError,
)
from comfygate.entrypoints.api import messages
from comfygate.entrypoints.api.logs import loggable_path

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "https://comfygate.dev/problems/"

STATUS_BY_CODE: dict[str, int] = {
    "error": 400,
    # input
    "invalid_input": 422,
    "validation_failed": 422,
    "unknown_capability": 422,
    "invalid_option": 422,
    "invalid_image_size": 422,
    "price_out_of_range": 422,
    "grant_already_expired": 422,
    "invalid_image": 422,
    "empty_upload": 400,
    "not_an_image": 415,
    "unsupported_format": 415,
    "truncated_image": 422,
    "corrupt_image": 422,
    "upload_too_large": 413,
    "request_too_large": 413,
    "too_many_pixels": 413,
    "image_too_small": 422,
    "declared_size_mismatch": 422,
    "payment_mismatch": 422,
    "quote_mismatch": 422,
    # who
    "unauthenticated": 401,
    "invalid_signature": 401,
    "forbidden": 403,
    "not_found": 404,
    # money and state
    "insufficient_balance": 402,
    "ledger_error": 409,
    "hold_not_open": 409,
    "capture_exceeds_hold": 409,
    "idempotency_conflict": 409,
    "invalid_job_state": 409,
    "invalid_order_state": 409,
    "duplicate_price_book_version": 409,
    "quote_expired": 410,
    "result_expired": 410,
    "share_link_expired": 410,
    "concurrency_limit": 429,
    "rate_limited": 429,
    # workers (rarely on the request path: most worker failures end up in the job)
    "worker_error": 502,
    "workflow_error": 502,
    "worker_unavailable": 503,
    "engine_setup_failed": 503,
    "job_timeout": 504,
    # deployment: a gateway whose schema does not match its code
    "schema_mismatch": 503,
    "schema_out_of_date": 503,
    "schema_ahead_of_code": 503,
}


def status_for(error: ComfygateError) -> int:
    """The status of ``error``'s code, else of its nearest ancestor's code."""
    for cls in type(error).__mro__:
        code = getattr(cls, "code", None)
        if isinstance(code, str) and code in STATUS_BY_CODE:
            return STATUS_BY_CODE[code]
    return 500


def problem(
    request: Request,
    *,
    status: int,
    code: str,
    message: str,
    extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """A problem+json response in the client's language."""
    language = messages.choose_language(request.headers.get("accept-language"))
    body: dict[str, Any] = {
        "type": TYPE_BASE + code,
        "title": messages.title(code, language),
        "status": status,
        "detail": messages.detail(code, language, message),
        "code": code,
        "instance": request.url.path,
    }
    request_id = getattr(request.state, "request_id", None)
    if request_id:
        body["request_id"] = request_id
    for key, value in (extra or {}).items():
        body.setdefault(key, value)
    return JSONResponse(
        jsonable_encoder(body),
        status_code=status,
        media_type=PROBLEM_JSON,
        headers={"Content-Language": language, **(headers or {})},
    )


def _plans_to_buy(request: Request) -> list[dict[str, Any]]:
    catalog = request.app.state.container.plans.catalog
    return [
        {"name": p.name, "title": p.title, "kind": p.kind, "tokens": p.tokens, "price": p.price}
        for p in catalog.plans.values()
    ]


async def handle_domain_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ComfygateError)
    extra = dict(exc.details)
    headers: dict[str, str] = {}
    if isinstance(exc, InsufficientBalanceError):
        extra.setdefault("plans", _plans_to_buy(request))
    if isinstance(exc, RateLimitedError):
        headers["Retry-After"] = str(exc.retry_after_s)
    if isinstance(exc, AuthenticationError) and not isinstance(exc, InvalidSignatureError):
        headers["WWW-Authenticate"] = "Bearer"
    return problem(
        request,
        status=status_for(exc),
        code=exc.code,
        message=exc.message,
        extra=extra,
        headers=headers,
    )


async def handle_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": e.get("type")}
        for e in exc.errors()
    ]
    summary = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
    return problem(
        request, status=422, code="invalid_input", message=summary, extra={"errors": errors}
    )


async def handle_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if isinstance(exc.__cause__, ComfygateError):  # FastAPI's 400 for a body it could
        return await handle_domain_error(request, exc.__cause__)  # not read: say why
    # 400: FastAPI's for a body it could not parse (JSON nested past the parser's
    # depth, say): the client's input, as any other body we refuse.
    code = {
        400: "invalid_input",
        401: "unauthenticated",
        404: "not_found",
        405: "method_not_allowed",
    }.get(exc.status_code, "error")
    return problem(
        request,
        status=exc.status_code,
        code=code,
        message=str(exc.detail),
        headers=dict(exc.headers or {}),
    )


async def handle_data_error(request: Request, exc: Exception) -> JSONResponse:
    """A NUL character in text, which PostgreSQL does not take (the driver says so
    before sending it): the client's input, so 422; the transaction it was in rolled
    back. Any other value the database refuses is a server bug: 500, logged."""
    if "NUL" not in str(exc):
        return await handle_unexpected(request, exc)
    structlog.get_logger("comfygate.api").info("nul_in_text", path=loggable_path(request.scope))
    message = "a value has a NUL character, which the database does not take"
    return problem(request, status=422, code="invalid_input", message=message)


async def handle_unexpected(request: Request, exc: Exception) -> JSONResponse:
    structlog.get_logger("comfygate.api").exception(
        "unhandled_error", path=loggable_path(request.scope)
    )
    return problem(request, status=500, code="internal_error", message="internal server error")


def install_error_handlers(app: FastAPI) -> None:
    """Make every error leave the app as problem+json."""
    app.add_exception_handler(ComfygateError, handle_domain_error)
    app.add_exception_handler(RequestValidationError, handle_validation_error)
    app.add_exception_handler(StarletteHTTPException, handle_http_error)
    app.add_exception_handler(sa.exc.DataError, handle_data_error)
    app.add_exception_handler(Exception, handle_unexpected)
