"""Options a capability declares in its price book entry (e.g. ``upscale``).

Each option has a schema (kind, default, bounds or choices) and a surcharge rule, so
a new option, like a new capability, is data: no code change. A request's options are
checked against the schema here; anything undeclared or out of range is refused with
``InvalidOptionError``.

Values are normalised in two forms: typed (``Decimal`` for numbers) for the price
arithmetic, and canonical JSON scalars (numbers as ``int`` when integral, else a
decimal string) for records, so that ``{"upscale": 2}``, ``{"upscale": 2.0}`` and
``{"upscale": "2"}`` are the same request.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from enum import StrEnum

from comfygate.domain.errors import InvalidOptionError

OptionValue = bool | int | Decimal | str
"""A checked option value: ``Decimal`` (number), ``int`` (integer), ``bool``, ``str``."""

JsonScalar = bool | int | str
"""An option value as recorded in quotes and jobs (JSON, no floats)."""

ZERO = Decimal(0)
_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})


class OptionKind(StrEnum):
    NUMBER = "number"
    INTEGER = "integer"
    BOOLEAN = "boolean"
    CHOICE = "choice"


OPTION_NUMBER_LIMIT = 10**15
"""No number option takes a value beyond this, even one the book leaves unbounded."""


def to_decimal(value: object) -> Decimal | None:
    """A finite ``Decimal`` from an int, float, Decimal or numeric string, else None.

    Floats go through their shortest ``repr`` so ``2.0`` in TOML or JSON means exactly 2.0.
    """
    if isinstance(value, bool):
        return None
    try:
        if isinstance(value, float):
            result = Decimal(repr(value))
        elif isinstance(value, int | Decimal):
            result = Decimal(value)
        elif isinstance(value, str):
            result = Decimal(value.strip())
        else:
            return None
    except InvalidOperation:
        return None
    return result if result.is_finite() else None


def plain(value: Decimal) -> str:
    """``value`` as a plain decimal string without needless zeros (``0.960`` -> ``0.96``)."""
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "") else text


@dataclass(frozen=True, slots=True)
class OptionSpec:
    """The schema and surcharge rule of one option of one capability.

    Numbers and integers cost ``surcharge`` plus ``surcharge_per_unit`` for every unit
    above ``surcharge_above`` (default: the option's default) when the value exceeds it;
    booleans cost ``surcharge`` when true; choices cost ``choice_surcharges[value]``.
    """

    name: str
    kind: OptionKind
    default: OptionValue
    minimum: Decimal | None = None
    maximum: Decimal | None = None
    choices: tuple[str, ...] = ()
    surcharge: Decimal = ZERO
    surcharge_above: Decimal | None = None
    surcharge_per_unit: Decimal = ZERO
    choice_surcharges: Mapping[str, Decimal] = field(default_factory=dict)
    description: str = ""

    def coerce(self, value: object) -> OptionValue:
        """Check ``value`` against the schema; raise ``InvalidOptionError`` if it fails."""
        if self.kind is OptionKind.BOOLEAN:
            return self._coerce_bool(value)
        if self.kind is OptionKind.CHOICE:
            if isinstance(value, str) and value in self.choices:
                return value
            raise self._invalid(value, f"one of {', '.join(self.choices)}")
        number = to_decimal(value)
        if number is None:
            raise self._invalid(value, f"a {self.kind.value}")
        if not -OPTION_NUMBER_LIMIT <= number <= OPTION_NUMBER_LIMIT:  # whatever the book says
            raise self._invalid(value, f"between -{OPTION_NUMBER_LIMIT} and {OPTION_NUMBER_LIMIT}")
        if self.kind is OptionKind.INTEGER and number != number.to_integral_value():
            raise self._invalid(value, "a whole number")
        low, high = self.minimum, self.maximum
        if (low is not None and number < low) or (high is not None and number > high):
            if high is None:
                raise self._invalid(value, f"at least {plain(low or Decimal(0))}")
            if low is None:
                raise self._invalid(value, f"at most {plain(high)}")
            raise self._invalid(value, f"between {plain(low)} and {plain(high)}")
        return int(number) if self.kind is OptionKind.INTEGER else number

    def _coerce_bool(self, value: object) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise self._invalid(value, "true or false")

    def _invalid(self, value: object, expected: str) -> InvalidOptionError:
        shown = repr(value)
        shown = shown if len(shown) <= 40 else f"{shown[:37]}..."
        return InvalidOptionError(
            f"option {self.name!r} must be {expected}, got {shown}", option=self.name, value=shown
        )

    def surcharge_for(self, value: OptionValue) -> Decimal:
        """What choosing ``value`` adds to the price (zero when nothing)."""
        if self.kind is OptionKind.BOOLEAN:
            return self.surcharge if value is True else ZERO
        if self.kind is OptionKind.CHOICE:
            return self.choice_surcharges.get(str(value), ZERO)
        assert not isinstance(value, bool | str)  # numbers only past this point
        above = self.surcharge_above if self.surcharge_above is not None else self.default
        assert isinstance(above, Decimal | int)
        number = Decimal(value)
        if number <= above:
            return ZERO
        return self.surcharge + self.surcharge_per_unit * (number - above)


def to_json_scalar(value: OptionValue) -> JsonScalar:
    """The canonical recorded form of a checked option value (no floats)."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else plain(value)
    return value


def normalise_options(
    specs: Mapping[str, OptionSpec], given: Mapping[str, object] | None
) -> dict[str, OptionValue]:
    """Every declared option with its checked value, defaults filled in.

    Raises ``InvalidOptionError`` for an undeclared option or a value out of range.
    """
    given = given or {}
    unknown = sorted(set(given) - set(specs))
    if unknown:
        allowed = ", ".join(sorted(specs)) or "none"
        raise InvalidOptionError(
            f"unknown option {unknown[0]!r} (allowed: {allowed})", option=unknown[0]
        )
    return {
        name: spec.coerce(given[name]) if name in given else spec.default
        for name, spec in specs.items()
    }
