"""Quoting and price book administration: the use cases and the ports they need.

Which book prices a request: the account's own (enterprise) book if one is in effect,
else the newest default version in effect, else the built-in default (the shipped
TOML or ``Settings.price_book_file``). "In effect" means ``effective_at <= now``.
Versions are only ever added, never changed; every price names its version.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from comfygate.domain.errors import (
    AccountNotFoundError,
    DuplicatePriceBookVersionError,
    InvalidInputError,
    InvalidOptionError,
    PriceBookNotFoundError,
    QuoteNotFoundError,
)
from comfygate.domain.ids import new_id
from comfygate.domain.images import check_pixel_count
from comfygate.domain.pricing import (
    Price,
    PriceBook,
    check_image_size,
    compute_price,
    left_out,
)
from comfygate.domain.pricing_options import JsonScalar, normalise_options, to_json_scalar
from comfygate.domain.pricing_quotes import Quote
from comfygate.domain.pricing_validation import parse_price_book, validate_price_book
from comfygate.services.clock import Clock

KEEP_EXPIRED = timedelta(days=1)
"""How long an expired quote is remembered, to be told apart from one never made."""


@dataclass(frozen=True, slots=True)
class PriceBookRecord:
    """A price book version and where it applies. ``effective_at`` is None only for the
    built-in default, which applies whenever no stored default version does."""

    book: PriceBook
    account_id: str | None
    effective_at: datetime | None
    created_at: datetime | None

    @property
    def source(self) -> str:
        return "built-in" if self.effective_at is None else "database"


class PriceBookRepository(Protocol):
    def active(self, *, account_id: str | None, at: datetime) -> PriceBookRecord | None:
        """The newest version with ``effective_at <= at``: the account's own book if it
        has one in effect, else the newest default; None if there is neither."""
        ...

    def get(self, version: str) -> PriceBookRecord | None:
        """A stored version by its version string."""
        ...

    def add(self, record: PriceBookRecord) -> None:
        """Store a new version; ``DuplicatePriceBookVersionError`` if the string is taken."""
        ...

    def history(self, *, account_id: str | None) -> list[PriceBookRecord]:
        """Stored versions of the default (None) or of one account, newest first."""
        ...

    def remember_builtin(self, book: PriceBook, *, at: datetime) -> PriceBook:
        """Record the built-in default ``book`` under its version unless one is
        recorded already; return the book recorded under that version (``book``, or
        what an earlier file said)."""
        ...

    def builtin(self, version: str) -> PriceBook | None:
        """A built-in default book recorded earlier, by its version."""
        ...


class QuoteRepository(Protocol):
    def add(self, quote: Quote) -> None: ...

    def get(self, quote_id: str) -> Quote | None: ...

    def purge_expired(self, *, before: datetime) -> int:
        """Delete locks that expired before ``before``; return how many."""
        ...


def _aware(at: datetime, name: str) -> datetime:
    if at.tzinfo is None:
        raise InvalidInputError(f"{name} must be timezone-aware (e.g. 2024-05-01T23:30+08:00)")
    return at


class _Books:
    """Resolves active and past versions, falling back to the built-in default."""

    def __init__(self, prices: PriceBookRepository, default_book: PriceBook) -> None:
        self._prices = prices
        self._default = PriceBookRecord(default_book, None, None, None)

    @property
    def default(self) -> PriceBook:
        return self._default.book

    def active(self, *, account_id: str | None, at: datetime) -> PriceBookRecord:
        return self._prices.active(account_id=account_id, at=at) or self._default

    def version(self, version: str) -> PriceBook:
        if version == self._default.book.version:
            return self._default.book
        record = self._prices.get(version)
        if record is not None:
            return record.book
        builtin = self._prices.builtin(version)  # a built-in default replaced since
        if builtin is None:
            raise PriceBookNotFoundError(f"no price book version {version!r}", version=version)
        return builtin


class QuoteService:
    """Prices requests and locks quotes so a later submission pays exactly the quote."""

    def __init__(
        self,
        *,
        prices: PriceBookRepository,
        quotes: QuoteRepository,
        clock: Clock,
        lock_s: int,
        default_book: PriceBook,
        max_pixels: int | None = None,
        account_exists: Callable[[str], bool] | None = None,
    ) -> None:
        self._books = _Books(prices, default_book)
        self._max_pixels = max_pixels
        self._account_exists = account_exists
        self._quotes = quotes
        self._clock = clock
        self._lock = timedelta(seconds=lock_s)

    def price(
        self,
        *,
        capability: str,
        width: int,
        height: int,
        options: Mapping[str, object] | None = None,
        account_id: str | None = None,
        at: datetime | None = None,
    ) -> Price:
        """What the request costs at ``at`` (default: now) for ``account_id``; no lock,
        no write. Raises ``UnknownCapabilityError``, ``InvalidImageSizeError``,
        ``TooManyPixelsError`` (past ``max_pixels``, as an upload would be),
        ``InvalidOptionError`` or ``PriceOutOfRangeError``."""
        width, height = check_image_size(width, height)
        if self._max_pixels is not None:
            check_pixel_count(width, height, max_pixels=self._max_pixels)
        at = _aware(at, "at") if at is not None else self._clock.now()
        book = self._books.active(account_id=account_id, at=at).book
        return compute_price(
            book,
            capability=capability,
            width=width,
            height=height,
            options=options,
            account_id=account_id,
            at=at,
        )

    def quote(
        self,
        *,
        capability: str,
        width: int,
        height: int,
        options: Mapping[str, object] | None = None,
        account_id: str | None = None,
    ) -> Quote:
        """Price the request now and lock that price for ``lock_s`` under a new quote id."""
        price = self.price(
            capability=capability,
            width=width,
            height=height,
            options=options,
            account_id=account_id,
        )
        quote = Quote(new_id("quote"), price, price.priced_at + self._lock)
        self._quotes.add(quote)
        return quote

    def require_account(self, account_id: str) -> None:
        """``AccountNotFoundError`` unless the account exists: for callers who name an
        account themselves (the CLI), where a signed-in principal's always does."""
        require_account(account_id, self._account_exists)

    def redeem(
        self,
        *,
        quote_id: str,
        account_id: str | None,
        capability: str,
        width: int,
        height: int,
        options: Mapping[str, object] | None = None,
        now: datetime | None = None,
    ) -> Quote:
        """The locked quote for this exact request, to charge its ``tokens``.

        Raises ``QuoteNotFoundError``, ``QuoteMismatchError`` (another account or another
        request) or ``QuoteExpiredError``. Does not consume the quote.
        """
        now = _aware(now, "now") if now is not None else self._clock.now()
        quote = self._quotes.get(quote_id)
        if quote is None:
            raise QuoteNotFoundError(f"no quote {quote_id!r}", quote_id=quote_id)
        quote.check_redeemable(
            account_id=account_id,
            capability=capability,
            width=width,
            height=height,
            options=self._canonical(quote, capability, options),
            now=now,
        )
        return quote

    def _canonical(
        self, quote: Quote, capability: str, options: Mapping[str, object] | None
    ) -> dict[str, JsonScalar] | None:
        """``options`` as the quote recorded them; None when they cannot be its."""
        if capability != quote.price.capability:
            return None
        return self.canonical_options(
            quote.price_book_version, capability, options, account_id=quote.price.account_id
        )

    def canonical_options(
        self,
        version: str,
        capability: str,
        options: Mapping[str, object] | None,
        *,
        account_id: str | None,
    ) -> dict[str, JsonScalar] | None:
        """``options`` as a request priced by book ``version`` recorded them (defaults
        filled, values normalised); None when that book would refuse them."""
        try:
            book = self._books.version(version)
        except PriceBookNotFoundError:
            # A built-in default replaced before this database recorded it: the request
            # is read by the book in force now (a price, if any, stays as recorded).
            book = self._books.active(account_id=account_id, at=self._clock.now()).book
        cap = book.capabilities.get(capability)
        if cap is None:
            return None
        try:
            chosen = normalise_options(cap.options, options)
        except InvalidOptionError:
            return None
        return {name: to_json_scalar(value) for name, value in chosen.items()}

    def purge_expired(self) -> int:
        """Forget locks that expired more than ``KEEP_EXPIRED`` ago; return how many.
        Until then an expired quote is still ``quote_expired`` (it turned into
        ``quote_not_found`` within a minute: the same request, another answer)."""
        return self._quotes.purge_expired(before=self._clock.now() - KEEP_EXPIRED)


