"""Price book versions and locked quotes on SQL (SQLite, PostgreSQL, MariaDB).

Hot path: a quote is one ``INSERT``. Which version is active is resolved in process
from a short-lived copy of the version list (version, owner, ``effective_at``,
``created_at``; no documents) per owner, so it is exact at any instant for every
version the copy knows. The copy is dropped on every ``add`` made through this
repository, and otherwise re-read after ``versions_ttl_s`` (1 s): a version
activated by another process is seen here at most that long after it was stored.
The parsed book is then taken from an in-process LRU cache keyed by version.
Versions are immutable, so that cache can never be stale and needs no
invalidation: a newly activated version is simply a new key (a miss, one extra read
of its document, once per process). Also here: reading the built-in default price
book file, and ``build_pricing_services`` for the composition root.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from importlib import resources
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from comfygate.adapters.db.engine import read_only
from comfygate.adapters.db.tables_pricing import builtin_price_books, quote_locks
from comfygate.adapters.db.tables_pricing import price_book_versions as pbv
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
_DEFAULT_VERSIONS = sa.select(*_META).where(pbv.c.account_id.is_(None)).order_by(*_ORDER)
_ACCOUNT_VERSIONS = (
    sa.select(*_META).where(pbv.c.account_id == sa.bindparam("account_id")).order_by(*_ORDER)
)
_DOCUMENT = sa.select(pbv.c.document).where(pbv.c.version == sa.bindparam("version"))
_INSERT_QUOTE = quote_locks.insert()
_GET_QUOTE = sa.select(quote_locks).where(quote_locks.c.quote_id == sa.bindparam("quote_id"))

_Meta = tuple[str, str | None, datetime, datetime]
"""(version, account_id, effective_at, created_at) of a stored version."""


class SqlPriceBookRepository:
    """``PriceBookRepository`` on SQL, with version lists and parsed books cached."""

    def __init__(
        self,
        engine: Engine,
        *,
        cache_size: int = 256,
        versions_ttl_s: float = 1.0,
        versions_cache_size: int = 4096,
    ) -> None:
        self.engine = engine
        self._cache: OrderedDict[str, PriceBook] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self._versions_ttl_s = versions_ttl_s
        self._versions_cache_size = versions_cache_size
        # owner (None: the default book) -> (read at, monotonic s; versions newest first)
        self._versions: OrderedDict[str | None, tuple[float, list[_Meta]]] = OrderedDict()
        self._generation = 0  # bumped by every ``add`` (see ``_owner_versions``)

    def active(self, *, account_id: str | None, at: datetime) -> PriceBookRecord | None:
        # The account's own book wins over the default, whatever their dates.
        found = self._newest(account_id, at) if account_id is not None else None
        found = found or self._newest(None, at)
        if found is None:
            return None
        version, owner, effective_at, created_at = found
        return PriceBookRecord(self._book_by_version(version), owner, effective_at, created_at)

    def _newest(self, owner: str | None, at: datetime) -> _Meta | None:
        """The owner's newest version in effect at ``at`` (same order as ``_ORDER``)."""
        return next((m for m in self._owner_versions(owner) if m[2] <= at), None)

    def _owner_versions(self, owner: str | None) -> list[_Meta]:
        now = time.monotonic()
        with self._lock:
            cached = self._versions.get(owner)
            if cached is not None and now - cached[0] < self._versions_ttl_s:
                self._versions.move_to_end(owner)
                return cached[1]
            generation = self._generation
        with read_only(self.engine.connect()) as conn:
            if owner is None:
                rows = conn.execute(_DEFAULT_VERSIONS).all()
            else:
                rows = conn.execute(_ACCOUNT_VERSIONS, {"account_id": owner}).all()
        versions: list[_Meta] = [(r[0], r[1], r[2], r[3]) for r in rows]
        with self._lock:
            # Not if a version was added meanwhile: this read may predate it.
            if generation == self._generation:
                self._versions[owner] = (now, versions)
                self._versions.move_to_end(owner)
                while len(self._versions) > self._versions_cache_size:
                    self._versions.popitem(last=False)
        return versions

    def _book_by_version(self, version: str) -> PriceBook:
        with self._lock:
            book = self._cache.get(version)
            if book is not None:
                self._cache.move_to_end(version)
                return book
        with read_only(self.engine.connect()) as conn:
            return self._book(conn, version)

    def get(self, version: str) -> PriceBookRecord | None:
        with read_only(self.engine.connect()) as conn:
            row = conn.execute(sa.select(*_META).where(pbv.c.version == version)).first()
            return None if row is None else self._record(conn, *row)

    def add(self, record: PriceBookRecord) -> None:
        document = _document(record.book)
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
        finally:
            with self._lock:  # this process sees its own activations at once
                self._versions.clear()
                self._generation += 1

    def history(self, *, account_id: str | None) -> list[PriceBookRecord]:
        owner = pbv.c.account_id.is_(None) if account_id is None else pbv.c.account_id == account_id
        with read_only(self.engine.connect()) as conn:
            rows = conn.execute(sa.select(*_META).where(owner).order_by(*_ORDER)).all()
            return [self._record(conn, *row) for row in rows]

    def remember_builtin(self, book: PriceBook, *, at: datetime) -> PriceBook:
        recorded = self.builtin(book.version)
        if recorded is not None:
            return recorded
        row = {"version": book.version, "document": _document(book), "first_used_at": at}
        try:
            with self.engine.begin() as conn:
                conn.execute(builtin_price_books.insert(), row)
        except sa.exc.IntegrityError:  # another process recorded it first: theirs
            recorded = self.builtin(book.version)
            assert recorded is not None
            return recorded
        return book

    def builtin(self, version: str) -> PriceBook | None:
        query = sa.select(builtin_price_books.c.document).where(
            builtin_price_books.c.version == version
        )
        with read_only(self.engine.connect()) as conn:
            document = conn.execute(query).scalar_one_or_none()
        return None if document is None else parse_price_book(json.loads(document))

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
        row = {
            "quote_id": quote.quote_id,
            "account_id": p.account_id,
            "capability": p.capability,
            "width": p.width,
            "height": p.height,
            "options": json.dumps(dict(p.options), sort_keys=True),
            "tokens": p.tokens,
            "breakdown": json.dumps([line.to_dict() for line in p.breakdown]),
            "price_book_version": p.price_book_version,
            "quoted_at": p.priced_at,
            "expires_at": quote.expires_at,
        }
        # A prebuilt statement with parameters: ``insert().values(...)`` would build and
        # hash a new statement per quote, which cost more than the write itself.
        with self.engine.begin() as conn:
            conn.execute(_INSERT_QUOTE, row)

    def get(self, quote_id: str) -> Quote | None:
        with read_only(self.engine.connect()) as conn:
            row = conn.execute(_GET_QUOTE, {"quote_id": quote_id}).first()
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
    engine: Engine,
    *,
    clock: Clock,
    lock_s: int,
    price_book_file: Path | None = None,
    max_pixels: int | None = None,
    account_exists: Callable[[str], bool] | None = None,
) -> PricingServices:
    """Wire the pricing services on ``engine`` (for ``bootstrap``); ``account_exists``
    is the ledger's (the accounts are its)."""
    default_book = read_price_book_file(price_book_file)
    prices = SqlPriceBookRepository(engine)
    quotes = QuoteService(
        prices=prices,
        quotes=SqlQuoteRepository(engine),
        clock=clock,
        lock_s=lock_s,
        default_book=default_book,
        max_pixels=max_pixels,
        account_exists=account_exists,
    )
    books = PriceBookService(
        prices=prices, clock=clock, default_book=default_book, account_exists=account_exists
    )
    return PricingServices(quotes=quotes, price_books=books)


def _document(book: PriceBook) -> str:
    """A book as it is stored: its document, as JSON with sorted keys."""
    return json.dumps(price_book_to_document(book), ensure_ascii=False, sort_keys=True)
