"""Pricing: price books and the one function that turns a request into tokens.

Order of evaluation (SPEC section 3), each step a line of the breakdown:
base, pixels, options -> subtotal; x time-of-day multiplier; x (1 - account discount);
round; max(minimum). Arithmetic is ``Decimal`` in a fixed context (so a caller's
``decimal.getcontext()`` changes nothing); ``round_tokens`` is the only place in the
code base where an amount becomes an integer number of tokens.

Pure: no I/O. Price books are built from documents by ``pricing_validation``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import (
    ROUND_CEILING,
    ROUND_FLOOR,
    ROUND_HALF_UP,
    Context,
    Decimal,
    DecimalException,
    localcontext,
)
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from comfygate.domain.errors import (
    InvalidImageSizeError,
    InvalidInputError,
    PriceOutOfRangeError,
    UnknownCapabilityError,
)
from comfygate.domain.instants import in_range
from comfygate.domain.pricing_options import (
    ZERO,
    JsonScalar,
    OptionSpec,
    OptionValue,
    normalise_options,
    plain,
    to_json_scalar,
)

DEFAULT_TIMEZONE = "Asia/Shanghai"
DIMENSIONS = ("megapixels",)
"""What a capability may charge per unit of; the request gives each one's quantity."""

_ONE = Decimal(1)
_HUNDRED = Decimal(100)
_PIXELS_PER_MP = Decimal(1_000_000)
_CONTEXT = Context(prec=60)  # wide enough that no realistic price is ever rounded early
MAX_PRICE_TOKENS = 1_000_000_000
"""The most one request may cost (and the most any amount in a price book may be)."""
MINUTES_PER_DAY = 24 * 60


class Rounding(StrEnum):
    HALF_UP = "half_up"
    CEIL = "ceil"
    FLOOR = "floor"


_DECIMAL_ROUNDING = {
    Rounding.HALF_UP: ROUND_HALF_UP,
    Rounding.CEIL: ROUND_CEILING,
    Rounding.FLOOR: ROUND_FLOOR,
}


def round_tokens(amount: Decimal, mode: Rounding = Rounding.HALF_UP) -> int:
    """The one rounding function: a ``Decimal`` amount to whole tokens by ``mode``."""
    return int(amount.to_integral_value(rounding=_DECIMAL_ROUNDING[mode]))


@dataclass(frozen=True, slots=True)
class CapabilityPrice:
    """One capability's list price: base + coefficient x quantity per dimension + options."""

    name: str
    base: Decimal
    coefficients: Mapping[str, Decimal]
    minimum: int = 0
    options: Mapping[str, OptionSpec] = field(default_factory=dict)
    description: str = ""


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """``[start, end)`` in minutes of the local day; ``end <= start`` wraps midnight."""

    start_min: int
    end_min: int
    multiplier: Decimal

    def contains(self, minute: int) -> bool:
        if self.start_min < self.end_min:
            return self.start_min <= minute < self.end_min
        return minute >= self.start_min or minute < self.end_min

    def label(self) -> str:
        def hhmm(m: int) -> str:
            return f"{m // 60:02d}:{m % 60:02d}"

        return f"{hhmm(self.start_min)}-{hhmm(self.end_min)}"


@dataclass(frozen=True, slots=True)
class CapabilityOverride:
    """An account's negotiated changes to one capability's list price."""

    base: Decimal | None = None
    coefficients: Mapping[str, Decimal] = field(default_factory=dict)
    minimum: int | None = None


@dataclass(frozen=True, slots=True)
class AccountOverride:
    """An account's negotiated terms inside a price book."""

    discount_percent: Decimal = ZERO
    minimum: int | None = None
    capabilities: Mapping[str, CapabilityOverride] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PriceBook:
    """A validated, immutable price book version."""

    version: str
    capabilities: Mapping[str, CapabilityPrice]
    timezone: str = DEFAULT_TIMEZONE
    rounding: Rounding = Rounding.HALF_UP
    time_windows: tuple[TimeWindow, ...] = ()
    accounts: Mapping[str, AccountOverride] = field(default_factory=dict)
    description: str = ""

    def window_at(self, at: datetime) -> TimeWindow | None:
        """The time-of-day window in force at ``at`` (in the book's timezone), if any."""
        if not self.time_windows:
            return None
        local = at.astimezone(ZoneInfo(self.timezone))
        minute = local.hour * 60 + local.minute
        return next((w for w in self.time_windows if w.contains(minute)), None)


