"""A price book proposed from cost models: each fitted amount is its GPU seconds times
one rate of tokens per GPU second (``domain.cost_model`` fits the seconds). Pure."""

from __future__ import annotations

import math
import operator
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from decimal import ROUND_HALF_UP, Decimal

from comfygate.domain.cost_model import CapabilityFit, current_amount, with_amount
from comfygate.domain.errors import InvalidInputError
from comfygate.domain.least_squares import dot
from comfygate.domain.pricing import MAX_PRICE_TOKENS, CapabilityPrice, PriceBook
from comfygate.domain.pricing_options import ZERO

CENT = Decimal("0.01")
"""Proposed amounts are rounded to hundredths of a token."""


@dataclass(frozen=True, slots=True)
class AmountChange:
    """One amount of the book: what it is, and what the fit proposes."""

    capability: str
    key: str
    label: str
    current: Decimal
    proposed: Decimal


@dataclass(frozen=True, slots=True)
class Tracking:
    """How closely a capability's prices follow its cost, on the jobs fitted: the
    median tokens per GPU second now and as proposed (before time-of-day rates,
    discounts, rounding and minimums)."""

    capability: str
    current_tokens_per_s: float
    proposed_tokens_per_s: float


@dataclass(frozen=True, slots=True)
class Proposal:
    book: PriceBook
    tokens_per_second: Decimal
    revenue_neutral: bool
    """True when the rate was chosen so that the fitted jobs cost, in sum, what they
    cost under the current book (before rounding and minimums)."""
    changes: tuple[AmountChange, ...]
    tracking: tuple[Tracking, ...]
    revenue_change: float | None
    """Proposed over current list tokens of the fitted jobs, minus one."""


def _tokens(seconds: float, rate: Decimal, less: Decimal = ZERO) -> Decimal:
    """``seconds`` at ``rate``, less the kept prices it carries, in hundredths (never
    below 0 nor past the most a book may charge)."""
    amount = Decimal(repr(max(seconds, 0.0))) * rate - less
    amount = max(amount, ZERO).quantize(CENT, rounding=ROUND_HALF_UP)
    return min(amount, Decimal(MAX_PRICE_TOKENS))


def _column_sums(fit: CapabilityFit) -> list[float]:
    """Each column summed over the fitted jobs: a linear price summed over the jobs is
    the price of these sums."""
    return [math.fsum(column) for column in zip(*(values for values, _ in fit.rows), strict=True)]


def _rate(book: PriceBook, fits: Sequence[CapabilityFit]) -> Decimal:
    """Tokens per GPU second at which the fitted jobs cost what they cost now.

    A kept term's price comes off the fitted terms carrying its cost (``absorbed``):
    over the jobs the two cancel, so the proposal charges the rate times the fitted
    seconds, and the rate is the current total over those seconds."""
    current = fitted_seconds = 0.0
    for fit in fits:
        cap = book.capabilities[fit.capability]
        for term, total in zip(fit.terms, _column_sums(fit), strict=True):
            current += float(current_amount(cap, term.key)) * total
            if term.priced_seconds is not None:
                fitted_seconds += term.priced_seconds * total
    if fitted_seconds <= 0 or current <= 0:
        raise InvalidInputError(
            "the fitted jobs give no positive cost to price by; give --tokens-per-second"
        )
    rate = current / fitted_seconds
    if not rate <= MAX_PRICE_TOKENS:
        raise InvalidInputError(
            f"the fitted jobs cost {rate:.3g} tokens per GPU second now, past what a book"
            " may charge; give --tokens-per-second"
        )
    return Decimal(repr(rate)).quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP)


def _carried(cap: CapabilityPrice, fit: CapabilityFit) -> dict[str, Decimal]:
    """What each fitted term's seconds carry of the kept terms' prices, in tokens."""
    carried: dict[str, Decimal] = defaultdict(Decimal)
    for key, weights in fit.absorbed.items():
        kept = current_amount(cap, key)
        for other, weight in weights.items():
            carried[other] += kept * Decimal(repr(weight))
    return carried


def _repriced(
    cap: CapabilityPrice, fit: CapabilityFit, rate: Decimal
) -> tuple[CapabilityPrice, list[AmountChange]]:
    """``cap`` with its fitted amounts at ``rate``; and every amount's change."""
    was, carried = cap, _carried(cap, fit)
    for term in fit.terms:
        if term.priced_seconds is not None:
            amount = _tokens(term.priced_seconds, rate, carried.get(term.key, ZERO))
            cap = with_amount(cap, term.key, amount)
    changes = [
        AmountChange(
            cap.name, t.key, t.label, current_amount(was, t.key), current_amount(cap, t.key)
        )
        for t in fit.terms
    ]
    return cap, changes


def propose(
    book: PriceBook,
    fits: Sequence[CapabilityFit],
    *,
    version: str,
    description: str,
    tokens_per_second: Decimal | None = None,
) -> Proposal:
    """A new version of ``book`` whose fitted amounts are their seconds times one rate.

    The rate is ``tokens_per_second``, or else the one that keeps the fitted jobs'
    total list price (``_rate``). Capabilities not fitted, terms not fitted (less what
    the fitted ones carry of them: ``_carried``), minimums, rounding, time-of-day
    windows and account terms are kept as they are.
    """
    fitted = [f for f in fits if f.fitted and f.capability in book.capabilities]
    if not fitted:
        raise InvalidInputError("no capability has enough jobs to fit a cost model")
    if tokens_per_second is not None and not ZERO < tokens_per_second <= MAX_PRICE_TOKENS:
        raise InvalidInputError("tokens per second must be positive")
    rate = tokens_per_second if tokens_per_second is not None else _rate(book, fitted)
    capabilities = dict(book.capabilities)
    changes: list[AmountChange] = []
    tracking: list[Tracking] = []
    now_total = then_total = 0.0
    for fit in fitted:
        cap, ours = _repriced(capabilities[fit.capability], fit, rate)
        capabilities[cap.name] = cap
        changes += ours
        old_amounts = [float(c.current) for c in ours]
        new_amounts = [float(c.proposed) for c in ours]
        totals = _column_sums(fit)
        now_total += dot(old_amounts, totals)
        then_total += dot(new_amounts, totals)
        now = [sum(map(operator.mul, old_amounts, values)) for values, _ in fit.rows]
        then = [sum(map(operator.mul, new_amounts, values)) for values, _ in fit.rows]
        timed = [(a, b, s) for a, b, (_, s) in zip(now, then, fit.rows, strict=True) if s > 0]
        if timed:
            tracking.append(
                Tracking(
                    cap.name,
                    statistics.median(a / s for a, _, s in timed),
                    statistics.median(b / s for _, b, s in timed),
                )
            )
    proposed = replace(book, version=version, description=description, capabilities=capabilities)
    return Proposal(
        book=proposed,
        tokens_per_second=rate,
        revenue_neutral=tokens_per_second is None,
        changes=tuple(changes),
        tracking=tuple(tracking),
        revenue_change=then_total / now_total - 1 if now_total > 0 else None,
    )
