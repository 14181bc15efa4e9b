"""``POST /v1/quotes``: the price of a request, locked for a few minutes under an id.

Two forms. JSON ``{capability, width, height, options}`` prices declared dimensions.
A multipart upload (``image`` file, ``capability``, optional ``options`` as a JSON
object, any other text field as an option such as ``upscale``) prices the real
dimensions read from the image header; the upload is deleted once inspected, since a
quote stores nothing but the price.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Request, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from comfygate.adapters.images import inspect_image
from comfygate.bootstrap import Container
from comfygate.domain.errors import InvalidInputError
from comfygate.domain.pricing_quotes import Quote
from comfygate.entrypoints.api.deps import PrincipalDep, get_container, run_on_hot_path
from comfygate.entrypoints.api.uploads import declared_size, form_options, read_upload
from comfygate.services.identity_types import Principal

router = APIRouter(prefix="/v1", tags=["quotes"])


class QuoteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    capability: str = Field(min_length=1, max_length=64, examples=["colorize.person"])
    width: int = Field(gt=0, examples=[800])
    height: int = Field(gt=0, examples=[600])
    options: dict[str, Any] = Field(default_factory=dict, examples=[{"upscale": 2}])


class BreakdownLineOut(BaseModel):
    step: str
    amount: str
    note: str


class QuoteOut(BaseModel):
    quote_id: str
    tokens: int
    breakdown: list[BreakdownLineOut]
    price_book_version: str
    capability: str
    width: int
    height: int
    options: dict[str, Any]
    priced_at: str
    expires_at: str


def _out(quote: Quote) -> Response:
    # Serialised here, once, by pydantic-core; returning a Response skips FastAPI's
    # second validation pass against ``response_model`` (kept for the OpenAPI schema).
    data = quote.to_dict()
    data.pop("account_id", None)
    body = QuoteOut.model_validate(data).model_dump_json()
    return Response(body, status_code=status.HTTP_201_CREATED, media_type="application/json")


def _quote(container: Container, principal: Principal, body: QuoteIn) -> Response:
    quote = container.pricing.quotes.quote(
        capability=body.capability,
        width=body.width,
        height=body.height,
        options=body.options,
        account_id=principal.account_id,
    )
    return _out(quote)


async def _quote_upload(request: Request, container: Container, principal: Principal) -> Response:
    settings = container.settings
    form = await read_upload(
        request,
        file_field="image",
        dest_dir=Path(settings.data_dir) / "tmp",
        max_bytes=settings.max_upload_bytes,
    )
    try:
        info = await anyio.to_thread.run_sync(
            lambda: inspect_image(
                form.file.path,
                max_pixels=settings.max_image_pixels,
                min_side_px=settings.min_image_side_px,
                declared=declared_size(form.fields),
            )
        )
    finally:
        form.file.path.unlink(missing_ok=True)
    body = QuoteIn.model_construct(
        capability=form.fields.get("capability", ""),
        width=info.width,
        height=info.height,
        options=form_options(form.fields),
    )
    if not body.capability:
        raise InvalidInputError("the form needs a capability field", field="capability")
    return await run_on_hot_path(request, functools.partial(_quote, container, principal, body))


@router.post(
    "/quotes",
    response_model=QuoteOut,
    status_code=status.HTTP_201_CREATED,
    summary="Price a request and lock the price (JSON or a multipart image upload)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": QuoteIn.model_json_schema()},
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["image", "capability"],
                        "properties": {
                            "image": {"type": "string", "format": "binary"},
                            "capability": {"type": "string"},
                            "options": {"type": "string", "description": "a JSON object"},
                            "upscale": {"type": "string"},
                            "width": {"type": "integer", "description": "must match the image"},
                            "height": {"type": "integer", "description": "must match the image"},
                        },
                    }
                },
            },
        }
    },
)
async def create_quote(request: Request, principal: PrincipalDep) -> Response:
    # The container straight from the app, not as a dependency: the authentication
    # dependency has it already, and each dependency costs a resolution per request.
    container = get_container(request)
    content_type = request.headers.get("content-type", "").lower()  # (media types are
    if content_type.startswith("multipart/form-data"):  # case-insensitive)
        return await _quote_upload(request, container, principal)
    try:
        body = QuoteIn.model_validate_json(await request.body())
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from None
    return await run_on_hot_path(request, functools.partial(_quote, container, principal, body))
