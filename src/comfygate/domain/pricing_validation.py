"""Build a ``PriceBook`` from a plain document (parsed TOML or JSON), checking all of it.

Every problem is collected, with its path, and raised together as one
``ValidationFailedError`` (``errors`` lists them all), so an operator fixes a book in
one pass. Unknown keys are errors too: a misspelt ``minimun`` must not be silently
ignored when money depends on it.

Document shape (see ``comfygate/data/price_book.toml``)::

    version = "default-1"            # required, unique, never reused
    timezone = "Asia/Shanghai"       # IANA name; default Asia/Shanghai
    rounding = "half_up"             # half_up | ceil | floor
    time_windows = [{ start = "00:00", end = "08:00", multiplier = "0.8" }]
    [capabilities."colorize.person"]
    base = 10
    minimum = 10
    coefficients = { megapixels = "2.0" }
    [capabilities."colorize.person".options.upscale]
    type = "number"                  # number | integer | boolean | choice
    default = 1
    min = 1
    max = 4
    surcharge = 5                    # charged when the value exceeds surcharge_above
    [accounts."acct_..."]            # per-account overrides
    discount_percent = 10
    capabilities."colorize.person" = { base = 8 }
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from comfygate.domain.errors import ValidationFailedError
from comfygate.domain.pricing import (
    DEFAULT_TIMEZONE,
    AccountOverride,
    CapabilityOverride,
    CapabilityPrice,
    PriceBook,
    Rounding,
)
from comfygate.domain.pricing_checks import Reader, read_coefficients, read_option, read_windows
from comfygate.domain.pricing_options import OptionSpec

_HUNDRED = Decimal(100)
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
_CAPABILITY = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$")
_OPTION = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_ACCOUNT = re.compile(r"^[A-Za-z0-9_.:-]{1,40}$")

_BOOK_KEYS = {
    "version",
    "description",
    "timezone",
    "rounding",
    "time_windows",
    "capabilities",
    "accounts",
}
_CAPABILITY_KEYS = {"base", "coefficients", "minimum", "options", "description"}
_ACCOUNT_KEYS = {"discount_percent", "minimum", "capabilities"}
_OVERRIDE_KEYS = {"base", "coefficients", "minimum"}


def parse_price_book(doc: Mapping[str, Any]) -> PriceBook:
    """The ``PriceBook`` described by ``doc``, or ``ValidationFailedError`` with every
    problem found."""
    r = Reader()
    book = r.table(doc, "price book")
    if book is None:
        raise ValidationFailedError("the price book is not a table", errors=r.errors)
    r.unknown_keys(book, _BOOK_KEYS, "")
    version = r.string(book.get("version"), "version", pattern=_VERSION)
    description = r.string(book.get("description", ""), "description") or ""
    timezone = r.timezone(book.get("timezone", DEFAULT_TIMEZONE), "timezone")
    rounding = r.choice(book.get("rounding", Rounding.HALF_UP.value), "rounding", Rounding)
    windows = read_windows(r, book.get("time_windows", []), "time_windows")
    capabilities = _capabilities(r, book.get("capabilities"))
    accounts = _accounts(r, book.get("accounts", {}), capabilities)
    if r.errors:
        n = len(r.errors)
        raise ValidationFailedError(
            f"the price book has {n} error{'s' if n > 1 else ''}", errors=r.errors
        )
    assert version is not None and timezone is not None and rounding is not None
    return PriceBook(
        version=version,
        capabilities=capabilities,
        timezone=timezone,
        rounding=Rounding(rounding),
        time_windows=windows,
        accounts=accounts,
        description=description,
    )


def validate_price_book(doc: Mapping[str, Any]) -> list[str]:
    """Every problem with ``doc`` (empty when it is a valid price book)."""
    try:
        parse_price_book(doc)
    except ValidationFailedError as exc:
        return exc.errors
    return []


def _capabilities(r: Reader, value: object) -> dict[str, CapabilityPrice]:
    table = r.table(value, "capabilities")
    if table is None:
        return {}
    if not table:
        r.fail("capabilities", "at least one capability is required")
    result: dict[str, CapabilityPrice] = {}
    for name, entry in table.items():
        path = f"capabilities.{name}"
        if not _CAPABILITY.match(name):
            r.fail(path, "a capability name is dotted lower-case words, e.g. colorize.person")
        cap = r.table(entry, path)
        if cap is None:
            continue
        r.unknown_keys(cap, _CAPABILITY_KEYS, path)
        description = r.string(cap.get("description", ""), f"{path}.description") or ""
        base = r.amount(cap.get("base"), f"{path}.base")
        coefficients = read_coefficients(r, cap.get("coefficients", {}), f"{path}.coefficients")
        minimum = r.tokens(cap.get("minimum", 0), f"{path}.minimum")
        options = _options(r, cap.get("options", {}), f"{path}.options")
        if base is not None and minimum is not None:
            result[name] = CapabilityPrice(name, base, coefficients, minimum, options, description)
    return result


def _options(r: Reader, value: object, path: str) -> dict[str, OptionSpec]:
    table = r.table(value, path)
    result: dict[str, OptionSpec] = {}
    for name, entry in (table or {}).items():
        if not _OPTION.match(name):
            r.fail(f"{path}.{name}", "an option name is a lower-case identifier")
        spec = read_option(r, name, entry, f"{path}.{name}")
        if spec is not None:
            result[name] = spec
    return result


def _accounts(
    r: Reader, value: object, capabilities: Mapping[str, CapabilityPrice]
) -> dict[str, AccountOverride]:
    table = r.table(value, "accounts")
    result: dict[str, AccountOverride] = {}
    for account_id, entry in (table or {}).items():
        path = f"accounts.{account_id}"
        if not _ACCOUNT.match(account_id):
            r.fail(path, "an account id is 1-40 letters, digits or _.:-")
        acct = r.table(entry, path)
        if acct is None:
            continue
        r.unknown_keys(acct, _ACCOUNT_KEYS, path)
        discount = r.amount(
            acct.get("discount_percent", 0), f"{path}.discount_percent", high=_HUNDRED
        )
        minimum = r.tokens(acct.get("minimum"), f"{path}.minimum", required=False)
        overrides = _overrides(r, acct.get("capabilities", {}), capabilities, path)
        if discount is not None:
            result[account_id] = AccountOverride(discount, minimum, overrides)
    return result


def _overrides(
    r: Reader, value: object, capabilities: Mapping[str, CapabilityPrice], parent: str
) -> dict[str, CapabilityOverride]:
    table = r.table(value, f"{parent}.capabilities")
    result: dict[str, CapabilityOverride] = {}
    for name, entry in (table or {}).items():
        path = f"{parent}.capabilities.{name}"
        if name not in capabilities:
            r.fail(path, "overrides a capability this price book does not define")
        over = r.table(entry, path)
        if over is None:
            continue
        r.unknown_keys(over, _OVERRIDE_KEYS, path)
        base = r.amount(over.get("base"), f"{path}.base", required=False)
        coefficients = read_coefficients(r, over.get("coefficients", {}), f"{path}.coefficients")
        minimum = r.tokens(over.get("minimum"), f"{path}.minimum", required=False)
        result[name] = CapabilityOverride(base, coefficients, minimum)
    return result
