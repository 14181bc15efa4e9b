"""The jobs ``pricing fit`` learns from, read by each backend (``SqlCostSamples``):
succeeded, timed, in the window, of the engines asked for, newest first, with the
options recorded on the job; and a fit over them end to end."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa

from comfygate.adapters.db.sql_pricing import build_pricing_services
from comfygate.adapters.db.sql_reports import SqlCostSamples
from comfygate.domain import analytics as da
from comfygate.services.cost_fit import CostFitting
from tests.fakes import FakeClock
from tests.reports_support import T0, Use, new_account, store_usage

HOUR = timedelta(hours=1)


def use(account: str, hours: float, seconds: float | None, **kw: object) -> Use:
    values: dict[str, object] = {
        "capability": "colorize.person", "outcome": da.SUCCEEDED, "tokens_charged": 11,
        "list_tokens": 11, "failure_code": None, "engine": "comfyui",
    }  # fmt: skip
    values.update(kw)
    return Use(account, inference_s=seconds, at=T0 + hours * HOUR, **values)  # type: ignore[arg-type]


def test_only_succeeded_timed_jobs_of_the_window_and_engines(engine: sa.Engine) -> None:
    acct = new_account(engine, "acme")
    store_usage(engine, [
        use(acct, 1, 1.5, width=1920, height=1080, options='{"upscale": 2}', gpu_peak_mb=2100),
        use(acct, 2, 0.8, engine="ddcolor-onnx"),
        use(acct, 3, 0.9, engine="preview"),  # no model: not a cost
        use(acct, 4, None),  # no time
        use(acct, 5, 4.0, outcome=da.FAILED, failure_code="timeout"),
        use(acct, 6, 2.0, outcome=da.CANCELED),
        use(acct, -1, 1.0),  # before the window
        use(acct, 24, 1.0),  # at its end: outside
    ])  # fmt: skip
    samples = SqlCostSamples(engine)
    window = {"since": T0, "until": T0 + 24 * HOUR, "limit": 100}
    got = samples.samples(engines=None, exclude_engines=("preview",), **window)  # type: ignore[arg-type]
    assert [(s.seconds, s.width, s.height, dict(s.options), s.gpu_peak_mb) for s in got] == [
        (0.8, 800, 600, {}, None),
        (1.5, 1920, 1080, {"upscale": 2}, 2100),
    ]  # newest first
    only = samples.samples(engines=("preview",), exclude_engines=("preview",), **window)  # type: ignore[arg-type]
    assert [s.seconds for s in only] == [0.9]
    newest = samples.samples(engines=None, exclude_engines=(), **{**window, "limit": 1})  # type: ignore[arg-type]
    assert [s.seconds for s in newest] == [0.9]
    other = new_account(engine, "other")
    store_usage(engine, [use(other, 7, 5.0)])
    everyone = samples.samples(engines=None, exclude_engines=("preview",), **window)  # type: ignore[arg-type]
    mine = samples.samples(engines=None, exclude_engines=("preview",), account_id=acct, **window)  # type: ignore[arg-type]
    assert [s.seconds for s in everyone] == [5.0, 0.8, 1.5]
    assert [s.seconds for s in mine] == [0.8, 1.5]


def test_a_fit_over_stored_jobs_proposes_a_valid_book(engine: sa.Engine) -> None:
    acct = new_account(engine, "acme")
    sizes = [(800, 600), (1920, 1080), (3000, 2000), (640, 480)]
    uses = []
    for i in range(40):
        width, height = sizes[i % 4]
        upscale = 1 + i % 2
        mp = width * height / 1e6
        for capability, base in (("colorize.person", 1.0), ("colorize.building", 2.5)):
            seconds = base + 0.5 * mp + 1.5 * (upscale > 1)
            uses.append(
                use(acct, i / 4, round(seconds, 6), capability=capability, width=width,
                    height=height, options=json.dumps({"upscale": upscale}))
            )  # fmt: skip
    store_usage(engine, uses)
    clock = FakeClock(T0 + 48 * HOUR)
    pricing = build_pricing_services(engine, clock=clock, lock_s=600)
    fitting = CostFitting(SqlCostSamples(engine), pricing.price_books, clock)
    report = fitting.fit(tokens_per_second=Decimal(4), version="fit-test")
    assert report.jobs == 80 and report.based_on == "default-1"
    person = {t.key: t.seconds for t in report.fits[0].terms}
    assert person["base"] == pytest.approx(1.0) and person["megapixels"] == pytest.approx(0.5)
    assert person["option:upscale"] == pytest.approx(1.5)
    book = report.proposed_document()
    assert book["version"] == "fit-test"
    assert book["capabilities"]["colorize.building"]["base"] == "10"  # 2.5 s x 4
    assert book["capabilities"]["colorize.person"]["options"]["upscale"]["surcharge"] == "6"
