"""Ports the ledger service needs, and the records it reads back.

A ``LedgerStore`` opens ``LedgerUnitOfWork``s: one database transaction each, in
which the account's balance row is locked first (so every movement of one account is
serialised on every backend) and everything read afterwards is current.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple, Protocol

from comfygate.domain.ledger import Hold, Lot, Movement


class DuplicateIdempotencyKeyError(Exception):
    """Raised by ``append`` when the journal already holds the transaction's key."""


@dataclass(frozen=True, slots=True)
class StoredTransaction:
    """An earlier transaction found by its idempotency key."""

    id: str
    request_hash: str | None
    result: dict[str, Any]


@dataclass(frozen=True, slots=True)
class CachedBalance:
    available: int
    held: int


@dataclass(frozen=True, slots=True)
class StatementLine:
    txn_id: str
    kind: str
    created_at: datetime
    available_delta: int
    held_delta: int
    hold_id: str | None
    memo: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Drift:
    """A cached figure that disagrees with what the postings say."""

    account_id: str
    what: str
    cached: int
    derived: int
    unit: str = "tokens"
    """What the two figures count: tokens, or (for a hold's state) settlements."""


class NewTransaction(NamedTuple):
    """What the service asks the store to append, besides the movement's postings."""

    id: str
    created_at: datetime
    idempotency_key: str | None
    request_hash: str | None
    memo: dict[str, Any]
    result: dict[str, Any]


class LedgerUnitOfWork(Protocol):
    appends: int
    """How many movements ``append`` has been given so far."""

    def lock_account(self, account_id: str) -> list[Lot]:
        """Lock the account's balance row for this transaction and return its lots that
        still have tokens; raise ``AccountNotFoundError`` if there is no such account."""
        ...

    def lock_hold(self, hold_id: str) -> Hold:
        """Lock the balance row of the hold's account and return the hold.

        Raises ``HoldNotFoundError`` if there is no such hold.
        """
        ...

    def find_transaction(self, idempotency_key: str) -> StoredTransaction | None: ...

    def lots(self, account_id: str) -> list[Lot]:
        """The account's lots that still have tokens."""
        ...

    def open_holds_due(self, account_id: str, now: datetime) -> list[Hold]: ...

    def append(
        self,
        txn: NewTransaction,
        movement: Movement,
        *,
        new_lot: Lot | None = None,
        new_hold: Hold | None = None,
        settled_hold: Hold | None = None,
    ) -> None:
        """Write the transaction, its postings, and keep lots/holds/balance in step.

        Raises ``DuplicateIdempotencyKeyError`` if the key was used before.
        """
        ...

    def commit(self) -> None: ...


class LedgerStore(Protocol):
    def unit_of_work(self) -> AbstractContextManager[LedgerUnitOfWork]:
        """A new transaction; rolled back on leaving unless ``commit()`` was called."""
        ...

    def create_account(self, *, account_id: str, name: str, created_at: datetime) -> None: ...

    def account_exists(self, account_id: str) -> bool: ...

    def balance(self, account_id: str) -> CachedBalance | None: ...

    def lots(self, account_id: str) -> list[tuple[Lot, int]]:
        """The account's lots with tokens left or held by an open hold, each with the
        tokens its open holds hold."""
        ...

    def statement(self, account_id: str, *, limit: int, before: str | None) -> list[StatementLine]:
        """Newest first; ``before`` is a transaction id to page from."""
        ...

    def accounts_with_expiring(self, now: datetime) -> list[str]:
        """Accounts with an open hold past its expiry or a lot past its expiry with tokens."""
        ...

    def reconcile(self) -> list[Drift]: ...

    def posting_sums(self) -> dict[str, int]:
        """Total of every book across all accounts (all five sum to zero)."""
        ...
