"""The checking helpers behind ``pricing_validation``: each reads one value, records a
problem (with its path) instead of raising, and returns ``None`` when the value is bad,
so the caller can carry on and find the next problem.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Set
from dataclasses import replace
from decimal import Decimal
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from comfygate.domain.errors import InvalidOptionError
from comfygate.domain.pricing import DIMENSIONS, MAX_PRICE_TOKENS, MINUTES_PER_DAY, TimeWindow
from comfygate.domain.pricing_options import OptionKind, OptionSpec, to_decimal

MAX_AMOUNT = Decimal(MAX_PRICE_TOKENS)
"""No price, surcharge or minimum above a billion tokens: a typo, not a price."""
MAX_MULTIPLIER = Decimal(100)
_HHMM = re.compile(r"^(\d\d):(\d\d)$")


class Reader:
    """Reads a document, collecting every problem in ``errors``."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def fail(self, path: str, message: str) -> None:
        self.errors.append(f"{path}: {message}" if path else message)

    def table(self, value: object, path: str) -> Mapping[str, Any] | None:
        if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
            return value
        self.fail(path, "is required" if value is None else "must be a table")
        return None

    def unknown_keys(
        self, table: Mapping[str, Any], allowed: Set[str], path: str, why: str = "unknown key"
    ) -> None:
        for key in sorted(set(table) - allowed):
            self.fail(f"{path}.{key}" if path else key, why)

    def string(
        self, value: object, path: str, *, pattern: re.Pattern[str] | None = None
    ) -> str | None:
        if not isinstance(value, str):
            self.fail(path, "is required" if value is None else "must be a string")
            return None
        if pattern is not None and not pattern.match(value):
            self.fail(path, f"{value!r} does not match {pattern.pattern}")
            return None
        return value

    def timezone(self, value: object, path: str) -> str | None:
        name = self.string(value, path)
        if name is None:
            return None
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError, OSError):  # "America" is a directory
            self.fail(path, f"unknown timezone {name!r} (use an IANA name, e.g. Asia/Shanghai)")
            return None
        return name

    def choice(self, value: object, path: str, choices: type[StrEnum]) -> str | None:
        allowed = [c.value for c in choices]
        if value not in allowed:
            self.fail(path, f"must be one of {', '.join(allowed)}, got {value!r}")
            return None
        return str(value)

    def number(self, value: object, path: str, *, required: bool = True) -> Decimal | None:
        """Any finite number (int, float, or a numeric string such as ``"2.05"``)."""
        if value is None:
            if required:
                self.fail(path, "is required")
            return None
        number = to_decimal(value)
        if number is None:
            self.fail(path, f"must be a number, got {value!r}")
        return number

    def amount(
        self, value: object, path: str, *, required: bool = True, high: Decimal = MAX_AMOUNT
    ) -> Decimal | None:
        """A number between 0 and ``high``."""
        number = self.number(value, path, required=required)
        if number is not None and not 0 <= number <= high:
            self.fail(path, f"must be between 0 and {high}, got {value!r}")
            return None
        return number

    def tokens(self, value: object, path: str, *, required: bool = True) -> int | None:
        """A whole number of tokens between 0 and ``MAX_AMOUNT``."""
        if value is None and not required:
            return None
        if not isinstance(value, int) or isinstance(value, bool):
            self.fail(path, f"must be a whole number of tokens, got {value!r}")
            return None
        if not 0 <= value <= MAX_AMOUNT:
            self.fail(path, f"must be between 0 and {MAX_AMOUNT}, got {value}")
            return None
        return value


def read_coefficients(r: Reader, value: object, path: str) -> dict[str, Decimal]:
    """Tokens per unit of each known dimension (``megapixels``)."""
    table = r.table(value, path)
    result: dict[str, Decimal] = {}
    for dim, coefficient in (table or {}).items():
        if dim not in DIMENSIONS:
            r.fail(f"{path}.{dim}", f"unknown dimension (known: {', '.join(DIMENSIONS)})")
            continue
        amount = r.amount(coefficient, f"{path}.{dim}")
        if amount is not None:
            result[dim] = amount
    return result


def _minute(r: Reader, value: object, path: str, *, end: bool) -> int | None:
    match = _HHMM.match(value) if isinstance(value, str) else None
    hours, minutes = (int(match[1]), int(match[2])) if match else (99, 99)
    minute = hours * 60 + minutes
    if minutes >= 60 or minute > MINUTES_PER_DAY or (minute == MINUTES_PER_DAY and not end):
        r.fail(path, f"must be a time HH:MM (00:00-{'24:00' if end else '23:59'}), got {value!r}")
        return None
    return minute


def _segments(w: TimeWindow) -> list[tuple[int, int]]:
    if w.start_min < w.end_min:
        return [(w.start_min, w.end_min)]
    return [(w.start_min, MINUTES_PER_DAY), (0, w.end_min)]


