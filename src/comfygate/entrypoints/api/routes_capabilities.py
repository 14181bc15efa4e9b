"""``GET /v1/capabilities``: what the caller can ask for and how it is priced.

Every capability of the price book that prices the caller's account, with the terms
the account gets (its overrides and discount applied), each option's schema (what a
form needs to draw it) and surcharge, the book's time-of-day windows, and whether an
engine of this gateway serves it now. A capability added by data alone (a workflow and
a price-book entry) appears here with no change to any client, the user page included.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from comfygate.domain.pricing import Terms, terms_for
from comfygate.domain.pricing_document import price_book_to_document
from comfygate.domain.pricing_options import OptionSpec, plain, to_json_scalar
from comfygate.entrypoints.api.deps import ContainerDep, PrincipalDep, check_account_filter

router = APIRouter(prefix="/v1", tags=["quotes"])


class OptionOut(BaseModel):
    name: str
    type: str = Field(description="number, integer, boolean or choice")
    default: Any
    description: str
    min: str | None = None
    max: str | None = None
    choices: list[str] = Field(default_factory=list)
    surcharge: str = Field(description="tokens added when the option is on or above its step")
    surcharge_above: str | None = Field(
        default=None, description="numbers: the value past which the surcharge applies"
    )
    surcharge_per_unit: str = Field(default="0", description="numbers: tokens per unit above")
    choice_surcharges: dict[str, str] = Field(default_factory=dict)


class CapabilityOut(BaseModel):
    name: str
    description: str
    served: bool = Field(description="an engine of this gateway runs it now")
    base: str
    per_megapixel: str
    minimum: int
    discount_percent: str = Field(description="the account's discount on every request")
    options: list[OptionOut]


class TimeWindowOut(BaseModel):
    start: str
    end: str
    multiplier: str


class CapabilitiesOut(BaseModel):
    price_book_version: str
    timezone: str = Field(description="the time-of-day windows' zone")
    rounding: str
    time_windows: list[TimeWindowOut]
    capabilities: list[CapabilityOut]


def _option(spec: OptionSpec) -> OptionOut:
    def text(value: Decimal | None) -> str | None:
        return None if value is None else plain(value)

    above = spec.surcharge_above
    if above is None and spec.kind.value in ("number", "integer"):
        above = Decimal(str(spec.default))
    return OptionOut(
        name=spec.name,
        type=spec.kind.value,
        default=to_json_scalar(spec.default),
        description=spec.description,
        min=text(spec.minimum),
        max=text(spec.maximum),
        choices=list(spec.choices),
        surcharge=plain(spec.surcharge),
        surcharge_above=text(above),
        surcharge_per_unit=plain(spec.surcharge_per_unit),
        choice_surcharges={k: plain(v) for k, v in spec.choice_surcharges.items()},
    )


def _capability(terms: Terms, served: frozenset[str]) -> CapabilityOut:
    cap = terms.capability
    return CapabilityOut(
        name=cap.name,
        description=cap.description,
        served=cap.name in served,
        base=plain(terms.base),
        per_megapixel=plain(terms.coefficients.get("megapixels", Decimal(0))),
        minimum=terms.minimum,
        discount_percent=plain(terms.discount_percent),
        options=[_option(spec) for spec in cap.options.values()],
    )


@router.get(
    "/capabilities",
    response_model=CapabilitiesOut,
    summary="What can be asked for, and at what price, for the caller's account",
)
def capabilities(
    container: ContainerDep,
    principal: PrincipalDep,
    account_id: Annotated[
        str | None, Query(max_length=40, description="operators: another account's terms")
    ] = None,
) -> CapabilitiesOut:
    check_account_filter(container, principal, account_id)
    account = account_id or principal.account_id
    book = container.pricing.price_books.show(account_id=account).book
    served = container.jobs.dispatcher.served_capabilities()
    document = price_book_to_document(book)
    return CapabilitiesOut(
        price_book_version=book.version,
        timezone=book.timezone,
        rounding=book.rounding.value,
        time_windows=[TimeWindowOut(**w) for w in document["time_windows"]],
        capabilities=[_capability(t, served) for t in terms_for(book, account)],
    )
