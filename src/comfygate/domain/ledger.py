"""The token ledger's pure core: lots, holds, and the postings every movement makes.

Double entry over five books. Every posting names the customer account it concerns
(so a statement is one indexed read) and, where it matters, the lot and the hold:

- ``grants``    where granted tokens come from (goes negative as tokens are granted)
- ``available`` the customer's spendable tokens, per lot
- ``held``      tokens reserved by open holds, per lot
- ``revenue``   tokens captured for work done
- ``expired``   remainders of lots written off at expiry

A movement is a balanced set of postings (they sum to zero) plus the derived changes
to cached state (lot remainders, the account's cached balance). Nothing here does
I/O; the service layer loads state, asks this module what to write, and writes it.

Postings, lots and holds are immutable records, as named tuples (as in beancount):
a movement makes several, and a frozen dataclass costs twice as much to build.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import NamedTuple

from comfygate.domain.errors import CaptureExceedsHoldError, InsufficientBalanceError


class Book(StrEnum):
    GRANTS = "grants"
    AVAILABLE = "available"
    HELD = "held"
    REVENUE = "revenue"
    EXPIRED = "expired"


class GrantSource(StrEnum):
    PLAN = "plan"
    TOPUP = "topup"
    PROMOTION = "promotion"
    ADJUSTMENT = "adjustment"


class TxnKind(StrEnum):
    GRANT = "grant"
    HOLD = "hold"
    CAPTURE = "capture"
    RELEASE = "release"
    EXPIRE_HOLD = "expire_hold"
    EXPIRE_LOT = "expire_lot"


class HoldState(StrEnum):
    OPEN = "open"
    CAPTURED = "captured"
    RELEASED = "released"
    EXPIRED = "expired"


class Posting(NamedTuple):
    book: Book
    account_id: str
    amount: int
    lot_id: str | None = None
    hold_id: str | None = None


class Lot(NamedTuple):
    """A grant of tokens. ``remaining`` is the part neither spent, held nor written off.

    A lot can be granted ahead of its time (a plan's next period, paid early): it is
    spendable from ``starts_at`` until ``expires_at``.
    """

    id: str
    account_id: str
    amount: int
    remaining: int
    source: str
    expires_at: datetime | None
    priority: int
    created_at: datetime
    starts_at: datetime | None = None

    def is_expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now

    def has_started(self, now: datetime) -> bool:
        return self.starts_at is None or self.starts_at <= now

    def is_spendable(self, now: datetime) -> bool:
        """Tokens left, started and not expired."""
        return self.remaining > 0 and self.has_started(now) and not self.is_expired(now)


class Hold(NamedTuple):
    """A reservation. ``allocation`` is what it took from each lot, in burn order."""

    id: str
    account_id: str
    amount: int
    list_tokens: int
    state: HoldState
    captured: int
    created_at: datetime
    expires_at: datetime
    allocation: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True, slots=True)
class Movement:
    """A balanced set of postings and the cached state changes they imply."""

    kind: TxnKind
    account_id: str
    postings: tuple[Posting, ...]
    hold_id: str | None = None
    lot_deltas: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        total = sum(p.amount for p in self.postings)
        if total != 0:
            raise ValueError(f"unbalanced movement {self.kind}: postings sum to {total}")

    def book_delta(self, book: Book) -> int:
        return sum(p.amount for p in self.postings if p.book is book)


def burn_key(lot: Lot) -> tuple[bool, datetime, int, datetime, str]:
    """Spend order: the lot expiring first, then lower ``priority``, then the oldest."""
    never = lot.expires_at is None
    return (never, lot.expires_at or lot.created_at, lot.priority, lot.created_at, lot.id)


def spendable(lots: Iterable[Lot], now: datetime) -> list[Lot]:
    """Lots with tokens left, started and not expired, in burn order."""
    return sorted((lot for lot in lots if lot.is_spendable(now)), key=burn_key)


def allocate(lots: Iterable[Lot], amount: int, now: datetime) -> tuple[tuple[str, int], ...]:
    """Take ``amount`` tokens from ``lots`` in burn order, or raise if they don't cover it."""
    if amount < 0:
        raise ValueError("amount must not be negative")
    usable = spendable(lots, now)
    available = sum(lot.remaining for lot in usable)
    if available < amount:
        raise InsufficientBalanceError(
            f"{amount} tokens needed, {available} available", available=available, required=amount
        )
    taken: list[tuple[str, int]] = []
    left = amount
    for lot in usable:
        if left == 0:
            break
        take = min(lot.remaining, left)
        taken.append((lot.id, take))
        left -= take
    return tuple(taken)


def grant_movement(*, account_id: str, lot_id: str, amount: int) -> Movement:
    """Tokens enter the customer's available balance as a new lot."""
    if amount <= 0:
        raise ValueError("a grant must be positive")
    return Movement(
        kind=TxnKind.GRANT,
        account_id=account_id,
        postings=(
            Posting(Book.GRANTS, account_id, -amount, lot_id=lot_id),
            Posting(Book.AVAILABLE, account_id, amount, lot_id=lot_id),
        ),
        lot_deltas={},  # the lot is created with its remaining already set
    )


def hold_movement(
    *, account_id: str, hold_id: str, allocation: Sequence[tuple[str, int]]
) -> Movement:
    """Move allocated tokens from available to held, lot by lot."""
    postings: list[Posting] = []
    for lot_id, amount in allocation:
        postings.append(Posting(Book.AVAILABLE, account_id, -amount, lot_id, hold_id))
        postings.append(Posting(Book.HELD, account_id, amount, lot_id, hold_id))
    deltas = {lot_id: -amount for lot_id, amount in allocation}
    return Movement(TxnKind.HOLD, account_id, tuple(postings), hold_id, deltas)


def settle_movement(hold: Hold, *, capture: int, kind: TxnKind) -> Movement:
    """Capture ``capture`` tokens of an open hold (first lots first); return the rest.

    A release is a settlement that captures nothing.
    """
    if capture < 0:
        raise ValueError("capture must not be negative")
    if capture > hold.amount:
        raise CaptureExceedsHoldError(
            f"cannot capture {capture} of a {hold.amount}-token hold", hold_id=hold.id
        )
    postings: list[Posting] = []
    deltas: dict[str, int] = {}
    to_charge = capture
    for lot_id, amount in hold.allocation:
        charged = min(amount, to_charge)
        to_charge -= charged
        returned = amount - charged
        if charged:
            postings.append(Posting(Book.HELD, hold.account_id, -charged, lot_id, hold.id))
            postings.append(Posting(Book.REVENUE, hold.account_id, charged, lot_id, hold.id))
        if returned:
            postings.append(Posting(Book.HELD, hold.account_id, -returned, lot_id, hold.id))
            postings.append(Posting(Book.AVAILABLE, hold.account_id, returned, lot_id, hold.id))
            deltas[lot_id] = returned
    return Movement(kind, hold.account_id, tuple(postings), hold.id, deltas)


def expire_lot_movement(lot: Lot) -> Movement:
    """Write off what is left of an expired lot."""
    postings = (
        Posting(Book.AVAILABLE, lot.account_id, -lot.remaining, lot.id),
        Posting(Book.EXPIRED, lot.account_id, lot.remaining, lot.id),
    )
    return Movement(TxnKind.EXPIRE_LOT, lot.account_id, postings, None, {lot.id: -lot.remaining})
