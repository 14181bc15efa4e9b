"""Cost models fitted from jobs, and the price book proposed from them
(``domain.cost_model``)."""

from __future__ import annotations

import dataclasses
import math
import random
import statistics
from datetime import UTC, datetime
from decimal import Decimal
from importlib import resources
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from comfygate.domain import cost_model as cm
from comfygate.domain import cost_proposal as cp
from comfygate.domain.errors import InvalidInputError
from comfygate.domain.least_squares import least_squares
from comfygate.domain.pricing import PriceBook, compute_price
from comfygate.domain.pricing_document import parse_toml, price_book_to_document
from comfygate.domain.pricing_validation import parse_price_book, validate_price_book

AT = datetime(2026, 11, 28, 12, tzinfo=UTC)
PERSON, BUILDING = "colorize.person", "colorize.building"
SIZES = [(800, 600), (1920, 1080), (640, 480), (3000, 2000), (1200, 1600), (400, 300)]


def default_book(**changes: Any) -> PriceBook:
    text = resources.files("comfygate").joinpath("data", "price_book.toml").read_text("utf-8")
    doc = parse_toml(text) | changes
    return parse_price_book(doc)


def jobs(
    capability: str,
    seconds: Any,
    n: int = 60,
    *,
    seed: int = 1,
    upscale: tuple[int, ...] = (1, 2),
    noise: float = 0.0,
) -> list[cm.CostSample]:
    """``n`` jobs of ``capability`` whose time is ``seconds(mp, upscale)`` plus noise."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        width, height = SIZES[i % len(SIZES)]
        factor = upscale[i % len(upscale)]
        mp = width * height / 1e6
        time = seconds(mp, factor) + rng.gauss(0, noise)
        out.append(cm.CostSample(capability, width, height, {"upscale": factor}, time, None))
    return out


# --- least squares -----------------------------------------------------------------


def test_least_squares_recovers_an_exact_line() -> None:
    x = [0.1, 0.5, 1.0, 2.0, 4.0]
    fit = least_squares([[1.0] * 5, x], [2 + 1.5 * xi for xi in x])
    a, b = fit.coefficients
    assert a == pytest.approx(2) and b == pytest.approx(1.5)
    assert fit.r2 == pytest.approx(1) and fit.rmse == pytest.approx(0, abs=1e-12)


def test_least_squares_matches_the_textbook_line_and_its_standard_error() -> None:
    rng = random.Random(7)
    x = [rng.uniform(0, 5) for _ in range(200)]
    y = [3 + 0.7 * xi + rng.gauss(0, 0.4) for xi in x]
    fit = least_squares([[1.0] * len(x), x], y)
    slope, intercept = statistics.linear_regression(x, y)
    assert fit.coefficients == pytest.approx((intercept, slope))
    residuals = [yi - (intercept + slope * xi) for xi, yi in zip(x, y, strict=True)]
    sigma2 = sum(e * e for e in residuals) / (len(x) - 2)
    mean = statistics.fmean(x)
    se_slope = math.sqrt(sigma2 / sum((xi - mean) ** 2 for xi in x))
    assert fit.stderr[1] == pytest.approx(se_slope)
    assert fit.r2 == pytest.approx(statistics.correlation(x, y) ** 2)


def test_a_column_the_others_already_explain_is_not_fitted() -> None:
    x = [1.0, 2.0, 3.0, 4.0]
    never = [0.0] * 4
    always = [1.0] * 4
    twice_x = [2 * xi for xi in x]
    fit = least_squares([[1.0] * 4, x, never, always, twice_x], [1 + xi for xi in x])
    assert fit.coefficients[0] == pytest.approx(1) and fit.coefficients[1] == pytest.approx(1)
    assert fit.coefficients[2:] == (None, None, None)
    assert fit.stderr[2:] == (None, None, None)


def test_constant_observations_have_no_r2() -> None:
    fit = least_squares([[1.0] * 3, [1.0, 2.0, 3.0]], [5.0, 5.0, 5.0])
    assert fit.r2 is None
    assert fit.coefficients == pytest.approx((5.0, 0.0))


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(
        st.tuples(st.floats(0.01, 50), st.booleans(), st.floats(-5, 5, allow_subnormal=False)),
        min_size=4,
        max_size=40,
    ),
    a=st.floats(-10, 10),
    b=st.floats(-10, 10),
    c=st.floats(-10, 10),
)
def test_residuals_are_orthogonal_to_every_fitted_column(
    rows: list[tuple[float, bool, float]], a: float, b: float, c: float
) -> None:
    """The normal equations hold: X'(y - Xb) = 0 for the fitted columns, whatever the
    data, and a noiseless model is recovered exactly where it is identified."""
    ones = [1.0] * len(rows)
    mp = [r[0] for r in rows]
    flag = [float(r[1]) for r in rows]
    y = [a + b * m + c * f + e for m, f, (_, _, e) in zip(mp, flag, rows, strict=True)]
    columns = [ones, mp, flag]
    fit = least_squares(columns, y)
    residuals = [yi - fi for yi, fi in zip(y, fit.fitted, strict=True)]
    scale = max(1.0, *(abs(v) for v in y)) * len(rows) * max(mp)
    for column, coefficient in zip(columns, fit.coefficients, strict=True):
        if coefficient is not None:
            assert abs(sum(x * e for x, e in zip(column, residuals, strict=True))) <= 1e-7 * scale
    exact = least_squares(columns, [a + b * m + c * f for m, f in zip(mp, flag, strict=True)])
    if all(coef is not None for coef in exact.coefficients):
        assert exact.coefficients == pytest.approx((a, b, c), abs=1e-6 * (1 + max(mp)))


# --- one capability ----------------------------------------------------------------


def test_the_columns_are_the_books_own_terms() -> None:
    cap = default_book().capabilities[PERSON]
    assert [f.key for f in cm.features(cap)] == [
        "base", "megapixels", "option:upscale", "option:upscale:per_unit",
    ]  # fmt: skip
    assert [cm.current_amount(cap, f.key) for f in cm.features(cap)] == [10, 2, 5, 0]


def test_a_fit_recovers_time_per_megapixel_and_per_option() -> None:
    cap = default_book().capabilities[PERSON]
    fit = cm.fit_capability(cap, jobs(PERSON, lambda mp, up: 1.2 + 0.8 * mp + 2.0 * (up > 1)))
    seconds = {t.key: t.seconds for t in fit.terms}
    assert seconds["base"] == pytest.approx(1.2)
    assert seconds["megapixels"] == pytest.approx(0.8)
    assert seconds["option:upscale"] == pytest.approx(2.0)
    # upscale is 1 or 2 only: "above 1" and "per unit above 1" are the same column
    assert seconds["option:upscale:per_unit"] is None
    assert fit.samples == 60 and fit.outliers == 0 and fit.r2 == pytest.approx(1)


def test_jobs_far_off_the_line_are_left_out_once() -> None:
    cap = default_book().capabilities[PERSON]
    samples = jobs(PERSON, lambda mp, up: 1.0 + 0.5 * mp, noise=0.02, upscale=(1,))
    slow = [cm.CostSample(PERSON, 800, 600, {"upscale": 1}, 30.0, None) for _ in range(3)]
    fit = cm.fit_capability(cap, samples + slow)
    assert fit.outliers == 3 and fit.samples == 60
    seconds = {t.key: t.seconds for t in fit.terms}
    assert seconds["base"] == pytest.approx(1.0, abs=0.02)
    assert seconds["megapixels"] == pytest.approx(0.5, abs=0.02)


def test_too_few_jobs_fit_nothing_and_say_so() -> None:
    cap = default_book().capabilities[PERSON]
    fit = cm.fit_capability(cap, jobs(PERSON, lambda mp, up: 1 + mp, n=cm.MIN_SAMPLES - 1))
    assert not fit.fitted
    assert fit.notes == (f"9 usable jobs; at least {cm.MIN_SAMPLES} are needed to fit",)


def test_jobs_the_fit_cannot_read_are_counted_apart() -> None:
    """Options the book refuses or no longer has (their cost would land on the other
    terms), and times that are no job's cost: one NaN once made every term unfitted
    and priced the capability at 0; a huge one overflowed (a 500)."""
    cap = default_book().capabilities[PERSON]
    odd = [
        cm.CostSample(PERSON, 800, 600, {"upscale": 9}, 1.48),  # the book's max is 4
        cm.CostSample(PERSON, 800, 600, {"upscale": 1, "retired": True}, 1.48),
        *(cm.CostSample(PERSON, 800, 600, {"upscale": 1}, t) for t in
          (math.nan, math.inf, -math.inf, -1.0, 0.0, 1e-30, 1e200)),
    ]  # fmt: skip
    fit = cm.fit_capability(cap, jobs(PERSON, lambda mp, up: 1 + mp) + odd)
    assert fit.unreadable == 9 and fit.samples == 60
    seconds = {t.key: t.seconds for t in fit.terms}
    assert seconds["base"] == pytest.approx(1) and seconds["megapixels"] == pytest.approx(1)


def test_memory_is_modelled_against_size_when_jobs_report_it() -> None:
    cap = default_book().capabilities[PERSON]
    samples = [
        dataclasses.replace(s, gpu_peak_mb=round(900 + 300 * s.megapixels))
        for s in jobs(PERSON, lambda mp, up: 1 + mp)
    ]
    memory = cm.fit_capability(cap, samples).memory
    assert memory is not None and memory.samples == 60
    assert memory.base_mb == pytest.approx(900, abs=1)
    assert memory.mb_per_megapixel == pytest.approx(300, abs=1)


# --- the proposal ------------------------------------------------------------------


def fitted_book() -> tuple[PriceBook, list[cm.CapabilityFit]]:
    book = default_book()
    person = jobs(PERSON, lambda mp, up: 1.0 + 0.5 * mp + 1.5 * (up > 1), noise=0.01, seed=2)
    building = jobs(BUILDING, lambda mp, up: 3.0 + 0.5 * mp + 1.5 * (up > 1), noise=0.01, seed=3)
    fits = [
        cm.fit_capability(book.capabilities[PERSON], person),
        cm.fit_capability(book.capabilities[BUILDING], building),
    ]
    return book, fits


def test_at_a_given_rate_every_fitted_amount_is_its_seconds_times_the_rate() -> None:
    book, fits = fitted_book()
    proposal = cp.propose(
        book, fits, version="fit-1", description="d", tokens_per_second=Decimal(4)
    )
    person = proposal.book.capabilities[PERSON]
    seconds = {t.key: t.seconds for t in fits[0].terms}
    assert seconds["base"] is not None and seconds["megapixels"] is not None
    assert person.base == (Decimal(repr(seconds["base"])) * 4).quantize(cp.CENT)
    assert person.coefficients["megapixels"] == (Decimal(repr(seconds["megapixels"])) * 4).quantize(
        cp.CENT
    )
    assert person.options["upscale"].surcharge == pytest.approx(Decimal(6), abs=Decimal("0.2"))
    assert person.options["upscale"].surcharge_per_unit == 0  # not fitted: kept
    assert person.minimum == 10 and proposal.book.rounding == book.rounding
    assert not proposal.revenue_neutral and proposal.tokens_per_second == 4
    assert {t.capability: t.proposed_tokens_per_s for t in proposal.tracking} == pytest.approx(
        {PERSON: 4, BUILDING: 4}, rel=0.02
    )


def test_by_default_the_rate_keeps_the_fitted_jobs_total_price() -> None:
    book, fits = fitted_book()
    proposal = cp.propose(book, fits, version="fit-1", description="d")
    assert proposal.revenue_neutral
    assert proposal.revenue_change == pytest.approx(0, abs=1e-3)  # cents of rounding
    # The seed's book charges building 5 more than person for the same work; its time
    # says 2 s more. Tokens per GPU second are now the same for both.
    now = {t.capability: t.current_tokens_per_s for t in proposal.tracking}
    then = {t.capability: t.proposed_tokens_per_s for t in proposal.tracking}
    assert now[PERSON] > now[BUILDING] * 1.3
    assert then[PERSON] == pytest.approx(then[BUILDING], rel=0.02)


def test_the_proposal_is_a_valid_book_that_prices_as_its_amounts_say() -> None:
    book, fits = fitted_book()
    proposal = cp.propose(book, fits, version="fit-1", description="fitted")
    doc = price_book_to_document(proposal.book)
    assert validate_price_book(doc) == []
    again = parse_price_book(doc)
    person = again.capabilities[PERSON]
    price = compute_price(
        again, capability=PERSON, width=1920, height=1080, options={"upscale": 2}, at=AT
    )
    expected = person.base + Decimal("2.0736") * person.coefficients["megapixels"]
    expected += person.options["upscale"].surcharge
    assert price.tokens == max(10, int(expected.to_integral_value(rounding="ROUND_HALF_UP")))
    assert price.price_book_version == "fit-1"
    changed = {(c.capability, c.key) for c in proposal.changes}
    assert (PERSON, "base") in changed and (BUILDING, "option:upscale:per_unit") in changed


def test_an_option_nobody_used_keeps_its_price_and_says_so() -> None:
    book = default_book()
    fit = cm.fit_capability(
        book.capabilities[PERSON], jobs(PERSON, lambda mp, up: 1 + mp, upscale=(1,))
    )
    assert "upscale > 1: no job had it; price kept" in fit.notes
    proposal = cp.propose(book, [fit], version="v", description="d", tokens_per_second=Decimal(3))
    assert proposal.book.capabilities[PERSON].options["upscale"].surcharge == 5
    assert proposal.book.capabilities[PERSON].base == 3  # 1 s at 3 tokens a second
    assert proposal.book.capabilities[BUILDING] == book.capabilities[BUILDING]  # not fitted


def test_a_term_every_job_had_keeps_its_price_and_the_others_give_it_up() -> None:
    """Every job 800x600 and upscaled: the size and the upscale cannot be told from
    the base, whose fitted seconds carry their cost. Their prices are kept and taken
    off the base, so a job like these costs its seconds at the rate (it once paid
    the kept prices on top)."""
    book = default_book()
    samples = [cm.CostSample(PERSON, 800, 600, {"upscale": 2}, 3.0) for _ in range(20)]
    fit = cm.fit_capability(book.capabilities[PERSON], samples)
    assert {t.key for t in fit.terms if t.seconds is not None} == {"base"}
    assert fit.absorbed["megapixels"] == pytest.approx({"base": 0.48})
    assert fit.absorbed["option:upscale"] == pytest.approx({"base": 1})
    proposal = cp.propose(book, [fit], version="v", description="d", tokens_per_second=Decimal(5))
    price = compute_price(
        proposal.book, capability=PERSON, width=800, height=600, options={"upscale": 2}, at=AT
    )
    assert price.tokens == 15  # 3 s x 5: 15 - 0.96 - 5 = 9.04 base, + 0.96 + 5
    assert proposal.book.capabilities[PERSON].base == Decimal("9.04")
    neutral = cp.propose(book, [fit], version="v", description="d")
    assert neutral.revenue_change == pytest.approx(0, abs=1e-3)


def test_a_choice_surcharge_on_the_default_is_the_baseline_not_extra() -> None:
    """The default choice cost 4 more than the base; the jobs say both choices take
    the same time: the proposal charges both the same (it once kept the 4 on the
    default and charged it twice)."""
    doc = parse_toml(
        resources.files("comfygate").joinpath("data", "price_book.toml").read_text("utf-8")
    )
    doc["capabilities"][PERSON]["options"] = {
        "quality": {"type": "choice", "choices": ["fast", "hq"], "default": "hq",
                    "surcharges": {"hq": "4"}},
    }  # fmt: skip
    book = parse_price_book(doc)
    rng = random.Random(5)
    samples = [
        cm.CostSample(PERSON, w, h, {"quality": q}, 1 + w * h / 1e6 + rng.gauss(0, 0.01))
        for (w, h), q in zip(SIZES * 10, ["fast", "hq"] * 30, strict=True)
    ]
    fit = cm.fit_capability(book.capabilities[PERSON], samples)
    proposal = cp.propose(book, [fit], version="v", description="d", tokens_per_second=Decimal(5))

    def price(quality: str) -> int:
        return compute_price(
            proposal.book, capability=PERSON, width=1920, height=1080,
            options={"quality": quality}, at=AT,
        ).tokens  # fmt: skip

    assert price("fast") == price("hq") == 15  # (1 + 2.07) s x 5 = 15.4
    changed = {c.key: (c.current, c.proposed) for c in proposal.changes}
    assert changed["option:quality=hq"] == (4, 4)  # kept: the baseline's own


def test_a_size_every_job_had_with_times_to_the_millisecond_still_finds_cold_starts() -> None:
    """More than half the residuals equal: the median absolute deviation is 0, and
    the outlier pass once let five 30 s cold starts through (base 2.4 s)."""
    cap = default_book().capabilities[PERSON]
    samples = [cm.CostSample(PERSON, 800, 600, {"upscale": 1}, 1.0) for _ in range(100)]
    samples += [cm.CostSample(PERSON, 800, 600, {"upscale": 1}, 30.0) for _ in range(5)]
    fit = cm.fit_capability(cap, samples)
    assert (fit.outliers, fit.samples) == (5, 100)
    assert {t.key: t.seconds for t in fit.terms}["base"] == pytest.approx(1.0)


def test_a_term_that_saves_time_is_priced_zero() -> None:
    book = default_book()
    fit = cm.fit_capability(
        book.capabilities[PERSON], jobs(PERSON, lambda mp, up: 2 + mp - 0.5 * (up > 1))
    )
    assert any("saves time" in note for note in fit.notes)
    proposal = cp.propose(book, [fit], version="v", description="d", tokens_per_second=Decimal(3))
    assert proposal.book.capabilities[PERSON].options["upscale"].surcharge == 0


def test_nothing_to_fit_is_refused() -> None:
    book = default_book()
    fit = cm.fit_capability(book.capabilities[PERSON], [])
    with pytest.raises(InvalidInputError, match="enough jobs"):
        cp.propose(book, [fit], version="v", description="d")
    _, fits = fitted_book()
    with pytest.raises(InvalidInputError, match="positive"):
        cp.propose(book, fits, version="v", description="d", tokens_per_second=Decimal(0))


def test_a_term_within_noise_of_zero_has_no_measurable_cost_and_is_priced_zero() -> None:
    book = default_book()
    samples = jobs(PERSON, lambda mp, up: 1 + mp, n=200, noise=0.1, upscale=(1, 2, 4))
    fit = cm.fit_capability(book.capabilities[PERSON], samples)
    terms = {t.key: t for t in fit.terms}
    step, per_unit = terms["option:upscale"], terms["option:upscale:per_unit"]
    assert step.seconds is not None and step.stderr is not None and per_unit.seconds is not None
    assert not step.measurable and abs(step.seconds) < 2 * step.stderr
    assert (
        step.priced_seconds == 0
        and terms["megapixels"].priced_seconds == terms["megapixels"].seconds
    )
    assert any(note.startswith("upscale > 1: no measurable cost") for note in fit.notes)
    proposal = cp.propose(book, [fit], version="v", description="d", tokens_per_second=Decimal(3))
    upscale = proposal.book.capabilities[PERSON].options["upscale"]
    assert upscale.surcharge == 0
