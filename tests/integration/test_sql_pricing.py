"""Price book versions and quote locks on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Engine

from comfygate.adapters.db.base import metadata
from comfygate.adapters.db.sql_pricing import (
    SqlPriceBookRepository,
    SqlQuoteRepository,
    build_pricing_services,
    read_price_book_file,
)
from comfygate.adapters.db.tables_pricing import price_book_versions, quote_locks
from comfygate.domain.errors import DuplicatePriceBookVersionError, QuoteNotFoundError
from comfygate.domain.pricing_document import price_book_to_document
from comfygate.domain.pricing_validation import parse_price_book
from comfygate.services.quoting import KEEP_EXPIRED, PriceBookRecord
from tests.fakes import FakeClock

T0 = datetime(2026, 11, 27, 4, 0, 0, 123456, tzinfo=UTC)
PERSON = {"capability": "colorize.person", "width": 800, "height": 600}


def record(
    version: str, effective_at: datetime, account_id: str | None = None, base: Any = 10
) -> PriceBookRecord:
    doc = price_book_to_document(read_price_book_file())
    doc["version"] = version
    doc["capabilities"]["colorize.person"]["base"] = base
    return PriceBookRecord(parse_price_book(doc), account_id, effective_at, T0)


def test_schema_matches_the_tables(engine: Engine) -> None:
    ours = {price_book_versions.name, quote_locks.name}
    with engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), metadata)
    assert [d for d in diffs if ours & set(_names(d))] == []
    assert ours <= set(sa.inspect(engine).get_table_names())


def _names(diff: Any) -> Iterator[str]:
    """Table names a diff entry mentions (as strings or on Table/Index/Column objects)."""
    if isinstance(diff, str):
        yield diff
    elif isinstance(diff, list | tuple):
        for item in diff:
            yield from _names(item)
    else:
        for owner in (diff, getattr(diff, "table", None)):
            name = getattr(owner, "name", None)
            if isinstance(name, str):
                yield name


def test_active_version_per_account_and_time(engine: Engine) -> None:
    repo = SqlPriceBookRepository(engine)
    assert repo.active(account_id=None, at=T0) is None
    repo.add(record("d1", T0))
    repo.add(record("d2", T0 + timedelta(hours=1)))
    repo.add(record("e1", T0 + timedelta(minutes=30), account_id="acct_e"))
    repo.add(record("other", T0, account_id="acct_o"))

    def active(account: str | None, at: datetime) -> str | None:
        found = repo.active(account_id=account, at=at)
        return None if found is None else found.book.version

    assert active(None, T0 - timedelta(microseconds=1)) is None
    assert active(None, T0) == "d1"  # effective_at is inclusive, to the microsecond
    assert active("acct_e", T0 + timedelta(minutes=29)) == "d1"
    assert active("acct_e", T0 + timedelta(minutes=30)) == "e1"
    assert active("acct_e", T0 + timedelta(hours=2)) == "e1"  # own book beats a newer default
    assert active("acct_x", T0 + timedelta(hours=2)) == "d2"
    assert active(None, T0 + timedelta(hours=2)) == "d2"
    assert [r.book.version for r in repo.history(account_id=None)] == ["d2", "d1"]
    assert [r.book.version for r in repo.history(account_id="acct_e")] == ["e1"]
    got = repo.get("e1")
    assert got is not None and (got.account_id, got.effective_at) == (
        "acct_e",
        T0 + timedelta(minutes=30),
    )


def test_versions_are_unique_and_documents_exact(engine: Engine) -> None:
    repo = SqlPriceBookRepository(engine)
    repo.add(record("v1", T0, base="10.123456789"))
    with pytest.raises(DuplicatePriceBookVersionError):
        repo.add(record("v1", T0 + timedelta(days=1), account_id="acct_1"))
    # a fresh repository (empty cache) reads the stored document back exactly
    fresh = SqlPriceBookRepository(engine).get("v1")
    assert fresh is not None and fresh.book == record("v1", T0, base="10.123456789").book
    assert fresh.book.capabilities["colorize.person"].base == Decimal("10.123456789")
    with engine.connect() as conn:
        stored = json.loads(conn.execute(sa.select(price_book_versions.c.document)).scalar_one())
    assert stored["capabilities"]["colorize.person"]["base"] == "10.123456789"


def test_parsed_books_are_cached_by_version(engine: Engine) -> None:
    repo = SqlPriceBookRepository(engine, cache_size=1)
    repo.add(record("v1", T0))
    repo.add(record("e1", T0, account_id="acct_e"))
    first = repo.active(account_id=None, at=T0)
    again = repo.active(account_id=None, at=T0)
    assert first is not None and again is not None and first.book is again.book
    repo.active(account_id="acct_e", at=T0)  # evicts v1 (cache of one)
    third = repo.active(account_id=None, at=T0)
    assert third is not None and third.book is not first.book and third.book == first.book


def test_quote_lock_round_trip_and_purge(engine: Engine) -> None:
    clock = FakeClock(T0)
    services = build_pricing_services(engine, clock=clock, lock_s=600)
    quote = services.quotes.quote(**PERSON, options={"upscale": "2.5"}, account_id="acct_1")
    stored = SqlQuoteRepository(engine).get(quote.quote_id)
    assert stored == quote and stored.tokens == 16
    services.price_books.activate(
        price_book_to_document(record("v2", T0, base=99).book), effective_at=T0
    )
    clock.advance(seconds=599)
    redeemed = services.quotes.redeem(
        quote_id=quote.quote_id, account_id="acct_1", **PERSON, options={"upscale": 2.5}
    )
    assert redeemed.tokens == 16 and redeemed.price_book_version == "default-1"
    assert services.quotes.quote(**PERSON).price_book_version == "v2"
    with pytest.raises(QuoteNotFoundError):  # not the caller's: as if there were none
        services.quotes.redeem(quote_id=quote.quote_id, account_id=None, **PERSON)
    clock.advance(seconds=2)
    assert services.quotes.purge_expired() == 0  # expired, and remembered for a while
    clock.advance(seconds=KEEP_EXPIRED.total_seconds())
    assert services.quotes.purge_expired() == 1
    assert SqlQuoteRepository(engine).get(quote.quote_id) is None