class PriceBookService:
    """Validate, simulate, activate and show price book versions."""

    def __init__(
        self,
        *,
        prices: PriceBookRepository,
        clock: Clock,
        default_book: PriceBook,
        account_exists: Callable[[str], bool] | None = None,
    ) -> None:
        self._prices = prices
        self._books = _Books(prices, default_book)
        self._default_version = default_book.version
        self._clock = clock
        self._account_exists = account_exists

    def check_builtin(self) -> None:
        """Record the built-in default book (at start), so its version can be read back
        once a later file replaces it; ``DuplicatePriceBookVersionError`` if the file
        changed its prices but not its version, or took a stored version's name."""
        book = self._books.default
        if self._prices.get(book.version) is not None:
            raise DuplicatePriceBookVersionError(
                f"the built-in price book's version {book.version!r} is a stored version's; "
                "give the file a version of its own"
            )
        if self._prices.remember_builtin(book, at=self._clock.now()) != book:
            raise DuplicatePriceBookVersionError(
                f"the built-in price book changed but its version {book.version!r} did not: "
                "jobs already priced under it would read the new prices; give it a new version"
            )

    def validate(self, doc: Mapping[str, Any]) -> list[str]:
        """Every problem with ``doc`` (empty when it is a valid price book)."""
        return validate_price_book(doc)

    def activate(
        self,
        doc: Mapping[str, Any],
        *,
        effective_at: datetime | None = None,
        account_id: str | None = None,
    ) -> PriceBookRecord:
        """Store ``doc`` as a new version in effect from ``effective_at`` (default: now),
        as the default book or as ``account_id``'s own book.

        Raises ``ValidationFailedError`` (all problems), ``DuplicatePriceBookVersionError``,
        or ``InvalidInputError`` for an effective time in the past.
        """
        book = parse_price_book(doc)
        now = self._clock.now()
        effective_at = _aware(effective_at, "effective_at") if effective_at else now
        if effective_at < now:
            raise InvalidInputError(
                "effective_at is in the past; a version takes effect now or later",
                effective_at=effective_at.isoformat(),
            )
        if book.version == self._default_version or self._prices.builtin(book.version):
            # A built-in default's, in use or replaced since: jobs priced under it
            # would read this book's prices.
            raise DuplicatePriceBookVersionError(
                f"version {book.version!r} is a built-in default's; give the book a new version"
            )
        if account_id is not None:
            require_account(account_id, self._account_exists)
        record = PriceBookRecord(book, account_id, effective_at, now)
        self._prices.add(record)
        return record

    def left_out(self, record: PriceBookRecord) -> list[str]:
        """For an account's own book: what the default book in force when it takes
        effect offers and it does not (the account loses those). Empty otherwise."""
        if record.account_id is None or record.effective_at is None:
            return []
        default = self._books.active(account_id=None, at=record.effective_at).book
        return left_out(record.book, default, record.account_id)

    def show(self, *, account_id: str | None = None, at: datetime | None = None) -> PriceBookRecord:
        """The version that prices ``account_id``'s requests at ``at`` (default: now)."""
        at = _aware(at, "at") if at is not None else self._clock.now()
        if account_id is not None:
            require_account(account_id, self._account_exists)
        return self._books.active(account_id=account_id, at=at)

    def history(self, *, account_id: str | None = None) -> list[PriceBookRecord]:
        """Stored versions of the default book (or of ``account_id``'s), newest first."""
        if account_id is not None:
            require_account(account_id, self._account_exists)
        return self._prices.history(account_id=account_id)

    def simulate(
        self,
        doc: Mapping[str, Any],
        *,
        capability: str,
        width: int,
        height: int,
        options: Mapping[str, object] | None = None,
        account_id: str | None = None,
        at: datetime | None = None,
    ) -> Price:
        """Price a request with a draft book without activating it."""
        at = _aware(at, "at") if at is not None else self._clock.now()
        return compute_price(
            parse_price_book(doc),
            capability=capability,
            width=width,
            height=height,
            options=options,
            account_id=account_id,
            at=at,
        )


@dataclass(frozen=True, slots=True)
class PricingServices:
    """What the entrypoints need for pricing, built once by the composition root."""

    quotes: QuoteService
    price_books: PriceBookService


def require_account(account_id: str, exists: Callable[[str], bool] | None) -> None:
    """``AccountNotFoundError`` unless ``account_id`` names an account (a typo would
    otherwise give a book or a quote to no one, without a word)."""
    if not 0 < len(account_id) <= 40 or (exists is not None and not exists(account_id)):
        raise AccountNotFoundError(f"no account {account_id}", account_id=account_id)
