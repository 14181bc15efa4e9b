"""Price books as documents: TOML text in, canonical JSON-friendly dicts out.

``price_book_to_document`` is the inverse of ``parse_price_book``: amounts become
plain decimal strings (never floats), so storing a book as JSON and reading it back
gives an equal book, and ``show`` prints exactly what prices requests.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from comfygate.domain.errors import ValidationFailedError
from comfygate.domain.pricing import AccountOverride, CapabilityPrice, PriceBook, TimeWindow
from comfygate.domain.pricing_options import OptionKind, OptionSpec, plain, to_json_scalar


def parse_toml(text: str) -> dict[str, Any]:
    """The table in ``text``, or ``ValidationFailedError`` naming the syntax error."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValidationFailedError("the price book is not valid TOML", errors=[str(exc)]) from exc


def _amounts(values: Mapping[str, Decimal]) -> dict[str, str]:
    return {key: plain(value) for key, value in values.items()}


def _option(spec: OptionSpec) -> dict[str, Any]:
    doc: dict[str, Any] = {"type": spec.kind.value, "default": to_json_scalar(spec.default)}
    if spec.description:
        doc["description"] = spec.description
    if spec.kind is OptionKind.CHOICE:
        doc["choices"] = list(spec.choices)
        if spec.choice_surcharges:
            doc["surcharges"] = _amounts(spec.choice_surcharges)
        return doc
    if spec.surcharge:
        doc["surcharge"] = plain(spec.surcharge)
    if spec.kind is OptionKind.BOOLEAN:
        return doc
    optional = {
        "min": spec.minimum,
        "max": spec.maximum,
        "surcharge_above": spec.surcharge_above,
        "surcharge_per_unit": spec.surcharge_per_unit or None,
    }
    doc.update({key: plain(value) for key, value in optional.items() if value is not None})
    return doc


def _capability(cap: CapabilityPrice) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "base": plain(cap.base),
        "coefficients": _amounts(cap.coefficients),
        "minimum": cap.minimum,
    }
    if cap.description:
        doc["description"] = cap.description
    if cap.options:
        doc["options"] = {name: _option(spec) for name, spec in cap.options.items()}
    return doc


def _window(window: TimeWindow) -> dict[str, str]:
    start, end = window.label().split("-")
    return {"start": start, "end": end, "multiplier": plain(window.multiplier)}


def _account(account: AccountOverride) -> dict[str, Any]:
    doc: dict[str, Any] = {"discount_percent": plain(account.discount_percent)}
    if account.minimum is not None:
        doc["minimum"] = account.minimum
    overrides: dict[str, Any] = {}
    for name, over in account.capabilities.items():
        entry: dict[str, Any] = {}
        if over.base is not None:
            entry["base"] = plain(over.base)
        if over.coefficients:
            entry["coefficients"] = _amounts(over.coefficients)
        if over.minimum is not None:
            entry["minimum"] = over.minimum
        overrides[name] = entry
    if overrides:
        doc["capabilities"] = overrides
    return doc


def price_book_to_document(book: PriceBook) -> dict[str, Any]:
    """The canonical document of ``book`` (JSON-friendly; ``parse_price_book`` reads it)."""
    doc: dict[str, Any] = {"version": book.version}
    if book.description:
        doc["description"] = book.description
    doc |= {
        "timezone": book.timezone,
        "rounding": book.rounding.value,
        "time_windows": [_window(w) for w in book.time_windows],
        "capabilities": {name: _capability(cap) for name, cap in book.capabilities.items()},
    }
    if book.accounts:
        doc["accounts"] = {acct: _account(over) for acct, over in book.accounts.items()}
    return doc
