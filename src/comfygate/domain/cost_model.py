"""Cost models: what a job costs in GPU seconds, fitted from the jobs that ran.

SPEC section 3, "learning prices from costs": from the recorded inference time of past
jobs, fit per capability a model of the form the price book already charges in,

    seconds = a + b x megapixels + (one term per option surcharge),

report how well it fits, and propose a price book whose tokens are those seconds times
one rate (tokens per GPU second). The operator reads the difference and activates it
(or not) with ``price-books activate``.

The model's columns are the book's own terms (``features``), so every fitted
coefficient maps back to one amount of the book: the intercept to ``base``, the
megapixel slope to ``coefficients.megapixels``, an option's step to its ``surcharge``
(a number option's slope above the step to ``surcharge_per_unit``, a choice's step to
its entry in ``surcharges``). A term the jobs cannot tell apart from the others (an
option nobody used, or everyone did) is not fitted and keeps its current amount.

Least squares by a QR decomposition (modified Gram-Schmidt) in floats: a few columns
and up to ~10^5 rows, so plain Python suffices, and a column that adds nothing to the
ones before it is found as the decomposition reaches it. One robust pass then drops
jobs whose residual is beyond ``OUTLIER_SCALE`` robust standard deviations (a job that
waited on a model load or a busy GPU) and fits again.

Pure: no I/O. Prices stay ``Decimal``; floats are only the statistics.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal

from comfygate.domain.errors import InvalidOptionError
from comfygate.domain.least_squares import RANK_TOLERANCE, least_squares
from comfygate.domain.pricing import CapabilityPrice
from comfygate.domain.pricing_options import (
    ZERO,
    JsonScalar,
    OptionKind,
    OptionSpec,
    OptionValue,
    normalise_options,
    plain,
)

MIN_SAMPLES = 10
"""Fewer jobs than this for a capability and it is not fitted (its prices stay)."""
OUTLIER_SCALE = 4.0
"""Jobs whose residual is beyond this many robust standard deviations (1.4826 x the
median absolute deviation) are left out of the second fit."""
WEAK_R2 = 0.5
"""Below this, the fit explains too little of the variation to price by: said in the
capability's notes."""
SIGNIFICANCE = 2.0
"""A term fitted within this many standard errors of zero has no measurable cost: it is
priced 0 (about a 95 % interval)."""
SECONDS_RANGE = (1e-6, 1e5)
"""Inference times outside this range (and times that are not numbers) are not a job's
cost but a broken report: such jobs are left out as unreadable."""
_MAD_TO_SD = 1.4826
_MEAN_AD_TO_SD = 1.2533  # sqrt(pi / 2): the mean absolute deviation of a normal


@dataclass(frozen=True, slots=True)
class CostSample:
    """One succeeded job: what was asked, and what it cost."""

    capability: str
    width: int
    height: int
    options: Mapping[str, JsonScalar]
    """As recorded with the job (canonical JSON scalars)."""
    seconds: float
    """Inference time: the engine's own measure, never the queue wait or a cold start."""
    gpu_peak_mb: int | None = None

    @property
    def megapixels(self) -> float:
        return self.width * self.height / 1_000_000


@dataclass(frozen=True, slots=True)
class Feature:
    """One column of the model: a term of the capability's price formula."""

    key: str
    """``base``, ``megapixels``, ``option:NAME``, ``option:NAME:per_unit`` or
    ``option:NAME=CHOICE``."""
    label: str
    value: Callable[[Mapping[str, OptionValue]], float] = field(compare=False)
    """The column's value for a job, from the job's megapixels (``"_mp"``) and
    checked options."""


def _threshold(spec: OptionSpec) -> Decimal:
    above = spec.surcharge_above if spec.surcharge_above is not None else spec.default
    assert isinstance(above, Decimal | int) and not isinstance(above, bool)
    return Decimal(above)


def _number(value: OptionValue) -> Decimal:
    assert isinstance(value, int | Decimal) and not isinstance(value, bool)
    return Decimal(value)


def _chose(name: str, choice: str) -> Callable[[Mapping[str, OptionValue]], float]:
    return lambda o: float(o[name] == choice)