def read_windows(r: Reader, value: object, path: str) -> tuple[TimeWindow, ...]:
    """Time-of-day windows; ``end <= start`` wraps midnight; no two may overlap."""
    if not isinstance(value, list):
        r.fail(path, "must be a list of tables")
        return ()
    found: list[tuple[str, TimeWindow]] = []
    for i, entry in enumerate(value):
        where = f"{path}[{i}]"
        table = r.table(entry, where)
        if table is None:
            continue
        r.unknown_keys(table, {"start", "end", "multiplier"}, where)
        errors = len(r.errors)
        start = _minute(r, table.get("start"), f"{where}.start", end=False)
        end = _minute(r, table.get("end"), f"{where}.end", end=True)
        multiplier = r.amount(table.get("multiplier"), f"{where}.multiplier", high=MAX_MULTIPLIER)
        if multiplier is not None and multiplier == 0:
            r.fail(f"{where}.multiplier", "must be greater than 0")
        if start is not None and end is not None and start == end:
            r.fail(where, "start and end are the same time; a window must not be empty")
        if len(r.errors) == errors and start is not None and end is not None and multiplier:
            found.append((where, TimeWindow(start, end, multiplier)))
    for i, (where_a, a) in enumerate(found):
        for where_b, b in found[i + 1 :]:
            if any(s1 < e2 and s2 < e1 for s1, e1 in _segments(a) for s2, e2 in _segments(b)):
                r.fail(where_b, f"{b.label()} overlaps {where_a} ({a.label()})")
    return tuple(w for _, w in found)


_OPTION_KEYS: dict[OptionKind, set[str]] = {
    OptionKind.NUMBER: {"min", "max", "surcharge", "surcharge_above", "surcharge_per_unit"},
    OptionKind.INTEGER: {"min", "max", "surcharge", "surcharge_above", "surcharge_per_unit"},
    OptionKind.BOOLEAN: {"surcharge"},
    OptionKind.CHOICE: {"choices", "surcharges"},
}


def read_option(r: Reader, name: str, value: object, path: str) -> OptionSpec | None:
    """One option's schema and surcharge rule; its default must satisfy its own schema.

    Every field is checked even when another is wrong (an unknown type included); the
    default is checked whenever the type and what bounds it (min and max, or the
    choices) are readable."""
    table = r.table(value, path)
    if table is None:
        return None
    before = len(r.errors)
    kind_name = r.choice(table.get("type"), f"{path}.type", OptionKind)
    kind = None if kind_name is None else OptionKind(kind_name)
    if kind is not None:
        allowed = _OPTION_KEYS[kind] | {"type", "default", "description"}
        r.unknown_keys(table, allowed, path, why=f"not allowed for a {kind.value} option")
    choices, choice_surcharges = _choices(r, table, path) if kind is OptionKind.CHOICE else ((), {})
    bounds = len(r.errors)
    minimum = r.number(table.get("min"), f"{path}.min", required=False)
    maximum = r.number(table.get("max"), f"{path}.max", required=False)
    if minimum is not None and maximum is not None and minimum > maximum:
        r.fail(path, "min is greater than max")
    bounded = len(r.errors) == bounds and (kind is not OptionKind.CHOICE or bool(choices))
    spec = OptionSpec(
        name=name,
        kind=kind or OptionKind.NUMBER,  # a stand-in: nothing is built from it then
        default=False,  # replaced below, once checked against the rest of the schema
        minimum=minimum,
        maximum=maximum,
        choices=choices,
        surcharge=r.amount(table.get("surcharge", 0), f"{path}.surcharge") or Decimal(0),
        surcharge_above=r.number(
            table.get("surcharge_above"), f"{path}.surcharge_above", required=False
        ),
        surcharge_per_unit=r.amount(
            table.get("surcharge_per_unit", 0), f"{path}.surcharge_per_unit"
        )
        or Decimal(0),
        choice_surcharges=choice_surcharges,
        description=r.string(table.get("description", ""), f"{path}.description") or "",
    )
    if "default" not in table:
        r.fail(f"{path}.default", "is required")
        return None
    if kind is None or not bounded:
        return None
    try:
        default = spec.coerce(table["default"])
    except InvalidOptionError as exc:
        r.fail(f"{path}.default", str(exc))
        return None
    if len(r.errors) > before:
        return None
    return replace(spec, default=default)


def _choices(
    r: Reader, table: Mapping[str, Any], path: str
) -> tuple[tuple[str, ...], dict[str, Decimal]]:
    raw = table.get("choices")
    if not isinstance(raw, list) or not raw or not all(isinstance(c, str) and c for c in raw):
        r.fail(f"{path}.choices", "must be a non-empty list of non-empty strings")
        return (), {}
    if len(set(raw)) != len(raw):
        r.fail(f"{path}.choices", "has duplicates")
    surcharges: dict[str, Decimal] = {}
    for choice, amount in (
        r.table(table.get("surcharges", {}), f"{path}.surcharges") or {}
    ).items():
        if choice not in raw:
            r.fail(f"{path}.surcharges.{choice}", "is not one of the choices")
        checked = r.amount(amount, f"{path}.surcharges.{choice}")
        if checked is not None:
            surcharges[choice] = checked
    return tuple(raw), surcharges
