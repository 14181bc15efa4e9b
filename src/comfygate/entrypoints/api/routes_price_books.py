"""Price books (operator): validate a draft, simulate a quote with it, activate it,
show the active version and the history, and fit cost models to propose the next one.

A draft is sent either as a JSON ``document`` (the TOML's tables as JSON) or as the
``toml`` text itself. Validation returns every problem at once; activation refuses an
invalid book with 422 ``validation_failed`` listing them all.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Query, status
from pydantic import BaseModel, ConfigDict, Field, model_validator

from comfygate.domain.errors import ValidationFailedError
from comfygate.domain.pricing import MAX_PRICE_TOKENS
from comfygate.domain.pricing_document import parse_toml, price_book_to_document
from comfygate.entrypoints.api.deps import ContainerDep, OperatorDep
from comfygate.entrypoints.api.schemas_costs import CostFitOut
from comfygate.services.quoting import PriceBookRecord

router = APIRouter(prefix="/v1/admin/price-books", tags=["price books"])


class Draft(BaseModel):
    model_config = ConfigDict(extra="forbid")
    document: dict[str, Any] | None = None
    toml: str | None = Field(default=None, max_length=500_000)  # within the body limit

    @model_validator(mode="after")
    def _one_form(self) -> Draft:
        if (self.document is None) == (self.toml is None):
            raise ValueError("give exactly one of document or toml")
        return self

    def parsed(self) -> dict[str, Any]:
        return self.document if self.document is not None else parse_toml(self.toml or "")


class SimulateIn(Draft):
    capability: str
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    options: dict[str, Any] = Field(default_factory=dict)
    account_id: str | None = None
    at: datetime | None = None


class ActivateIn(Draft):
    effective_at: datetime | None = None
    account_id: str | None = Field(default=None, description="an enterprise account's own book")


class ValidationOut(BaseModel):
    valid: bool
    errors: list[str]


def _record(record: PriceBookRecord, *, with_document: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "version": record.book.version,
        "account_id": record.account_id,
        "effective_at": record.effective_at,
        "created_at": record.created_at,
        "source": record.source,
    }
    if with_document:
        out["document"] = price_book_to_document(record.book)
    return out


@router.post("/validate", response_model=ValidationOut, summary="Every problem with a draft")
def validate(body: Draft, container: ContainerDep, principal: OperatorDep) -> ValidationOut:
    try:
        errors = container.pricing.price_books.validate(body.parsed())
    except ValidationFailedError as exc:  # not even TOML
        errors = exc.errors
    return ValidationOut(valid=not errors, errors=errors)


@router.post("/simulate", summary="Price a request with a draft, without activating it")
def simulate(body: SimulateIn, container: ContainerDep, principal: OperatorDep) -> dict[str, Any]:
    price = container.pricing.price_books.simulate(
        body.parsed(),
        capability=body.capability,
        width=body.width,
        height=body.height,
        options=body.options,
        account_id=body.account_id,
        at=body.at,
    )
    return price.to_dict()


@router.post(
    "/activate",
    status_code=status.HTTP_201_CREATED,
    summary="Store a draft as a new version in effect from effective_at (default now)",
)
def activate(body: ActivateIn, container: ContainerDep, principal: OperatorDep) -> dict[str, Any]:
    record = container.pricing.price_books.activate(
        body.parsed(), effective_at=body.effective_at, account_id=body.account_id
    )
    container.audit.record(
        actor=principal,
        action="price_books.activate",
        target=record.book.version,
        account_id=record.account_id,
        details={"effective_at": record.effective_at, "account_id": record.account_id},
    )
    # What the account loses against the default book: priced by its own book alone.
    return {**_record(record), "left_out": container.pricing.price_books.left_out(record)}


@router.get("/active", summary="The version pricing an account's (or the default) requests now")
def active(
    container: ContainerDep,
    principal: OperatorDep,
    account_id: Annotated[str | None, Query(max_length=40)] = None,
) -> dict[str, Any]:
    return _record(container.pricing.price_books.show(account_id=account_id), with_document=True)


@router.get("", summary="Stored versions, newest first")
def history(
    container: ContainerDep,
    principal: OperatorDep,
    account_id: Annotated[str | None, Query(max_length=40)] = None,
) -> list[dict[str, Any]]:
    return [_record(r) for r in container.pricing.price_books.history(account_id=account_id)]


@router.get(
    "/fit",
    response_model=CostFitOut,
    summary="Cost models fitted from the jobs that ran, and the book they propose",
)
def fit(
    container: ContainerDep,
    principal: OperatorDep,
    since: Annotated[
        datetime | None, Query(description="inclusive, ISO-8601 with zone; default: 30 days ago")
    ] = None,
    until: Annotated[
        datetime | None, Query(description="exclusive, ISO-8601 with zone; default: now")
    ] = None,
    engine: Annotated[
        list[str] | None,
        Query(max_length=8, description="only these engines; default: every one but preview"),
    ] = None,
    tokens_per_second: Annotated[
        Decimal | None,
        Query(
            gt=0,
            le=MAX_PRICE_TOKENS,
            allow_inf_nan=False,
            description="default: the rate at which the fitted jobs cost what they cost now",
        ),
    ] = None,
    version: Annotated[
        str | None, Query(max_length=64, description="the proposal's; default: fit-DATE-TIME")
    ] = None,
    account_id: Annotated[
        str | None,
        Query(max_length=40, description="fit this account's jobs and propose its own book"),
    ] = None,
) -> CostFitOut:
    """Nothing is stored: post the answer's ``price_book`` to ``/activate`` as its
    ``document`` (with the ``account_id``, for an account's fit) to put it in force."""
    report = container.cost_fit.fit(
        since=since,
        until=until,
        engines=engine,
        tokens_per_second=tokens_per_second,
        version=version,
        account_id=account_id,
    )
    return CostFitOut.of(report)