def _option_features(spec: OptionSpec) -> list[Feature]:
    name = spec.name
    if spec.kind is OptionKind.BOOLEAN:
        return [Feature(f"option:{name}", f"{name} on", lambda o: float(o[name] is True))]
    if spec.kind is OptionKind.CHOICE:  # the default last: the one left unfitted
        ordered = [c for c in spec.choices if c != spec.default] + [str(spec.default)]
        return [Feature(f"option:{name}={c}", f"{name}={c}", _chose(name, c)) for c in ordered]
    above = _threshold(spec)
    return [
        Feature(
            f"option:{name}",
            f"{name} > {plain(above)}",
            lambda o: float(_number(o[name]) > above),
        ),
        Feature(
            f"option:{name}:per_unit",
            f"{name} per unit above {plain(above)}",
            lambda o: float(max(_number(o[name]) - above, ZERO)),
        ),
    ]


def features(cap: CapabilityPrice) -> list[Feature]:
    """The model's columns for ``cap``, in the order they are fitted: base, megapixels,
    then each option's terms as the book declares them."""
    columns = [
        Feature("base", "base", lambda o: 1.0),
        Feature("megapixels", "per megapixel", lambda o: float(o["_mp"])),
    ]
    for spec in cap.options.values():
        columns.extend(_option_features(spec))
    return columns


def current_amount(cap: CapabilityPrice, key: str) -> Decimal:
    """The amount of ``cap`` that the feature ``key`` prices, in tokens."""
    if key == "base":
        return cap.base
    if key == "megapixels":
        return cap.coefficients.get("megapixels", ZERO)
    name, _, choice = key.removeprefix("option:").partition("=")
    name, _, per_unit = name.partition(":")
    spec = cap.options[name]
    if choice:
        return spec.choice_surcharges.get(choice, ZERO)
    return spec.surcharge_per_unit if per_unit else spec.surcharge


def with_amount(cap: CapabilityPrice, key: str, amount: Decimal) -> CapabilityPrice:
    """``cap`` with the amount that ``key`` prices set to ``amount``."""
    if key == "base":
        return replace(cap, base=amount)
    if key == "megapixels":
        return replace(cap, coefficients={**cap.coefficients, "megapixels": amount})
    name, _, choice = key.removeprefix("option:").partition("=")
    name, _, per_unit = name.partition(":")
    spec = cap.options[name]
    if choice:
        spec = replace(spec, choice_surcharges={**spec.choice_surcharges, choice: amount})
    elif per_unit:
        spec = replace(spec, surcharge_per_unit=amount)
    else:
        spec = replace(spec, surcharge=amount)
    return replace(cap, options={**cap.options, name: spec})


# --- one capability ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Term:
    """One fitted term: GPU seconds it adds, with its standard error (None when the
    jobs could not tell it apart from the others: it keeps its current price)."""

    key: str
    label: str
    seconds: float | None
    stderr: float | None

    @property
    def priced_seconds(self) -> float | None:
        """The seconds the proposal prices: None when not fitted (the price is kept),
        zero when the cost is not measurable (within ``SIGNIFICANCE`` standard errors
        of zero) or negative (a book cannot pay for an option), else ``seconds``."""
        if self.seconds is None:
            return None
        if self.seconds <= 0 or not self.measurable:
            return 0.0
        return self.seconds

    @property
    def measurable(self) -> bool:
        """Whether ``seconds`` lies more than ``SIGNIFICANCE`` standard errors from 0."""
        if self.seconds is None:
            return False
        return self.stderr is None or abs(self.seconds) > SIGNIFICANCE * self.stderr


@dataclass(frozen=True, slots=True)
class MemoryModel:
    """Peak GPU memory against image size: ``mb = base_mb + mb_per_megapixel x MP``."""

    base_mb: float
    mb_per_megapixel: float | None
    r2: float | None
    samples: int


