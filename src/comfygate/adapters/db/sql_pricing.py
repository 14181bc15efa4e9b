"""Price book versions and locked quotes on SQL (SQLite, PostgreSQL, MariaDB).

Hot path: finding the active book is one indexed read of a few small columns (no
document); the parsed book is then taken from an in-process LRU cache keyed by
version. Versions are immutable, so a cached entry can never be stale and needs no
invalidation: a newly activated version is simply a new key (a miss, one extra read
of its document, once per process). Also here: reading the built-in default price
book file, and ``build_pricing_services`` for the composition root.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from datetime import datetime
from importlib import resources
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from comfygate.adapters.db.engine import read_only
from comfygate.adapters.db.tables_pricing import price_book_versions as pbv
from comfygate.adapters.db.tables_pricing import quote_locks
from comfygate.domain.errors import DuplicatePriceBookVersionError
from comfygate.domain.pricing import BreakdownLine, Price, PriceBook
from comfygate.domain.pricing_document import parse_toml, price_book_to_document
from comfygate.domain.pricing_quotes import Quote
from comfygate.domain.pricing_validation import parse_price_book
from comfygate.services.clock import Clock
from comfygate.services.quoting import (
    PriceBookRecord,
    PriceBookService,
    PricingServices,
    QuoteService,
)

_META = (pbv.c.version, pbv.c.account_id, pbv.c.effective_at, pbv.c.created_at)
_ORDER = (pbv.c.effective_at.desc(), pbv.c.created_at.desc(), pbv.c.version.desc())
_IN_EFFECT = pbv.c.effective_at <= sa.bindparam("at")
_ACTIVE_DEFAULT = (
    sa.select(*_META).where(pbv.c.account_id.is_(None), _IN_EFFECT).order_by(*_ORDER).limit(1)
)
_ACTIVE_FOR_ACCOUNT = (
    sa.select(*_META)
    .where(sa.or_(pbv.c.account_id == sa.bindparam("account_id"), pbv.c.account_id.is_(None)))
    .where(_IN_EFFECT)
    # The account's own book wins over the default, whatever their dates.
    .order_by(sa.case((pbv.c.account_id.is_(None), 1), else_=0), *_ORDER)
    .limit(1)
)
_DOCUMENT = sa.select(pbv.c.document).where(pbv.c.version == sa.bindparam("version"))


class SqlPriceBookRepository:
    """``PriceBookRepository`` on SQL, with parsed books cached by version."""

    def __init__(self, engine: Engine, *, cache_size: int = 256) -> None:
        self.engine = engine
        self._cache: OrderedDict[str, PriceBook] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def active(self, *, account_id: str | None, at: datetime) -> PriceBookRecord | None:
        with read_only(self.engine.connect()) as conn:
            if account_id is None:
                row = conn.execute(_ACTIVE_DEFAULT, {"at": at}).first()
            else:
                params = {"at": at, "account_id": account_id}
                row = conn.execute(_ACTIVE_FOR_ACCOUNT, params).first()
            return None if row is None else self._record(conn, *row)

    def get(self, version: str) -> PriceBookRecord | None:
        with read_only(self.engine.connect()) as conn:
            row = conn.execute(sa.select(*_META).where(pbv.c.version == version)).first()
            return None if row is None else self._record(conn, *row)

    def add(self, record: PriceBookRecord) -> None:
        document = json.dumps(price_book_to_document(record.book), ensure_ascii=False)
        values = {
            "version": record.book.version,
            "account_id": record.account_id,
            "document": document,
            "effective_at": record.effective_at,
            "created_at": record.created_at,
        }
        try:
            with self.engine.begin() as conn:
                conn.execute(pbv.insert().values(values))
        except sa.exc.IntegrityError as exc:
            raise DuplicatePriceBookVersionError(
                f"price book version {record.book.version!r} already exists",
                version=record.book.version,
            ) from exc

    def history(self, *, account_id: str | None) -> list[PriceBookRecord]:
        owner = pbv.c.account_id.is_(None) if account_id is None else pbv.c.account_id == account_id
        with read_only(self.engine.connect()) as conn:
            rows = conn.execute(sa.select(*_META).where(owner).order_by(*_ORDER)).all()
            return [self._record(conn, *row) for row in rows]

    def _record(
        self,
        conn: sa.Connection,
        version: str,
        account_id: str | None,
        effective_at: datetime,
        created_at: datetime,
    ) -> PriceBookRecord:
        return PriceBookRecord(self._book(conn, version), account_id, effective_at, created_at)

    def _book(self, conn: sa.Connection, version: str) -> PriceBook:
        with self._lock:
            book = self._cache.get(version)
            if book is not None:
                self._cache.move_to_end(version)
                return book
        document = conn.execute(_DOCUMENT, {"version": version}).scalar_one()
        book = parse_price_book(json.loads(document))
        with self._lock:
            self._cache[version] = book
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return book


class SqlQuoteRepository:
    """``QuoteRepository`` on SQL: one row per locked quote."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def add(self, quote: Quote) -> None:
        p = quote.price
        with self.engine.begin() as conn:
            conn.execute(
                quote_locks.insert().values(
                    quote_id=quote.quote_id,
                    account_id=p.account_id,
                    capability=p.capability,
                    width=p.width,
                    height=p.height,
                    options=json.dumps(dict(p.options), sort_keys=True),
                    tokens=p.tokens,
                    breakdown=json.dumps([line.to_dict() for line in p.breakdown]),
                    price_book_version=p.price_book_version,
                    quoted_at=p.priced_at,
                    expires_at=quote.expires_at,
                )
            )

    def get(self, quote_id: str) -> Quote | None:
        query = sa.select(quote_locks).where(quote_locks.c.quote_id == quote_id)
        with read_only(self.engine.connect()) as conn:
            row = conn.execute(query).first()
        if row is None:
            return None
        price = Price(
            tokens=row.tokens,
            breakdown=tuple(BreakdownLine.from_dict(d) for d in json.loads(row.breakdown)),
            price_book_version=row.price_book_version,
            capability=row.capability,
            width=row.width,
            height=row.height,
            options=json.loads(row.options),
            account_id=row.account_id,
            priced_at=row.quoted_at,
        )
        return Quote(row.quote_id, price, row.expires_at)

    def purge_expired(self, *, before: datetime) -> int:
        with self.engine.begin() as conn:
            result = conn.execute(quote_locks.delete().where(quote_locks.c.expires_at < before))
            return result.rowcount


def read_price_book_file(path: Path | None = None) -> PriceBook:
    """The price book in ``path``, or the one shipped in ``comfygate/data`` when None.

    Raises ``ValidationFailedError`` (with every problem) if it is not a valid book.
    """
    if path is None:
        text = resources.files("comfygate").joinpath("data", "price_book.toml").read_text("utf-8")
    else:
        text = path.read_text(encoding="utf-8")
    return parse_price_book(parse_toml(text))


def build_pricing_services(
    engine: Engine, *, clock: Clock, lock_s: int, price_book_file: Path | None = None
) -> PricingServices:
    """Wire the pricing services on ``engine`` (for ``bootstrap``)."""
    default_book = read_price_book_file(price_book_file)
    prices = SqlPriceBookRepository(engine)
    quotes = QuoteService(
        prices=prices,
        quotes=SqlQuoteRepository(engine),
        clock=clock,
        lock_s=lock_s,
        default_book=default_book,
    )
    books = PriceBookService(prices=prices, clock=clock, default_book=default_book)
    return PricingServices(quotes=quotes, price_books=books)