@dataclass(frozen=True, slots=True)
class BreakdownLine:
    """One step of a price: its name, the amount after (or added by) it, and why."""

    step: str
    amount: Decimal
    note: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"step": self.step, "amount": plain(self.amount), "note": self.note}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BreakdownLine:
        return cls(str(data["step"]), Decimal(str(data["amount"])), str(data.get("note", "")))


@dataclass(frozen=True, slots=True)
class Price:
    """What a request costs under one price book version, and why."""

    tokens: int
    breakdown: tuple[BreakdownLine, ...]
    price_book_version: str
    capability: str
    width: int
    height: int
    options: Mapping[str, JsonScalar]
    account_id: str | None
    priced_at: datetime

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (amounts as decimal strings, times ISO-8601)."""
        return {
            "tokens": self.tokens,
            "breakdown": [line.to_dict() for line in self.breakdown],
            "price_book_version": self.price_book_version,
            "capability": self.capability,
            "width": self.width,
            "height": self.height,
            "options": dict(self.options),
            "account_id": self.account_id,
            "priced_at": self.priced_at.isoformat(),
        }


def check_image_size(width: object, height: object) -> tuple[int, int]:
    """``(width, height)`` if both are positive ints, else ``InvalidImageSizeError``."""
    for name, value in (("width", width), ("height", height)):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise InvalidImageSizeError(
                f"{name} must be a positive whole number of pixels, got {value!r}"
            )
    assert isinstance(width, int) and isinstance(height, int)
    return width, height


_Terms = tuple[Decimal, Mapping[str, Decimal], int, Decimal]


@dataclass(frozen=True, slots=True)
class Terms:
    """What one capability costs one account under a book, its overrides applied."""

    capability: CapabilityPrice
    base: Decimal
    coefficients: Mapping[str, Decimal]
    minimum: int
    discount_percent: Decimal


def book_for_account(book: PriceBook, account_id: str) -> PriceBook:
    """``book`` as ``account_id`` is charged by it, written as a book of its own: each
    capability with the account's overrides in it (base, coefficients, and the minimum
    that wins), and the account's terms reduced to its discount. It prices the
    account's requests as ``book`` does, and no other account's terms are in it."""
    account = book.accounts.get(account_id)
    if account is None:
        return replace(book, accounts={})
    capabilities = {}
    for name, cap in book.capabilities.items():
        base, coefficients, minimum, _ = _terms(book, cap, account_id)
        capabilities[name] = replace(
            cap, base=base, coefficients=dict(coefficients), minimum=minimum
        )
    kept = (
        {account_id: AccountOverride(account.discount_percent)} if account.discount_percent else {}
    )
    return replace(book, capabilities=capabilities, accounts=kept)


def terms_for(book: PriceBook, account_id: str | None) -> list[Terms]:
    """Every capability of ``book`` as ``account_id`` (None: anyone) is charged for it."""
    return [Terms(cap, *_terms(book, cap, account_id)) for cap in book.capabilities.values()]


def _terms(book: PriceBook, cap: CapabilityPrice, account_id: str | None) -> _Terms:
    """Base, coefficients, minimum and discount for ``account_id`` (overrides applied)."""
    account = book.accounts.get(account_id) if account_id is not None else None
    if account is None:
        return cap.base, cap.coefficients, cap.minimum, ZERO
    over = account.capabilities.get(cap.name, CapabilityOverride())
    base = over.base if over.base is not None else cap.base
    minimum = next(m for m in (over.minimum, account.minimum, cap.minimum) if m is not None)
    return base, {**cap.coefficients, **over.coefficients}, minimum, account.discount_percent


def _list_price(
    cap: CapabilityPrice,
    base: Decimal,
    coefficients: Mapping[str, Decimal],
    pixels: int,
    chosen: Mapping[str, OptionValue],
) -> list[BreakdownLine]:
    """The additive lines: base, pixels, then one line per option, what it adds or
    nothing (a capability without options has one ``options`` line of zero)."""
    megapixels = Decimal(pixels) / _PIXELS_PER_MP
    per_mp = coefficients.get("megapixels", ZERO)
    lines = [
        BreakdownLine("base", base, f"{cap.name} base"),
        BreakdownLine(
            "pixels", megapixels * per_mp, f"{plain(megapixels)} MP x {plain(per_mp)} per MP"
        ),
    ]
    for name, value in chosen.items():
        extra = cap.options[name].surcharge_for(value)
        lines.append(BreakdownLine(f"option:{name}", extra, f"{name}={to_json_scalar(value)}"))
    if not chosen:
        lines.append(BreakdownLine("options", ZERO, "no options"))
    return lines


def compute_price(
    book: PriceBook,
    *,
    capability: str,
    width: int,
    height: int,
    options: Mapping[str, object] | None = None,
    account_id: str | None = None,
    at: datetime,
) -> Price:
    """Price one request with ``book`` at time ``at`` for ``account_id`` (None: list price).

    Raises ``UnknownCapabilityError``, ``InvalidImageSizeError``, ``InvalidOptionError``
    or ``PriceOutOfRangeError``.
    """
    cap = book.capabilities.get(capability)
    if cap is None:
        known = ", ".join(sorted(book.capabilities))
        raise UnknownCapabilityError(
            f"unknown capability {capability!r} (known: {known})", capability=capability
        )
    width, height = check_image_size(width, height)
    if at.tzinfo is None:
        raise InvalidInputError("the time of a quote must be timezone-aware")
    if not in_range(at):
        raise InvalidInputError(f"the time of a quote is out of range: {at.isoformat()}")
    chosen = normalise_options(cap.options, options)
    base, coefficients, minimum, discount = _terms(book, cap, account_id)
    try:
        lines, rounded = _priced(
            book, cap, base, coefficients, width * height, chosen, discount, at
        )
    except DecimalException:  # an exponent past what Decimal holds: far out of range
        lines, rounded = [], MAX_PRICE_TOKENS + 1
    if rounded > MAX_PRICE_TOKENS:
        raise PriceOutOfRangeError(
            f"this request would cost more than {MAX_PRICE_TOKENS} tokens; check its options",
            capability=capability,
        )
    tokens = max(rounded, minimum)
    applied = "applied" if tokens > rounded else "not reached"
    lines.append(BreakdownLine("minimum", Decimal(tokens), f"minimum {minimum} ({applied})"))
    return Price(
        tokens=tokens,
        breakdown=tuple(lines),
        price_book_version=book.version,
        capability=capability,
        width=width,
        height=height,
        options={name: to_json_scalar(value) for name, value in chosen.items()},
        account_id=account_id,
        priced_at=at,
    )


def _priced(
    book: PriceBook,
    cap: CapabilityPrice,
    base: Decimal,
    coefficients: Mapping[str, Decimal],
    pixels: int,
    chosen: Mapping[str, OptionValue],
    discount: Decimal,
    at: datetime,
) -> tuple[list[BreakdownLine], int]:
    """The lines up to rounding, and the rounded amount (before the minimum)."""
    with localcontext(_CONTEXT):
        lines = _list_price(cap, base, coefficients, pixels, chosen)
        amount = sum((line.amount for line in lines), ZERO)
        lines.append(BreakdownLine("subtotal", amount, "base + pixels + options"))
        window = book.window_at(at)
        factor = window.multiplier if window is not None else _ONE
        amount *= factor
        why = f"{window.label()} {book.timezone}" if window else "no time-of-day window"
        lines.append(BreakdownLine("time_of_day", amount, f"x{plain(factor)} ({why})"))
        amount *= _ONE - discount / _HUNDRED
        lines.append(BreakdownLine("discount", amount, f"-{plain(discount)}% account discount"))
    if amount >= MAX_PRICE_TOKENS + 1:  # out of range however it rounds; not an int
        return lines, MAX_PRICE_TOKENS + 1
    rounded = round_tokens(amount, book.rounding)
    lines.append(BreakdownLine("rounding", Decimal(rounded), book.rounding.value))
    return lines, rounded


def left_out(own: PriceBook, default: PriceBook, account_id: str | None = None) -> list[str]:
    """What an account's own book does not offer that the default does: its requests
    are priced by its own book alone, so these become unknown to the account, and
    the default book's terms for the account (a discount, say) no longer apply."""
    gaps = []
    for name, cap in sorted(default.capabilities.items()):
        mine = own.capabilities.get(name)
        if mine is None:
            gaps.append(f"capability {name}")
            continue
        gaps += [f"option {name}.{o}" for o in sorted(cap.options) if o not in mine.options]
    if account_id in default.accounts and account_id not in own.accounts:
        gaps.append(f"terms of its own (accounts.{account_id})")
    return gaps