@dataclass(frozen=True, slots=True)
class CapabilityFit:
    """The cost model of one capability, or why there is none (``terms`` empty)."""

    capability: str
    samples: int
    """Jobs fitted (after leaving out the outliers)."""
    outliers: int
    unreadable: int
    """Jobs left out unread: options the current book does not accept (or no longer
    has), or a time that is not a number of seconds in ``SECONDS_RANGE``."""
    terms: tuple[Term, ...] = ()
    r2: float | None = None
    rmse_s: float | None = None
    mean_s: float | None = None
    memory: MemoryModel | None = None
    notes: tuple[str, ...] = ()
    rows: tuple[tuple[tuple[float, ...], float], ...] = field(default=(), repr=False)
    """The fitted jobs' columns and seconds, for the proposal's revenue sums."""
    absorbed: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    """For each term not fitted whose column is not all zero: that column as a
    combination of the fitted ones (term key -> weight). Its cost is in their fitted
    seconds, so the proposal takes its kept price off theirs."""

    @property
    def fitted(self) -> bool:
        return bool(self.terms)


def _rows(
    cap: CapabilityPrice, columns: Sequence[Feature], samples: Sequence[CostSample]
) -> tuple[list[tuple[tuple[float, ...], float, int | None]], int]:
    """Each readable job's column values, seconds and peak memory; and how many jobs
    were not readable. The option columns are worked out once per distinct set of
    recorded options (jobs share a few), the first two are 1 and the megapixels. A
    book's option the recorded ones lack takes its default (the job ran before it was
    added); a recorded option the book no longer has makes the job unreadable, since
    its cost would land on the other terms."""
    assert [f.key for f in columns[:2]] == ["base", "megapixels"]
    low, high = SECONDS_RANGE
    by_options: dict[tuple[tuple[str, JsonScalar], ...], tuple[float, ...] | None] = {}
    rows: list[tuple[tuple[float, ...], float, int | None]] = []
    unreadable = 0
    for sample in samples:
        recorded = tuple(sample.options.items())
        if recorded not in by_options:
            by_options[recorded] = _option_values(cap, columns, dict(recorded))
        option_values = by_options[recorded]
        seconds = sample.seconds
        if option_values is None or not low <= seconds <= high:  # (False for NaN)
            unreadable += 1
            continue
        values = (1.0, sample.megapixels, *option_values)
        rows.append((values, float(seconds), sample.gpu_peak_mb))
    return rows, unreadable


def _option_values(
    cap: CapabilityPrice, columns: Sequence[Feature], recorded: Mapping[str, JsonScalar]
) -> tuple[float, ...] | None:
    """The option columns of a job with ``recorded`` options; None if unreadable."""
    if any(name not in cap.options for name in recorded):
        return None
    try:
        chosen = normalise_options(cap.options, recorded)
    except InvalidOptionError:
        return None
    return tuple(f.value(chosen) for f in columns[2:])


def _outliers(y: Sequence[float], fitted: Sequence[float]) -> list[bool]:
    """Which rows lie beyond ``OUTLIER_SCALE`` robust standard deviations: 1.4826 x
    the median absolute deviation, or where more than half the residuals are equal
    (the MAD is then 0: one image size, times rounded to the millisecond) 1.2533 x the
    mean absolute deviation."""
    residuals = [yi - fi for yi, fi in zip(y, fitted, strict=True)]
    middle = statistics.median(residuals)
    deviations = [abs(e - middle) for e in residuals]
    exact = RANK_TOLERANCE * max(map(abs, y))  # an exact fit, but for rounding
    scale = _MAD_TO_SD * statistics.median(deviations)
    if scale <= exact:
        scale = _MEAN_AD_TO_SD * statistics.fmean(deviations)
    if scale <= exact:
        return [False] * len(residuals)
    return [d > OUTLIER_SCALE * scale for d in deviations]


def _memory_model(
    rows: Sequence[tuple[tuple[float, ...], float, int | None]],
) -> MemoryModel | None:
    measured = [(values[1], float(mb)) for values, _, mb in rows if mb is not None and mb > 0]
    if len(measured) < MIN_SAMPLES:
        return None
    fit = least_squares(
        [[1.0] * len(measured), [mp for mp, _ in measured]], [mb for _, mb in measured]
    )
    base, slope = fit.coefficients
    assert base is not None
    return MemoryModel(base_mb=base, mb_per_megapixel=slope, r2=fit.r2, samples=len(measured))


