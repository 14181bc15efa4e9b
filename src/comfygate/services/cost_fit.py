"""``pricing fit``: cost models of the capabilities from the jobs that ran, and a price
book proposed from them (SPEC section 3, "learning prices from costs").

``CostFitting.fit`` reads the window's succeeded jobs that report an inference time
(``CostSamples``, an adapter's port), fits each capability of the default price book in
force with ``domain.cost_model``, and proposes the next version of that book. Nothing
is stored: the operator reads the report, saves the proposed document, and activates
it with ``price-books activate`` like any other version.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any, Protocol

from comfygate.domain import cost_model as cm
from comfygate.domain import cost_proposal as cp
from comfygate.domain.errors import InvalidInputError, ValidationFailedError
from comfygate.domain.instants import in_range
from comfygate.domain.pricing import PriceBook, book_for_account, compute_price
from comfygate.domain.pricing_document import price_book_to_document
from comfygate.domain.pricing_validation import validate_price_book
from comfygate.services.clock import Clock
from comfygate.services.quoting import PriceBookService

DEFAULT_WINDOW = timedelta(days=30)
MAX_SAMPLES = 100_000
"""The newest this many jobs of the window are fitted (a model needs far fewer)."""
NOT_COSTS = ("preview",)
"""Engines left out unless asked for by name: ``preview`` runs no model, so its time
says nothing of what a GPU job costs."""


class CostSamples(Protocol):
    def samples(
        self,
        *,
        since: datetime,
        until: datetime,
        engines: Sequence[str] | None,
        exclude_engines: Sequence[str],
        limit: int,
        account_id: str | None = None,
    ) -> list[cm.CostSample]:
        """Succeeded jobs settled in ``[since, until)`` with an inference time, the
        newest ``limit`` of them, run by one of ``engines`` (None: any engine but
        ``exclude_engines``), of ``account_id`` (None: of every account)."""
        ...


EXAMPLE_SIZES = ((800, 600), (1920, 1080), (4000, 3000))
"""Requests priced by both books in the report, with each capability's default options."""


@dataclass(frozen=True, slots=True)
class Example:
    """One request priced by the current book and by the proposal."""

    capability: str
    width: int
    height: int
    predicted_s: float | None
    current_tokens: int
    proposed_tokens: int


@dataclass(frozen=True, slots=True)
class FitReport:
    since: datetime
    until: datetime
    engines: tuple[str, ...] | None
    """The engines asked for; None: every engine but ``NOT_COSTS``."""
    account_id: str | None
    """The account whose jobs and book were fitted (None: every account's jobs, and
    the default book)."""
    jobs: int
    """Jobs read from the window (at most ``MAX_SAMPLES``)."""
    based_on: str
    """The default price book version in force now, which the proposal would follow."""
    fits: tuple[cm.CapabilityFit, ...]
    unpriced: dict[str, int]
    """Jobs of capabilities that book no longer prices, by capability."""
    proposal: cp.Proposal
    examples: tuple[Example, ...]

    def proposed_document(self) -> dict[str, Any]:
        return price_book_to_document(self.proposal.book)


class CostFitting:
    def __init__(self, samples: CostSamples, price_books: PriceBookService, clock: Clock) -> None:
        self._samples = samples
        self._price_books = price_books
        self._clock = clock

    def fit(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        engines: Sequence[str] | None = None,
        tokens_per_second: Decimal | None = None,
        version: str | None = None,
        account_id: str | None = None,
    ) -> FitReport:
        """Fit ``[since, until)`` (default: the last 30 days) and propose a book: the
        default book's next version, or with ``account_id`` the next version of the
        book pricing that account (its own, or the default), fitted on its jobs alone,
        to activate as its own (an enterprise customer's costs, priced for it).

        ``InvalidInputError`` for a bad window or rate, or when no capability has
        enough jobs; ``ValidationFailedError`` if the proposal is not a valid book
        (a version name taken by the pattern, an amount out of range).
        """
        now = self._clock.now()
        until = until or now
        since = since or until - DEFAULT_WINDOW
        for name, at in (("since", since), ("until", until)):
            if at.tzinfo is None or not in_range(at):
                raise InvalidInputError(f"{name} must be a time with its zone, in range")
        if since >= until:
            raise InvalidInputError("since must be before until")
        chosen = tuple(engines) if engines else None
        # The book in force now, whatever the window: the proposal is its next version
        # (a book of the window's time would undo what was activated since).
        book = self._price_books.show(account_id=account_id, at=now).book
        if account_id is not None:  # as the account is charged: its overrides are its prices
            book = book_for_account(book, account_id)
        samples = self._samples.samples(
            since=since, until=until, engines=chosen, exclude_engines=NOT_COSTS,
            limit=MAX_SAMPLES, account_id=account_id,
        )  # fmt: skip
        by_capability: dict[str, list[cm.CostSample]] = defaultdict(list)
        for sample in samples:
            by_capability[sample.capability].append(sample)
        fits = tuple(
            cm.fit_capability(cap, by_capability.get(name, []))
            for name, cap in book.capabilities.items()
        )
        version = version or f"fit-{now:%Y%m%d-%H%M%S.%f}"  # two fits a second apart
        whose = f" of account {account_id}" if account_id else ""
        description = (
            f"Fitted from {sum(f.samples for f in fits)} jobs{whose} of {since:%Y-%m-%d} to "
            f"{until:%Y-%m-%d}, following {book.version}"
        )
        proposal = cp.propose(
            book,
            fits,
            version=version,
            description=description,
            tokens_per_second=tokens_per_second,
        )
        report = FitReport(
            since=since,
            until=until,
            engines=chosen,
            account_id=account_id,
            jobs=len(samples),
            based_on=book.version,
            fits=fits,
            unpriced={
                name: len(jobs)
                for name, jobs in by_capability.items()
                if name not in book.capabilities
            },
            proposal=proposal,
            examples=_examples(book, proposal.book, fits, at=now, account_id=account_id),
        )
        problems = validate_price_book(report.proposed_document())
        if problems:
            raise ValidationFailedError("the proposed price book is not valid", errors=problems)
        return report


def _examples(
    book: PriceBook,
    proposed: PriceBook,
    fits: Sequence[cm.CapabilityFit],
    *,
    at: datetime,
    account_id: str | None,
) -> tuple[Example, ...]:
    price = partial(compute_price, at=at, account_id=account_id)
    return tuple(
        Example(
            capability=fit.capability,
            width=width,
            height=height,
            predicted_s=cm.predicted_seconds(
                book.capabilities[fit.capability], fit, width, height, {}
            ),
            current_tokens=price(
                book, capability=fit.capability, width=width, height=height
            ).tokens,
            proposed_tokens=price(
                proposed, capability=fit.capability, width=width, height=height
            ).tokens,
        )
        for fit in fits
        if fit.fitted
        for width, height in EXAMPLE_SIZES
    )
