"""Quote and price book services with in-memory fakes: locks, redeem, activation rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from comfygate.domain.errors import (
    DuplicatePriceBookVersionError,
    InvalidInputError,
    QuoteExpiredError,
    QuoteMismatchError,
    QuoteNotFoundError,
    TooManyPixelsError,
    ValidationFailedError,
)
from comfygate.domain.pricing_quotes import Quote
from comfygate.domain.pricing_validation import parse_price_book
from comfygate.services.quoting import (
    KEEP_EXPIRED,
    PriceBookService,
    QuoteService,
)
from tests.fakes import FakeClock, FakePriceBookRepository
from tests.unit.test_pricing import default_doc

T0 = datetime(2024, 5, 1, 4, 0, tzinfo=UTC)  # noon in Shanghai
PERSON = {"capability": "colorize.person", "width": 800, "height": 600}


class FakeQuoteRepository:
    def __init__(self) -> None:
        self.quotes: dict[str, Quote] = {}

    def add(self, quote: Quote) -> None:
        self.quotes[quote.quote_id] = quote

    def get(self, quote_id: str) -> Quote | None:
        return self.quotes.get(quote_id)

    def purge_expired(self, *, before: datetime) -> int:
        gone = [q for q, quote in self.quotes.items() if quote.expires_at < before]
        for quote_id in gone:
            del self.quotes[quote_id]
        return len(gone)


class World:
    def __init__(self) -> None:
        self.clock = FakeClock(T0)
        self.prices = FakePriceBookRepository()
        self.quote_repo = FakeQuoteRepository()
        default = parse_price_book(default_doc())
        self.quotes = QuoteService(
            prices=self.prices,
            quotes=self.quote_repo,
            clock=self.clock,
            lock_s=600,
            default_book=default,
        )
        self.books = PriceBookService(prices=self.prices, clock=self.clock, default_book=default)


@pytest.fixture
def world() -> World:
    return World()


def book(version: str, person_base: int = 10, **extra: Any) -> dict[str, Any]:
    doc = default_doc()
    doc["version"] = version
    doc["capabilities"]["colorize.person"]["base"] = person_base
    doc.update(extra)
    return doc


def test_quote_locks_the_price_against_later_versions(world: World) -> None:
    quote = world.quotes.quote(**PERSON, options={"upscale": 2}, account_id="acct_1")
    assert (quote.tokens, quote.price_book_version) == (16, "default-1")
    assert quote.expires_at == T0 + timedelta(seconds=600)
    world.books.activate(book("v2", person_base=50), effective_at=T0)
    world.clock.current = T0 + timedelta(seconds=599)
    assert world.quotes.price(**PERSON, options={"upscale": 2}).tokens == 56
    redeemed = world.quotes.redeem(
        quote_id=quote.quote_id, account_id="acct_1", **PERSON, options={"upscale": "2.0"}
    )
    assert redeemed == quote and redeemed.tokens == 16


def test_redeem_refuses_expired_foreign_and_different_requests(world: World) -> None:
    quote = world.quotes.quote(**PERSON, account_id="acct_1")
    qid = quote.quote_id
    with pytest.raises(QuoteNotFoundError):
        world.quotes.redeem(quote_id="quote_nope", account_id="acct_1", **PERSON)
    with pytest.raises(QuoteNotFoundError):  # another account's: as if none (no probing)
        world.quotes.redeem(quote_id=qid, account_id="acct_2", **PERSON)
    with pytest.raises(QuoteMismatchError, match="different request"):
        world.quotes.redeem(quote_id=qid, account_id="acct_1", **{**PERSON, "width": 801})
    with pytest.raises(QuoteMismatchError):
        world.quotes.redeem(quote_id=qid, account_id="acct_1", **PERSON, options={"upscale": 2})
    with pytest.raises(QuoteMismatchError):
        world.quotes.redeem(quote_id=qid, account_id="acct_1", **PERSON, options={"tile": 1})
    with pytest.raises(QuoteMismatchError):
        other = {**PERSON, "capability": "colorize.building"}
        world.quotes.redeem(quote_id=qid, account_id="acct_1", **other)
    # the default option value is the same request as leaving it out
    assert world.quotes.redeem(quote_id=qid, account_id="acct_1", **PERSON, options={"upscale": 1})
    world.clock.current = quote.expires_at
    with pytest.raises(QuoteExpiredError):
        world.quotes.redeem(quote_id=qid, account_id="acct_1", **PERSON)
    # Remembered for a day after it expired: still expired, not unknown.
    world.clock.current = quote.expires_at + KEEP_EXPIRED
    assert world.quotes.purge_expired() == 0
    with pytest.raises(QuoteExpiredError):
        world.quotes.redeem(quote_id=qid, account_id="acct_1", **PERSON)
    world.clock.current += timedelta(seconds=1)
    assert world.quotes.purge_expired() == 1


def test_enterprise_book_wins_over_default_once_in_effect(world: World) -> None:
    later = T0 + timedelta(hours=1)
    world.books.activate(book("ent-1", person_base=2), effective_at=later, account_id="acct_e")
    world.books.activate(book("v2", person_base=20), effective_at=T0)
    assert world.quotes.price(**PERSON, account_id="acct_e").price_book_version == "v2"
    world.clock.current = later
    enterprise = world.quotes.price(**PERSON, account_id="acct_e")
    assert (enterprise.price_book_version, enterprise.tokens) == ("ent-1", 10)  # 2.96, minimum
    assert world.quotes.price(**PERSON, account_id="acct_x").price_book_version == "v2"
    assert world.books.show(account_id="acct_e").book.version == "ent-1"
    assert world.books.show(account_id="acct_e", at=T0).book.version == "v2"
    assert [r.book.version for r in world.books.history(account_id="acct_e")] == ["ent-1"]


def test_built_in_default_until_a_version_takes_effect(world: World) -> None:
    shown = world.books.show()
    assert (shown.book.version, shown.source, shown.effective_at) == ("default-1", "built-in", None)
    record = world.books.activate(book("v2", person_base=12), effective_at=T0 + timedelta(days=1))
    assert record.source == "database"
    assert world.quotes.quote(**PERSON).price_book_version == "default-1"
    world.clock.current = T0 + timedelta(days=1)
    assert world.quotes.quote(**PERSON).tokens == 13
    at_past = world.quotes.price(**PERSON, at=T0)
    assert (at_past.tokens, at_past.price_book_version) == (11, "default-1")


def test_activation_rules(world: World) -> None:
    with pytest.raises(ValidationFailedError) as caught:
        world.books.activate({"version": "bad", "rounding": "up"})
    assert len(caught.value.errors) == 2
    with pytest.raises(DuplicatePriceBookVersionError):
        world.books.activate(book("default-1"))
    world.books.activate(book("v2"))
    with pytest.raises(DuplicatePriceBookVersionError):
        world.books.activate(book("v2"), account_id="acct_1")
    with pytest.raises(InvalidInputError, match="in the past"):
        world.books.activate(book("v3"), effective_at=T0 - timedelta(seconds=1))
    with pytest.raises(InvalidInputError, match="timezone-aware"):
        world.books.activate(book("v3"), effective_at=datetime(2030, 1, 1))
    assert [r.book.version for r in world.books.history()] == ["v2"]


def test_simulate_prices_a_draft_without_storing_it(world: World) -> None:
    draft = book("draft-1", time_windows=[{"start": "11:00", "end": "13:00", "multiplier": 2}])
    price = world.books.simulate(draft, **PERSON)
    assert (price.tokens, price.price_book_version) == (22, "draft-1")
    assert world.books.history() == [] and world.books.show().book.version == "default-1"
    assert world.books.validate(draft) == []
    assert world.books.validate({**draft, "rounding": "up"}) != []


def test_a_quote_is_held_to_the_pixel_cap_an_upload_would_meet(world: World) -> None:
    capped = QuoteService(
        prices=world.prices,
        quotes=world.quote_repo,
        clock=world.clock,
        lock_s=600,
        default_book=parse_price_book(default_doc()),
        max_pixels=480_000,
    )
    assert capped.quote(**PERSON).tokens == 11  # 800 x 600 is exactly the cap
    with pytest.raises(TooManyPixelsError):
        capped.quote(**{**PERSON, "width": 801})
    with pytest.raises(TooManyPixelsError):
        capped.price(**{**PERSON, "width": 10**15})
    assert len(world.quote_repo.quotes) == 1


def test_a_quote_under_a_replaced_built_in_default_still_redeems(world: World) -> None:
    """The built-in book lives in a file: after an upgrade to default-2, a quote locked
    under default-1 raised PriceBookNotFoundError and its job failed."""
    quote = world.quotes.quote(**PERSON, options={"upscale": 2}, account_id="acct_1")
    doc = default_doc()
    doc["version"] = "default-2"
    doc["capabilities"]["colorize.person"]["base"] = 99
    upgraded = QuoteService(
        prices=world.prices,
        quotes=world.quote_repo,
        clock=world.clock,
        lock_s=600,
        default_book=parse_price_book(doc),
    )
    redeemed = upgraded.redeem(
        quote_id=quote.quote_id, account_id="acct_1", **PERSON, options={"upscale": 2}
    )
    assert redeemed.tokens == 16 and redeemed.price_book_version == "default-1"
    with pytest.raises(QuoteMismatchError):
        upgraded.redeem(quote_id=quote.quote_id, account_id="acct_1", **PERSON)  # upscale 1


def test_the_built_in_book_is_recorded_and_an_edit_under_its_version_refused(
    world: World,
) -> None:
    world.books.check_builtin()
    world.books.check_builtin()  # every start: the same file is fine
    quote = world.quotes.quote(**PERSON, account_id="acct_1")
    edited = default_doc()
    edited["capabilities"]["colorize.person"]["base"] = 99  # still "default-1"
    started_with_edit = PriceBookService(
        prices=world.prices, clock=world.clock, default_book=parse_price_book(edited)
    )
    with pytest.raises(DuplicatePriceBookVersionError, match="did not"):
        started_with_edit.check_builtin()
    edited["version"] = "default-2"
    upgraded = PriceBookService(
        prices=world.prices, clock=world.clock, default_book=parse_price_book(edited)
    )
    upgraded.check_builtin()  # a new version: recorded beside the old one
    assert world.prices.builtin("default-1") == parse_price_book(default_doc())
    assert quote.price_book_version == "default-1"


def test_a_built_in_version_may_not_take_a_stored_versions_name(world: World) -> None:
    world.books.activate(book("v9"), effective_at=T0)
    named_like_it = PriceBookService(
        prices=world.prices, clock=world.clock, default_book=parse_price_book(book("v9"))
    )
    with pytest.raises(DuplicatePriceBookVersionError, match="stored version"):
        named_like_it.check_builtin()
