"""Pricing domain: the seed's worked examples, every breakdown step, windows, overrides."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from decimal import Decimal, localcontext
from typing import Any

import pytest

from comfygate.domain.errors import (
    InvalidImageSizeError,
    InvalidInputError,
    InvalidOptionError,
    PriceOutOfRangeError,
    UnknownCapabilityError,
)
from comfygate.domain.pricing import (
    MAX_PRICE_TOKENS,
    PriceBook,
    Rounding,
    compute_price,
    left_out,
    round_tokens,
)
from comfygate.domain.pricing_document import parse_toml, price_book_to_document
from comfygate.domain.pricing_validation import parse_price_book

NOON_SHANGHAI = datetime(2024, 5, 1, 4, 0, tzinfo=UTC)  # 12:00 in Asia/Shanghai


def default_doc() -> dict[str, Any]:
    from importlib import resources

    text = resources.files("comfygate").joinpath("data", "price_book.toml").read_text("utf-8")
    return parse_toml(text)


def book_with(**changes: Any) -> PriceBook:
    doc = default_doc()
    doc.update(copy.deepcopy(changes))
    return parse_price_book(doc)


DEFAULT = parse_price_book(default_doc())


def tokens(book: PriceBook, capability: str, w: int, h: int, **kw: Any) -> int:
    kw.setdefault("at", NOON_SHANGHAI)
    return compute_price(book, capability=capability, width=w, height=h, **kw).tokens


@pytest.mark.parametrize(
    ("capability", "width", "height", "options", "expected"),
    [
        ("colorize.person", 800, 600, {}, 11),  # 10 + 0.48 x 2 = 10.96 -> 11 (the seed's example)
        ("colorize.building", 1920, 1080, {}, 19),  # 15 + 2.0736 x 2 = 19.1472
        ("colorize.person", 800, 600, {"upscale": 2}, 16),  # 15.96
        ("colorize.person", 100, 100, {}, 10),  # 10.02 -> 10, the minimum
        ("colorize.person", 800, 600, {"upscale": 1}, 11),  # upscale 1 costs nothing
        ("colorize.person", 800, 600, {"upscale": 1.5}, 16),
    ],
)
def test_default_book_prices_the_seed_examples(
    capability: str, width: int, height: int, options: dict[str, object], expected: int
) -> None:
    assert tokens(DEFAULT, capability, width, height, options=options) == expected


def test_night_window_discounts_and_ceil_rounds_up() -> None:
    night = book_with(time_windows=[{"start": "00:00", "end": "08:00", "multiplier": "0.8"}])
    at_3am_shanghai = datetime(2024, 5, 1, 19, 0, tzinfo=UTC)  # 03:00 next day, +08:00
    assert tokens(night, "colorize.building", 1920, 1080, at=at_3am_shanghai) == 15  # 15.31776
    assert tokens(night, "colorize.building", 1920, 1080) == 19  # noon: no window
    assert tokens(book_with(rounding="ceil"), "colorize.building", 1920, 1080) == 20
    assert tokens(book_with(rounding="floor"), "colorize.building", 1920, 1080) == 19


@pytest.mark.parametrize(
    "at",
    [
        datetime(9999, 12, 31, 20, 0, tzinfo=UTC),  # 10000-01-01 in Asia/Shanghai
        datetime(1, 1, 1, tzinfo=UTC),
    ],
)
def test_a_time_no_time_zone_can_show_is_invalid_input(at: datetime) -> None:
    """With a window to look up, it once raised OverflowError (a crash of the CLI)."""
    night = book_with(time_windows=[{"start": "00:00", "end": "08:00", "multiplier": "0.8"}])
    with pytest.raises(InvalidInputError, match="out of range"):
        tokens(night, "colorize.person", 800, 600, at=at)
    with pytest.raises(InvalidInputError, match="out of range"):
        tokens(DEFAULT, "colorize.person", 800, 600, at=at)


def test_every_breakdown_step_in_order() -> None:
    book = book_with(
        time_windows=[{"start": "11:00", "end": "13:00", "multiplier": "1.2"}],
        accounts={"acct_1": {"discount_percent": 10}},
    )
    price = compute_price(
        book,
        capability="colorize.person",
        width=800,
        height=600,
        options={"upscale": 2},
        account_id="acct_1",
        at=NOON_SHANGHAI,
    )
    assert [line.to_dict() for line in price.breakdown] == [
        {"step": "base", "amount": "10", "note": "colorize.person base"},
        {"step": "pixels", "amount": "0.96", "note": "0.48 MP x 2 per MP"},
        {"step": "option:upscale", "amount": "5", "note": "upscale=2"},
        {"step": "subtotal", "amount": "15.96", "note": "base + pixels + options"},
        {"step": "time_of_day", "amount": "19.152", "note": "x1.2 (11:00-13:00 Asia/Shanghai)"},
        {"step": "discount", "amount": "17.2368", "note": "-10% account discount"},
        {"step": "rounding", "amount": "17", "note": "half_up"},
        {"step": "minimum", "amount": "17", "note": "minimum 10 (not reached)"},
    ]
    assert price.tokens == 17
    assert price.price_book_version == "default-1"
    assert price.options == {"upscale": 2}


def test_options_have_their_line_even_when_they_add_nothing() -> None:
    price = compute_price(
        DEFAULT, capability="colorize.person", width=800, height=600, at=NOON_SHANGHAI
    )
    assert [line.to_dict() for line in price.breakdown[2:4]] == [
        {"step": "option:upscale", "amount": "0", "note": "upscale=1"},
        {"step": "subtotal", "amount": "10.96", "note": "base + pixels + options"},
    ]
    bare = book_with(capabilities={"x.y": {"base": 12}})
    price = compute_price(bare, capability="x.y", width=10, height=10, at=NOON_SHANGHAI)
    assert [line.step for line in price.breakdown] == [
        "base", "pixels", "options", "subtotal", "time_of_day", "discount", "rounding", "minimum"
    ]  # fmt: skip
    assert price.breakdown[2].amount == 0 and price.tokens == 12


def test_minimum_line_says_when_it_applies() -> None:
    book = book_with(capabilities={"x.y": {"base": "4.6", "minimum": 10}})
    price = compute_price(book, capability="x.y", width=1, height=1, at=NOON_SHANGHAI)
    assert [(line.step, line.amount) for line in price.breakdown[-2:]] == [
        ("rounding", 5),
        ("minimum", 10),
    ]
    assert price.breakdown[-1].note == "minimum 10 (applied)"
    assert tokens(book_with(capabilities={"x.y": {"base": "0.4"}}), "x.y", 1, 1) == 0


def test_account_overrides_take_precedence_capability_then_account_then_list() -> None:
    book = book_with(
        accounts={
            "acct_big": {
                "discount_percent": "12.5",
                "minimum": 3,
                "capabilities": {
                    "colorize.person": {"base": 4, "coefficients": {"megapixels": "1.5"}},
                    "colorize.building": {"minimum": 30},
                },
            }
        }
    )
    # person: (4 + 0.48 x 1.5) x 0.875 = 4.13 -> 4; account minimum 3 replaces 10
    assert tokens(book, "colorize.person", 800, 600, account_id="acct_big") == 4
    # building: 19.1472 x 0.875 = 16.75 -> 17, capability minimum 30 wins
    assert tokens(book, "colorize.building", 1920, 1080, account_id="acct_big") == 30
    # someone else pays list price
    assert tokens(book, "colorize.person", 800, 600, account_id="acct_other") == 11


@pytest.mark.parametrize(
    ("utc_hour", "utc_minute", "expected"),
    [
        (14, 0, 5),  # 22:00 Shanghai: window starts (10.96 x 0.5 = 5.48 -> 5)
        (15, 30, 5),  # 23:30
        (16, 0, 5),  # 00:00 next day
        (21, 59, 5),  # 05:59
        (22, 0, 11),  # 06:00: window over
        (13, 59, 11),  # 21:59: not yet
    ],
)
def test_window_wrapping_midnight(utc_hour: int, utc_minute: int, expected: int) -> None:
    book = book_with(
        time_windows=[{"start": "22:00", "end": "06:00", "multiplier": "0.5"}],
        capabilities={"colorize.person": {"base": 10, "coefficients": {"megapixels": 2}}},
    )  # no minimum: the multiplier shows in the total
    at = datetime(2024, 5, 1, utc_hour, utc_minute, tzinfo=UTC)
    assert tokens(book, "colorize.person", 800, 600, at=at) == expected


def test_windows_follow_the_book_timezone() -> None:
    book = book_with(
        timezone="Europe/Paris",
        time_windows=[{"start": "00:00", "end": "08:00", "multiplier": "0.8"}],
    )
    # 05:00 UTC is 07:00 in Paris (summer time): in the window; 06:00 UTC is 08:00: not.
    assert (
        tokens(book, "colorize.building", 1920, 1080, at=datetime(2024, 7, 1, 5, tzinfo=UTC)) == 15
    )
    assert (
        tokens(book, "colorize.building", 1920, 1080, at=datetime(2024, 7, 1, 6, tzinfo=UTC)) == 19
    )


def test_new_capability_and_option_kinds_are_data_only() -> None:
    book = book_with(
        capabilities={
            "restore.denoise": {
                "base": "3.5",
                "minimum": 1,
                "coefficients": {"megapixels": "0.25"},
                "options": {
                    "strength": {
                        "type": "integer",
                        "default": 1,
                        "min": 1,
                        "max": 5,
                        "surcharge_per_unit": 2,
                    },
                    "fp16": {"type": "boolean", "default": False, "surcharge": "0.5"},
                    "model": {
                        "type": "choice",
                        "choices": ["small", "large"],
                        "default": "small",
                        "surcharges": {"large": 4},
                    },
                },
            }
        }
    )
    at = NOON_SHANGHAI
    price = compute_price(
        book,
        capability="restore.denoise",
        width=2000,
        height=2000,
        at=at,
        options={"strength": 3, "fp16": "true", "model": "large"},
    )
    # 3.5 + 4 MP x 0.25 + (3-1) x 2 + 0.5 + 4 = 13
    assert price.tokens == 13
    assert price.options == {"strength": 3, "fp16": True, "model": "large"}
    assert tokens(book, "restore.denoise", 2000, 2000) == 5  # 3.5 + 1 = 4.5 -> 5


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"tile": 2}, "unknown option 'tile'"),
        ({"upscale": 5}, "between 1 and 4"),
        ({"upscale": 0.5}, "between 1 and 4"),
        ({"upscale": "lots"}, "must be a number"),
        ({"upscale": True}, "must be a number"),
        ({"upscale": float("nan")}, "must be a number"),
    ],
)
def test_bad_options_are_refused(options: dict[str, object], fragment: str) -> None:
    with pytest.raises(InvalidOptionError, match=fragment):
        tokens(DEFAULT, "colorize.person", 800, 600, options=options)


@pytest.mark.parametrize(("width", "height"), [(0, 600), (800, -1), (True, 600), (800.0, 600)])
def test_bad_sizes_are_refused(width: Any, height: Any) -> None:
    with pytest.raises(InvalidImageSizeError):
        tokens(DEFAULT, "colorize.person", width, height)


def test_unknown_capability_and_naive_time_are_refused() -> None:
    with pytest.raises(UnknownCapabilityError, match=r"colorize\.cat"):
        tokens(DEFAULT, "colorize.cat", 800, 600)
    with pytest.raises(InvalidInputError, match="timezone-aware"):
        tokens(DEFAULT, "colorize.person", 800, 600, at=datetime(2024, 5, 1, 12))


@pytest.mark.parametrize(
    ("amount", "half_up", "ceil", "floor"),
    [("10.5", 11, 11, 10), ("10.4999", 10, 11, 10), ("10", 10, 10, 10), ("0.5", 1, 1, 0)],
)
def test_round_tokens(amount: str, half_up: int, ceil: int, floor: int) -> None:
    assert round_tokens(Decimal(amount)) == half_up
    assert round_tokens(Decimal(amount), Rounding.CEIL) == ceil
    assert round_tokens(Decimal(amount), Rounding.FLOOR) == floor


def test_caller_decimal_context_changes_nothing() -> None:
    with localcontext() as ctx:
        ctx.prec = 2
        assert tokens(DEFAULT, "colorize.building", 1920, 1080) == 19


def test_document_round_trip_is_exact() -> None:
    book = book_with(
        time_windows=[{"start": "19:00", "end": "23:00", "multiplier": 1.2}],
        accounts={"acct_1": {"discount_percent": 5, "capabilities": {"colorize.person": {}}}},
    )
    assert parse_price_book(price_book_to_document(book)) == book


def test_no_price_passes_a_billion_tokens_and_no_option_number_is_unbounded() -> None:
    steps = {"type": "number", "default": 1, "min": 1, "surcharge_per_unit": "0.5"}  # no max
    book = book_with(capabilities={"x.y": {"base": 1, "options": {"steps": steps}}})

    def price(value: object) -> int:
        return compute_price(
            book, capability="x.y", width=1, height=1, options={"steps": value}, at=NOON_SHANGHAI
        ).tokens

    assert price(2 * MAX_PRICE_TOKENS - 1) == MAX_PRICE_TOKENS  # 1 + 0.5 x (2e9 - 2)
    with pytest.raises(PriceOutOfRangeError):
        price(2 * MAX_PRICE_TOKENS + 1)
    for absurd in ("1e16", "-1e16", "1e100000", "9" * 5000):  # once OverflowError, ValueError
        with pytest.raises(InvalidOptionError, match="between -1000000000000000 and") as caught:
            price(absurd)
        assert len(str(caught.value)) < 200
    huge = book_with(capabilities={"x.y": {"base": 1, "coefficients": {"megapixels": 1000}}})
    with pytest.raises(PriceOutOfRangeError, match="more than 1000000000 tokens"):
        compute_price(huge, capability="x.y", width=10**7, height=10**7, at=NOON_SHANGHAI)


def test_what_an_own_book_leaves_out_of_the_default() -> None:
    person_only = book_with(capabilities={"colorize.person": {"base": 8}})
    assert left_out(person_only, DEFAULT) == [
        "capability colorize.building",
        "option colorize.person.upscale",
    ]
    assert left_out(DEFAULT, DEFAULT) == []


def test_an_own_book_leaves_out_the_default_books_terms_for_the_account() -> None:
    """Once ignored without a word: the account's discount in the default book."""
    default = book_with(accounts={"acct_e": {"discount_percent": 10}})
    assert left_out(DEFAULT, default, "acct_e") == ["terms of its own (accounts.acct_e)"]
    assert left_out(DEFAULT, default, "acct_f") == []
    assert left_out(default, default, "acct_e") == []  # it carries them over