def fit_capability(cap: CapabilityPrice, samples: Sequence[CostSample]) -> CapabilityFit:
    """The cost model of ``cap`` from its jobs ``samples`` (see the module's notes)."""
    columns = features(cap)
    rows, unreadable = _rows(cap, columns, samples)
    if len(rows) < MIN_SAMPLES:
        note = f"{len(rows)} usable jobs; at least {MIN_SAMPLES} are needed to fit"
        return CapabilityFit(cap.name, len(rows), 0, unreadable, notes=(note,))
    fit = least_squares(
        list(zip(*(values for values, _, _ in rows), strict=True)), [s for _, s, _ in rows]
    )
    drop = _outliers([s for _, s, _ in rows], fit.fitted)
    kept = [row for row, out in zip(rows, drop, strict=True) if not out]
    outliers = len(rows) - len(kept)
    if outliers and len(kept) >= MIN_SAMPLES:
        fit = least_squares(
            list(zip(*(values for values, _, _ in kept), strict=True)), [s for _, s, _ in kept]
        )
        rows = kept
    else:
        outliers = 0
    terms = tuple(
        Term(f.key, f.label, b, e)
        for f, b, e in zip(columns, fit.coefficients, fit.stderr, strict=True)
    )
    seconds = [s for _, s, _ in rows]
    table = list(zip(*(values for values, _, _ in rows), strict=True))
    absorbed = _absorbed(terms, table)
    return CapabilityFit(
        capability=cap.name,
        samples=len(rows),
        outliers=outliers,
        unreadable=unreadable,
        terms=terms,
        r2=fit.r2,
        rmse_s=fit.rmse,
        mean_s=math.fsum(seconds) / len(seconds),
        memory=_memory_model(rows),
        notes=_notes(terms, fit.r2, absorbed),
        rows=tuple((values, s) for values, s, _ in rows),
        absorbed=absorbed,
    )


def _absorbed(
    terms: Sequence[Term], table: Sequence[Sequence[float]]
) -> dict[str, dict[str, float]]:
    """Each term not fitted, whose column is not all zero, as a combination of the
    fitted columns (an option every job had is the intercept's column; a size every
    job had is a multiple of it): the fitted seconds of those carry its cost."""
    fitted = [i for i, t in enumerate(terms) if t.seconds is not None]
    out: dict[str, dict[str, float]] = {}
    for j, term in enumerate(terms):
        if term.seconds is not None or not any(table[j]):
            continue
        weights = least_squares([table[i] for i in fitted], table[j]).coefficients
        out[term.key] = {
            terms[i].key: w for i, w in zip(fitted, weights, strict=True) if w is not None and w
        }
    return out


def _notes(
    terms: Sequence[Term], r2: float | None, absorbed: Mapping[str, Mapping[str, float]]
) -> tuple[str, ...]:
    notes = []
    if r2 is not None and r2 < WEAK_R2:
        notes.append(f"weak fit (R^2 {r2:.2f}): size and options explain little of the time")
    for term in terms:
        if term.seconds is None and term.key in absorbed:
            notes.append(
                f"{term.label}: the jobs cannot tell its cost from the others' (they all had"
                " it, or it goes with another term); price kept, and taken off theirs"
            )
        elif term.seconds is None:
            notes.append(f"{term.label}: no job had it; price kept")
        elif not term.measurable:
            notes.append(
                f"{term.label}: no measurable cost ({term.seconds:.3f} +/- "
                f"{term.stderr or 0:.3f} s); priced 0"
            )
        elif term.seconds < 0:
            notes.append(f"{term.label}: fitted at {term.seconds:.3f} s (saves time); priced 0")
    return tuple(notes)


def predicted_seconds(
    cap: CapabilityPrice, fit: CapabilityFit, width: int, height: int, options: Mapping[str, object]
) -> float | None:
    """What the model says a job of ``cap`` takes (None when ``fit`` has no model);
    terms not fitted count nothing."""
    if not fit.fitted:
        return None
    chosen: dict[str, OptionValue] = dict(normalise_options(cap.options, options))
    chosen["_mp"] = Decimal(width * height) / 1_000_000
    return math.fsum(
        term.seconds * feature.value(chosen)
        for term, feature in zip(fit.terms, features(cap), strict=True)
        if term.seconds is not None
    )
