"""``CostFitting``: the window it reads, the engines it asks for, the book it follows,
and what it says of jobs it cannot price."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from comfygate.domain.cost_model import CostSample
from comfygate.domain.errors import InvalidInputError
from comfygate.domain.pricing_validation import parse_price_book
from comfygate.services.cost_fit import DEFAULT_WINDOW, MAX_SAMPLES, CostFitting
from comfygate.services.quoting import PriceBookService
from tests.fakes import FakeClock, FakePriceBookRepository
from tests.unit.test_pricing import default_doc

NOW = datetime(2026, 11, 28, 12, tzinfo=UTC)


class FakeSamples:
    def __init__(self, samples: list[CostSample]) -> None:
        self.given = samples
        self.asked: list[dict[str, Any]] = []

    def samples(
        self,
        *,
        since: datetime,
        until: datetime,
        engines: Sequence[str] | None,
        exclude_engines: Sequence[str],
        limit: int,
        account_id: str | None = None,
    ) -> list[CostSample]:
        self.asked.append(
            {"since": since, "until": until, "engines": engines, "exclude": exclude_engines,
             "limit": limit, "account_id": account_id}
        )  # fmt: skip
        return self.given


def person_jobs(n: int = 30) -> list[CostSample]:
    sizes = [(800, 600), (1920, 1080), (3000, 2000)]
    return [
        CostSample("colorize.person", w, h, {"upscale": 1}, 1 + w * h / 1e6, None)
        for w, h in (sizes[i % 3] for i in range(n))
    ]


def fitting(samples: list[CostSample]) -> tuple[CostFitting, FakeSamples, PriceBookService]:
    clock = FakeClock(NOW)
    books = PriceBookService(
        prices=FakePriceBookRepository(), clock=clock, default_book=parse_price_book(default_doc())
    )
    fake = FakeSamples(samples)
    return CostFitting(fake, books, clock), fake, books


def test_by_default_the_last_30_days_of_every_engine_but_preview() -> None:
    service, fake, _ = fitting(person_jobs())
    report = service.fit()
    assert fake.asked == [
        {"since": NOW - DEFAULT_WINDOW, "until": NOW, "engines": None, "exclude": ("preview",),
         "limit": MAX_SAMPLES, "account_id": None}
    ]  # fmt: skip
    assert report.proposal.book.version == "fit-20261128-120000.000000"
    assert [f.fitted for f in report.fits] == [True, False]  # building: no jobs, kept
    assert report.fits[1].notes == ("0 usable jobs; at least 10 are needed to fit",)
    assert [(e.capability, e.width) for e in report.examples] == [
        ("colorize.person", 800), ("colorize.person", 1920), ("colorize.person", 4000)
    ]  # fmt: skip


def test_engines_asked_for_by_name_are_passed_on() -> None:
    service, fake, _ = fitting(person_jobs())
    service.fit(engines=["preview", "comfyui"])
    assert fake.asked[0]["engines"] == ("preview", "comfyui")


def test_it_follows_the_book_in_force_and_counts_capabilities_it_no_longer_has() -> None:
    service, _, books = fitting([*person_jobs(), CostSample("ocr.text", 10, 10, {}, 1.0)])
    doc = default_doc() | {"version": "later-2"}
    books.activate(doc)
    report = service.fit(tokens_per_second=Decimal(2))
    assert report.based_on == "later-2"
    assert report.unpriced == {"ocr.text": 1}
    assert report.proposed_document()["capabilities"]["colorize.person"]["base"] == "2"


@pytest.mark.parametrize(
    ("since", "until", "message"),
    [
        (NOW, NOW, "since must be before until"),
        (NOW, NOW - timedelta(days=1), "since must be before until"),
        (datetime(2026, 11, 1), NOW, "since must be a time with its zone"),
        (datetime.min.replace(tzinfo=UTC), NOW, "since must be a time with its zone, in range"),
    ],
)
def test_a_bad_window_is_invalid_input(since: datetime, until: datetime, message: str) -> None:
    service, fake, _ = fitting(person_jobs())
    with pytest.raises(InvalidInputError, match=message):
        service.fit(since=since, until=until)
    assert fake.asked == []


def test_a_version_the_books_refuse_is_a_validation_error() -> None:
    service, _, _ = fitting(person_jobs())
    with pytest.raises(InvalidInputError) as caught:
        service.fit(version="not a version!")
    assert caught.value.code == "validation_failed"


def test_a_past_window_proposes_the_next_version_of_the_book_in_force_now() -> None:
    """A fit of last month once proposed last month's book: activating it undid every
    version activated since."""
    service, _, books = fitting(person_jobs())
    books.activate(default_doc() | {"version": "now-2"})
    report = service.fit(since=NOW - timedelta(days=60), until=NOW - timedelta(days=30))
    assert report.based_on == "now-2"


def test_an_accounts_fit_reads_its_jobs_and_proposes_its_own_book() -> None:
    """An enterprise account's jobs, against the book pricing it: the proposal is that
    book's next version, with no other account's terms in it."""
    service, fake, books = fitting(person_jobs())
    doc = default_doc() | {
        "version": "acme-own-1",
        "accounts": {
            "acct_acme": {"discount_percent": "10"},
            "acct_other": {"discount_percent": "50"},
        },
    }
    books.activate(doc, account_id="acct_acme")
    report = service.fit(account_id="acct_acme", tokens_per_second=Decimal(2))
    assert fake.asked[-1]["account_id"] == "acct_acme"
    assert (report.account_id, report.based_on) == ("acct_acme", "acme-own-1")
    proposed = report.proposed_document()
    assert proposed["accounts"] == {"acct_acme": {"discount_percent": "10"}}
    assert "of account acct_acme" in proposed["description"]


def test_an_accounts_negotiated_prices_are_what_its_fit_starts_from_and_replaces() -> None:
    """The account paid base 30 by an override: the fit once repriced the list base
    and kept the override, which went on winning (the proposal changed nothing for
    the only account it priced), and its examples showed list prices."""
    service, _, books = fitting(person_jobs())
    doc = default_doc() | {
        "version": "default-2",
        "accounts": {"acct_acme": {"discount_percent": "10",
                                   "capabilities": {"colorize.person": {"base": "30"}}}},
    }  # fmt: skip
    books.activate(doc)
    report = service.fit(account_id="acct_acme", tokens_per_second=Decimal(2))
    proposed = report.proposed_document()
    assert proposed["accounts"] == {"acct_acme": {"discount_percent": "10"}}  # no override
    assert proposed["capabilities"]["colorize.person"]["base"] == "2"  # 1 s at 2 a second
    example = report.examples[0]
    assert (example.width, example.current_tokens) == (800, 28)  # (30 + 0.96) x 0.9
    person = next(c for c in report.proposal.changes if c.key == "base")
    assert person.current == 30
