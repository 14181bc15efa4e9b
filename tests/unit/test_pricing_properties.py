"""Properties of pricing that must hold for any book and any request (hypothesis)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from comfygate.domain.pricing import (
    PriceBook,
    Rounding,
    book_for_account,
    compute_price,
    round_tokens,
)
from comfygate.domain.pricing_document import price_book_to_document
from comfygate.domain.pricing_validation import parse_price_book

amounts = st.decimals(min_value=0, max_value=1000, places=3, allow_nan=False)
sizes = st.integers(min_value=1, max_value=20_000)
times = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2035, 1, 1), timezones=st.just(UTC)
)


@st.composite
def books(draw: st.DrawFn) -> dict[str, Any]:
    """A valid price book document with one capability, maybe a window and a discount."""
    start = draw(st.integers(0, 23 * 60))
    length = draw(st.integers(1, 12 * 60))
    windows = [
        {
            "start": f"{start // 60:02d}:{start % 60:02d}",
            "end": f"{(start + length) % 1440 // 60:02d}:{(start + length) % 60:02d}",
            "multiplier": str(draw(st.decimals(min_value="0.1", max_value=3, places=2))),
        }
    ]
    return {
        "version": "prop-1",
        "rounding": draw(st.sampled_from([r.value for r in Rounding])),
        "time_windows": draw(st.sampled_from([[], windows])),
        "capabilities": {
            "cap.x": {
                "base": str(draw(amounts)),
                "minimum": draw(st.integers(0, 50)),
                "coefficients": {"megapixels": str(draw(amounts))},
                "options": {
                    "upscale": {
                        "type": "number",
                        "default": 1,
                        "min": 1,
                        "max": 4,
                        "surcharge": str(draw(amounts)),
                        "surcharge_above": 1,
                    },
                },
            }
        },
        "accounts": {"acct_1": {"discount_percent": str(draw(st.decimals(0, 100, places=1)))}},
    }


def _tokens(book: PriceBook, w: int, h: int, at: datetime, **kw: Any) -> int:
    return compute_price(book, capability="cap.x", width=w, height=h, at=at, **kw).tokens


@settings(max_examples=300, deadline=None)
@given(books(), sizes, sizes, times, st.sampled_from([None, "acct_1"]))
def test_never_below_minimum_and_lines_add_up(
    doc: dict[str, Any], w: int, h: int, at: datetime, account: str | None
) -> None:
    book = parse_price_book(doc)
    price = compute_price(book, capability="cap.x", width=w, height=h, at=at, account_id=account)
    assert price.tokens >= book.capabilities["cap.x"].minimum
    additive = [line.amount for line in price.breakdown if line.step in ("base", "pixels")]
    additive += [line.amount for line in price.breakdown if line.step.startswith("option:")]
    subtotal = next(line.amount for line in price.breakdown if line.step == "subtotal")
    assert sum(additive) == subtotal
    assert price.breakdown[-1].amount == price.tokens


@settings(max_examples=300, deadline=None)
@given(books(), sizes, sizes, st.integers(0, 5000), st.integers(0, 5000), times)
def test_monotone_in_pixels(
    doc: dict[str, Any], w: int, h: int, dw: int, dh: int, at: datetime
) -> None:
    book = parse_price_book(doc)
    assert _tokens(book, w, h, at) <= _tokens(book, w + dw, h + dh, at)


@settings(max_examples=300, deadline=None)
@given(books(), sizes, sizes, times, st.sampled_from([1, 2, "3.5"]))
def test_floor_le_half_up_le_ceil_within_one(
    doc: dict[str, Any], w: int, h: int, at: datetime, upscale: object
) -> None:
    results = {}
    for mode in Rounding:
        book = parse_price_book({**doc, "rounding": mode.value})
        results[mode] = _tokens(book, w, h, at, options={"upscale": upscale})
    floor, half_up, ceil = (
        results[Rounding.FLOOR],
        results[Rounding.HALF_UP],
        results[Rounding.CEIL],
    )
    assert floor <= half_up <= ceil <= floor + 1


@given(st.decimals(min_value=0, max_value=10**9, places=6, allow_nan=False))
def test_round_tokens_is_nearest_integer(amount: Decimal) -> None:
    half_up = round_tokens(amount)
    assert abs(amount - half_up) <= Decimal("0.5")
    assert round_tokens(amount, Rounding.FLOOR) <= amount <= round_tokens(amount, Rounding.CEIL)


@settings(max_examples=200, deadline=None)
@given(books(), times)
def test_documents_round_trip(doc: dict[str, Any], at: datetime) -> None:
    book = parse_price_book(doc)
    again = parse_price_book(price_book_to_document(book))
    assert again == book
    # the window in force depends on the local time of day only (Shanghai has no DST)
    assert book.window_at(at) == again.window_at(at)
    assert book.window_at(at + timedelta(days=1)) == book.window_at(at)


@settings(max_examples=80, deadline=None)
@given(
    doc=books(),
    base=st.one_of(st.none(), amounts),
    per_mp=st.one_of(st.none(), amounts),
    cap_minimum=st.one_of(st.none(), st.integers(0, 50)),
    account_minimum=st.one_of(st.none(), st.integers(0, 50)),
    w=sizes,
    h=sizes,
    upscale=st.sampled_from([1, 2, 3.5]),
    at=times,
)
def test_a_book_for_one_account_prices_it_as_the_book_it_came_from(
    doc: dict[str, Any],
    base: Decimal | None,
    per_mp: Decimal | None,
    cap_minimum: int | None,
    account_minimum: int | None,
    w: int,
    h: int,
    upscale: float,
    at: datetime,
) -> None:
    """``book_for_account`` (a ``pricing fit --account`` proposal's start): the
    account's overrides folded into the capabilities, the same price for any request."""
    override: dict[str, Any] = {}
    if base is not None:
        override["base"] = str(base)
    if per_mp is not None:
        override["coefficients"] = {"megapixels": str(per_mp)}
    if cap_minimum is not None:
        override["minimum"] = cap_minimum
    account = doc["accounts"]["acct_1"]
    account["capabilities"] = {"cap.x": override} if override else {}
    if account_minimum is not None:
        account["minimum"] = account_minimum
    doc["accounts"]["acct_2"] = {"discount_percent": "50"}
    book = parse_price_book(doc)
    own = book_for_account(book, "acct_1")
    request = {"capability": "cap.x", "width": w, "height": h, "options": {"upscale": upscale}}
    expected = compute_price(book, account_id="acct_1", at=at, **request).tokens
    assert compute_price(own, account_id="acct_1", at=at, **request).tokens == expected
    assert set(own.accounts) <= {"acct_1"}
    assert parse_price_book(price_book_to_document(own)) == own
