"""Price book validation: every error at once, with its path; documents round-trip."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from comfygate.domain.errors import ValidationFailedError
from comfygate.domain.pricing import Rounding, TimeWindow
from comfygate.domain.pricing_document import parse_toml, price_book_to_document
from comfygate.domain.pricing_options import OptionKind
from comfygate.domain.pricing_validation import parse_price_book, validate_price_book
from tests.unit.test_pricing import default_doc


def minimal(**extra: Any) -> dict[str, Any]:
    return {"version": "v1", "capabilities": {"a.b": {"base": 1}}, **extra}


def test_shipped_default_is_the_seed_book() -> None:
    book = parse_price_book(default_doc())
    assert book.version == "default-1"
    assert book.timezone == "Asia/Shanghai"
    assert book.rounding is Rounding.HALF_UP
    assert book.time_windows == ()
    person, building = book.capabilities["colorize.person"], book.capabilities["colorize.building"]
    assert (person.base, building.base) == (10, 15)
    assert person.coefficients == building.coefficients == {"megapixels": Decimal(2)}
    assert person.minimum == building.minimum == 10
    upscale = person.options["upscale"]
    assert (upscale.kind, upscale.default, upscale.minimum, upscale.maximum) == (
        OptionKind.NUMBER,
        1,
        1,
        4,
    )
    assert upscale.surcharge_for(Decimal(2)) == 5 and upscale.surcharge_for(Decimal(1)) == 0


def test_every_error_is_reported_at_once() -> None:
    doc = {
        "version": "has spaces",
        "timezone": "Mars/Olympus",
        "rounding": "banker",
        "minimun": 3,
        "time_windows": [{"start": "25:00", "end": "08:00", "multiplier": "0.8"}],
        "capabilities": {
            "colorize.person": {
                "base": -1,
                "coefficients": {"megapixels": "x", "seconds": 1},
                "minimum": 2.5,
                "options": {"upscale": {"type": "number", "default": 9, "min": 1, "max": 4}},
            },
            "Bad Name": {"base": 1},
        },
        "accounts": {"acct_1": {"discount_percent": 150, "capabilities": {"nope.x": {}}}},
    }
    with pytest.raises(ValidationFailedError) as caught:
        parse_price_book(doc)
    errors = caught.value.errors
    expected = [
        "minimun: unknown key",
        "version: 'has spaces' does not match",
        "timezone: unknown timezone 'Mars/Olympus'",
        "rounding: must be one of half_up, ceil, floor",
        "time_windows[0].start: must be a time HH:MM",
        "capabilities.colorize.person.base: must be between 0 and",
        "capabilities.colorize.person.coefficients.megapixels: must be a number",
        "capabilities.colorize.person.coefficients.seconds: unknown dimension",
        "capabilities.colorize.person.minimum: must be a whole number of tokens",
        "capabilities.colorize.person.options.upscale.default: option 'upscale' must be between",
        "capabilities.Bad Name: a capability name is dotted lower-case words",
        "accounts.acct_1.discount_percent: must be between 0 and 100",
        "accounts.acct_1.capabilities.nope.x: overrides a capability this price book does not",
    ]
    for fragment in expected:
        assert any(e.startswith(fragment) for e in errors), (fragment, errors)
    assert len(errors) == len(expected)
    assert validate_price_book(doc) == errors
    assert caught.value.code == "validation_failed"


@pytest.mark.parametrize(
    ("windows", "fragment"),
    [
        ([("00:00", "08:00"), ("07:00", "09:00")], "07:00-09:00 overlaps time_windows[0]"),
        ([("22:00", "02:00"), ("01:00", "03:00")], "01:00-03:00 overlaps"),
        ([("22:00", "02:00"), ("23:00", "23:30")], "23:00-23:30 overlaps"),
        ([("08:00", "08:00")], "must not be empty"),
        ([("24:00", "08:00")], "start: must be a time"),
        ([("08:00", "08:60")], "end: must be a time"),
    ],
)
def test_bad_windows_are_refused(windows: list[tuple[str, str]], fragment: str) -> None:
    doc = minimal(time_windows=[{"start": s, "end": e, "multiplier": 1} for s, e in windows])
    errors = validate_price_book(doc)
    assert len(errors) == 1 and fragment in errors[0], errors


def test_adjacent_and_full_day_windows_are_fine() -> None:
    doc = minimal(
        time_windows=[
            {"start": "00:00", "end": "08:00", "multiplier": "0.8"},
            {"start": "19:00", "end": "23:00", "multiplier": "1.2"},
            {"start": "23:00", "end": "24:00", "multiplier": "1.1"},
        ]
    )
    assert parse_price_book(doc).time_windows[2] == TimeWindow(23 * 60, 24 * 60, Decimal("1.1"))
    assert (
        validate_price_book(
            minimal(time_windows=[{"start": "00:00", "end": "24:00", "multiplier": 2}])
        )
        == []
    )
    zero = minimal(time_windows=[{"start": "00:00", "end": "01:00", "multiplier": 0}])
    assert validate_price_book(zero) == ["time_windows[0].multiplier: must be greater than 0"]


@pytest.mark.parametrize("multiplier", [None, "abc", 500, -1])
def test_a_window_with_good_times_and_a_bad_multiplier_is_an_error_like_any(
    multiplier: object,
) -> None:
    """It once failed an assertion instead: the entry's error count was taken after
    the multiplier was read."""
    window: dict[str, object] = {"start": "00:00", "end": "08:00"}
    if multiplier is not None:
        window["multiplier"] = multiplier
    errors = validate_price_book(minimal(time_windows=[window], rounding="sideways"))
    assert len(errors) == 2
    assert errors[0].startswith("rounding: ")
    assert errors[1].startswith("time_windows[0].multiplier: ")


def _option_errors(option: dict[str, Any]) -> list[str]:
    doc = minimal(capabilities={"a.b": {"base": 1, "options": {"o": option}}})
    return validate_price_book(doc)


def test_an_option_error_hides_no_other() -> None:
    path = "capabilities.a.b.options.o"
    # An unknown type: every field that does not depend on it is still checked.
    assert _option_errors({"type": "numbr", "default": 9, "min": 5, "max": 1, "surcharge": -5}) == [
        f"{path}.type: must be one of number, integer, boolean, choice, got 'numbr'",
        f"{path}: min is greater than max",
        f"{path}.surcharge: must be between 0 and 1000000000, got -5",
    ]
    # A bad surcharge: the default is still checked against the bounds.
    assert _option_errors({"type": "number", "default": 9, "max": 4, "surcharge": -1}) == [
        f"{path}.surcharge: must be between 0 and 1000000000, got -1",
        f"{path}.default: option 'o' must be at most 4, got 9",
    ]
    choice = {"type": "choice", "default": "q", "choices": ["a", "b"], "surcharges": {"a": -1}}
    assert _option_errors(choice) == [
        f"{path}.surcharges.a: must be between 0 and 1000000000, got -1",
        f"{path}.default: option 'o' must be one of a, b, got 'q'",
    ]


def test_an_empty_window_with_a_zero_multiplier_gets_both_errors() -> None:
    windows = [{"start": "10:00", "end": "10:00", "multiplier": 0}]
    assert validate_price_book(minimal(time_windows=windows)) == [
        "time_windows[0].multiplier: must be greater than 0",
        "time_windows[0]: start and end are the same time; a window must not be empty",
    ]


@pytest.mark.parametrize(
    ("option", "fragment"),
    [
        ({"type": "number", "default": 2, "min": 3, "max": 1}, "min is greater than max"),
        ({"type": "number"}, "default: is required"),
        ({"type": "integer", "default": 1.5}, "must be a whole number"),
        ({"type": "boolean", "default": False, "max": 2}, "max: not allowed for a boolean"),
        ({"type": "choice", "choices": ["a"], "default": "b"}, "must be one of a"),
        ({"type": "choice", "choices": [], "default": "a"}, "non-empty list"),
        ({"type": "choice", "choices": ["a"], "default": "a", "surcharges": {"z": 1}}, "z: is not"),
        ({"type": "colour", "default": 1}, "type: must be one of number"),
        ({"type": "number", "default": 1, "surcharge": "-2"}, "surcharge: must be between"),
    ],
)
def test_bad_option_schemas_are_refused(option: dict[str, Any], fragment: str) -> None:
    doc = minimal(capabilities={"a.b": {"base": 1, "options": {"opt": option}}})
    errors = validate_price_book(doc)
    assert errors and all("capabilities.a.b.options.opt" in e for e in errors)
    assert any(fragment in e for e in errors), errors


def test_missing_parts_are_required() -> None:
    assert validate_price_book({}) == ["version: is required", "capabilities: is required"]
    assert validate_price_book(minimal(capabilities={})) == [
        "capabilities: at least one capability is required"
    ]
    assert validate_price_book(minimal(capabilities={"a.b": {}})) == [
        "capabilities.a.b.base: is required"
    ]


def test_toml_syntax_errors_are_validation_errors() -> None:
    with pytest.raises(ValidationFailedError, match="not valid TOML") as caught:
        parse_toml("version = \n")
    assert caught.value.errors


def test_stored_document_is_json_without_floats_and_round_trips() -> None:
    doc = default_doc()
    doc["capabilities"]["colorize.person"]["coefficients"]["megapixels"] = 0.1  # a float in TOML
    doc["accounts"] = {"acct_1": {"discount_percent": 7.5, "minimum": 4}}
    book = parse_price_book(doc)
    assert book.capabilities["colorize.person"].coefficients["megapixels"] == Decimal("0.1")
    stored = json.loads(json.dumps(price_book_to_document(book)))

    def floats(value: Any) -> list[float]:
        if isinstance(value, dict):
            return [f for v in value.values() for f in floats(v)]
        if isinstance(value, list):
            return [f for v in value for f in floats(v)]
        return [value] if isinstance(value, float) else []

    assert floats(stored) == []
    assert parse_price_book(stored) == book
