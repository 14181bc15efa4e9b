"""The ledger's write side on SQL: the unit of work every movement runs in.

Concurrency: every unit of work locks the account's ``balances`` row first —
``SELECT ... FOR UPDATE`` on PostgreSQL and MariaDB, and on SQLite the whole database
through ``BEGIN IMMEDIATE`` (see ``engine.py``), which needs no statement of its own.
Everything read after the lock is current, so no read-then-write race is possible.
The statements are SQLAlchemy Core, compiled once per dialect and run on the driver
(``prepared.py``, ``batches.py``): a hold is a lock, a read of the account's lots and
five writes; a capture a lock, a hold read and four.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from comfygate.adapters.db.batches import Batches, script_dialect
from comfygate.adapters.db.prepared import Prepared
from comfygate.adapters.db.tables_ledger import (
    balances,
    holds,
    ledger_transactions,
    lots,
    postings,
)
from comfygate.domain import ledger as dl
from comfygate.domain.errors import AccountNotFoundError, HoldNotFoundError
from comfygate.services.ledger_ports import (
    DuplicateIdempotencyKeyError,
    NewTransaction,
    StoredTransaction,
)

# The hot path's statements: Core statements, compiled once per dialect (``Prepared``).
_LOT_COLUMNS = (
    lots.c.id,
    lots.c.account_id,
    lots.c.amount,
    lots.c.remaining,
    lots.c.source,
    lots.c.expires_at,
    lots.c.priority,
    lots.c.created_at,
    lots.c.starts_at,
)  # the fields of ``dl.Lot``, in order
_HOLD_COLUMNS = (
    holds.c.id,
    holds.c.account_id,
    holds.c.amount,
    holds.c.list_tokens,
    holds.c.state,
    holds.c.captured,
    holds.c.created_at,
    holds.c.expires_at,
    holds.c.allocation,
)  # the fields of ``dl.Hold``, in order
# Locks: the account's balance row, which serialises every movement of the account.
# What is read after it comes from separate statements (``_locked_read``).
_LOCK_BALANCE = sa.select(balances.c.account_id).where(
    balances.c.account_id == sa.bindparam("account_id")
)
# The balance row of a hold's account, and only that row: the hold is found by a
# subquery, which a locking read does not lock. (A join locked the hold row on MariaDB,
# which has no ``FOR UPDATE OF``, before the balance row: the opposite order to
# ``expire``, which locks the balance and then updates the account's due holds. The
# two deadlocked.) A hold's account never changes, so the unlocked lookup is safe.
_LOCK_HOLD_ACCOUNT = sa.select(balances.c.account_id).where(
    balances.c.account_id
    == sa.select(holds.c.account_id).where(holds.c.id == sa.bindparam("hold_id")).scalar_subquery()
)
_HOLD = sa.select(*_HOLD_COLUMNS).where(holds.c.id == sa.bindparam("hold_id"))
_FIND_TXN = sa.select(
    ledger_transactions.c.id, ledger_transactions.c.request_hash, ledger_transactions.c.result
).where(ledger_transactions.c.idempotency_key == sa.bindparam("key"))
# Literals, not parameters, as ``HOLD_IS_OPEN`` below: PostgreSQL runs these prepared
# (``batches.py``), and a generic plan of ``remaining > $2`` cannot use ``ix_lots_live``.
LOT_IS_LIVE = lots.c.remaining > sa.literal_column("0")
LOTS = sa.select(*_LOT_COLUMNS).where(lots.c.account_id == sa.bindparam("account_id"), LOT_IS_LIVE)
# The account (one row, its lots' columns NULL when it has none) and its lots: no row
# at all means no account, so the result of the lock itself is never needed.
_ACCOUNT_LOTS = (
    sa.select(balances.c.account_id, *_LOT_COLUMNS)
    .select_from(
        balances.outerjoin(lots, sa.and_(lots.c.account_id == balances.c.account_id, LOT_IS_LIVE))
    )
    .where(balances.c.account_id == sa.bindparam("account_id"))
)
# A literal, not a parameter: the planner then knows ``ix_holds_open`` (partial) applies.
HOLD_IS_OPEN = holds.c.state == sa.literal_column(f"'{dl.HoldState.OPEN.value}'")
_OPEN_HOLDS_DUE = sa.select(*_HOLD_COLUMNS).where(
    holds.c.account_id == sa.bindparam("account_id"),
    HOLD_IS_OPEN,
    holds.c.expires_at <= sa.bindparam("now"),
)
_ADD_TO_LOT = (
    lots.update()
    .where(lots.c.id == sa.bindparam("b_lot_id"))
    .values(remaining=lots.c.remaining + sa.bindparam("delta"))
)
_ADD_TO_BALANCE = (
    balances.update()
    .where(balances.c.account_id == sa.bindparam("b_account_id"))
    .values(
        available=balances.c.available + sa.bindparam("d_available"),
        held=balances.c.held + sa.bindparam("d_held"),
    )
)
_SETTLE_HOLD = holds.update().where(holds.c.id == sa.bindparam("b_hold_id"))
# The idempotency key's unique index, as each backend names it in the error it raises.
_KEY_INDEX = ("uq_ledger_transactions_idempotency_key", "ledger_transactions.idempotency_key")


class LedgerSql:
    """The hot statements, prepared for one dialect."""

    def __init__(self, dialect: Dialect) -> None:
        # SQLite's lock is the transaction itself (BEGIN IMMEDIATE): nothing to send.
        self.locks = dialect.name != "sqlite"
        dialect = script_dialect(dialect)
        self.lock_account = Prepared(_LOCK_BALANCE.with_for_update(), dialect)
        self.lock_hold = Prepared(_LOCK_HOLD_ACCOUNT.with_for_update(), dialect)
        self.hold = Prepared(_HOLD, dialect)
        self.find_txn = Prepared(_FIND_TXN, dialect)
        self.lots = Prepared(LOTS, dialect)
        self.account_lots = Prepared(_ACCOUNT_LOTS, dialect)
        self.open_holds_due = Prepared(_OPEN_HOLDS_DUE, dialect)
        self.insert_txn = Prepared(
            ledger_transactions.insert(), dialect, columns=[c.key for c in ledger_transactions.c]
        )
        self.insert_lot = Prepared(lots.insert(), dialect, columns=[c.key for c in lots.c])
        self.insert_hold = Prepared(holds.insert(), dialect, columns=[c.key for c in holds.c])
        self.insert_posting = Prepared(
            postings.insert().inline(),
            dialect,
            columns=["txn_id", "book", "account_id", "lot_id", "hold_id", "amount"],
        )
        self.settle_hold = Prepared(
            _SETTLE_HOLD, dialect, columns=["state", "captured", "settled_at"]
        )
        self.add_to_lot = Prepared(_ADD_TO_LOT, dialect)
        self.add_to_balance = Prepared(_ADD_TO_BALANCE, dialect)
        self.all = [value for value in vars(self).values() if isinstance(value, Prepared)]


def lot_from_row(row: sa.Row[Any] | tuple[Any, ...]) -> dl.Lot:
    return dl.Lot(*row)


_HOLD_STATES = {state.value: state for state in dl.HoldState}  # cheaper than HoldState(v)


def _hold(row: tuple[Any, ...]) -> dl.Hold:
    hold_id, account_id, amount, list_tokens, state, captured, created, expires, taken = row
    allocation = tuple((lot_id, tokens) for lot_id, tokens in orjson.loads(taken))
    return dl.Hold(
        hold_id, account_id, amount, list_tokens, _HOLD_STATES[state], captured, created,
        expires, allocation,
    )  # fmt: skip


class SqlLedgerUnitOfWork:
    """One database transaction of the ledger.

    Writes are queued and sent just before the next read or the commit, as one batch
    (``batches.py``): on PostgreSQL one round trip, with the ``COMMIT`` when it ends
    the transaction, so a hold or a capture costs two round trips, a locking read and
    its writes. Reads always see the writes queued before them.
    """

    def __init__(self, batches: Batches, dialect: Dialect, sql: LedgerSql) -> None:
        self._sql = sql
        self._dbapi: Any = dialect.loaded_dbapi
        self._keys: list[str] = []
        self._batches = batches
        self._pending: list[tuple[Prepared, Sequence[Mapping[str, Any]]]] = []
        self.appends = 0

    def lock_account(self, account_id: str) -> list[dl.Lot]:
        sql, key = self._sql, {"account_id": account_id}
        rows = self._locked_read(sql.lock_account, sql.account_lots, key)
        if not rows:
            raise AccountNotFoundError(f"no account {account_id}", account_id=account_id)
        return [lot_from_row(row[1:]) for row in rows if row[1] is not None]

    def lock_hold(self, hold_id: str) -> dl.Hold:
        sql, key = self._sql, {"hold_id": hold_id}
        rows = self._locked_read(sql.lock_hold, sql.hold, key)
        if not rows:  # no hold, so no account to lock either
            raise HoldNotFoundError(f"no hold {hold_id}", hold_id=hold_id)
        return _hold(rows[0])

    def find_transaction(self, idempotency_key: str) -> StoredTransaction | None:
        rows = self._read((self._sql.find_txn, {"key": idempotency_key}))
        if not rows:
            return None
        txn_id, request_hash, result = rows[0]
        return StoredTransaction(txn_id, request_hash, orjson.loads(result))

    def lots(self, account_id: str) -> list[dl.Lot]:
        rows = self._read((self._sql.lots, {"account_id": account_id}))
        return [lot_from_row(row) for row in rows]

    def open_holds_due(self, account_id: str, now: datetime) -> list[dl.Hold]:
        rows = self._read((self._sql.open_holds_due, {"account_id": account_id, "now": now}))
        return [_hold(row) for row in rows]

    def append(
        self,
        txn: NewTransaction,
        movement: dl.Movement,
        *,
        new_lot: dl.Lot | None = None,
        new_hold: dl.Hold | None = None,
        settled_hold: dl.Hold | None = None,
    ) -> None:
        self.appends += 1
        sql, write = self._sql, self._pending.append
        if txn.idempotency_key is not None:
            self._keys.append(txn.idempotency_key)
        write((sql.insert_txn, [_txn_row(txn, movement)]))
        if new_lot is not None:
            write((sql.insert_lot, [_lot_row(new_lot, txn.memo)]))
        if new_hold is not None:
            write((sql.insert_hold, [_hold_row(new_hold)]))
        if movement.postings:
            write((sql.insert_posting, [_posting_row(txn.id, p) for p in movement.postings]))
        if settled_hold is not None:
            settled = {
                "b_hold_id": settled_hold.id,
                "state": settled_hold.state.value,
                "captured": settled_hold.captured,
                "settled_at": txn.created_at,
            }
            write((sql.settle_hold, [settled]))
        if movement.lot_deltas:
            deltas = [{"b_lot_id": k, "delta": v} for k, v in movement.lot_deltas.items()]
            write((sql.add_to_lot, deltas))
        d_available = movement.book_delta(dl.Book.AVAILABLE)
        d_held = movement.book_delta(dl.Book.HELD)
        if d_available or d_held:
            change = {
                "b_account_id": movement.account_id,
                "d_available": d_available,
                "d_held": d_held,
            }
            write((sql.add_to_balance, [change]))

    def commit(self) -> None:
        try:
            self._batches.commit(self._take_pending())
        except self._dbapi.Error as error:
            raise translated(error, self._dbapi, self._keys) from error

    def _read(self, *queries: tuple[Prepared, Mapping[str, Any]]) -> list[tuple[Any, ...]]:
        """Send the queued writes, then ``queries`` in order; the last one's rows."""
        try:
            return self._batches.read(self._take_pending(), queries)
        except self._dbapi.Error as error:
            raise translated(error, self._dbapi, self._keys) from error

    def _locked_read(
        self, lock: Prepared, query: Prepared, values: Mapping[str, Any]
    ) -> list[tuple[Any, ...]]:
        """Take ``lock`` (where the backend has row locks), then read ``query``'s rows.

        The read is a statement of its own: in READ COMMITTED a locking read that
        waited returns the locked row as committed but every joined row as it was when
        the statement began. A new statement sees everything committed before it.
        """
        if self._sql.locks:
            return self._read((lock, values), (query, values))
        return self._read((query, values))

    def _take_pending(self) -> list[tuple[Prepared, Sequence[Mapping[str, Any]]]]:
        pending, self._pending = self._pending, []
        return pending


def translated(error: Exception, dbapi: Any, keys: Sequence[str] = ()) -> Exception:
    """A driver's ``error`` as SQLAlchemy would raise it; a reused key (one of
    ``keys``) as our own."""
    if isinstance(error, dbapi.IntegrityError):
        if keys and any(name in str(error) for name in _KEY_INDEX):
            return DuplicateIdempotencyKeyError(", ".join(keys))
        return sa.exc.IntegrityError("ledger batch", None, error)
    return sa.exc.DBAPIError.instance("ledger batch", None, error, dbapi.Error)


def _json(value: Any) -> str:
    """The journal's JSON text (memos, receipts, allocations), by orjson: compact, in a
    tenth of the standard library's time. Dates are ISO 8601, other unknown types ``str``."""
    return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def _txn_row(txn: NewTransaction, movement: dl.Movement) -> dict[str, Any]:
    return {
        "id": txn.id,
        "kind": movement.kind.value,
        "account_id": movement.account_id,
        "idempotency_key": txn.idempotency_key,
        "request_hash": txn.request_hash,
        "hold_id": movement.hold_id,
        "created_at": txn.created_at,
        "memo": _json(txn.memo) if txn.memo else "{}",
        "result": _json(txn.result),
    }


def _lot_row(lot: dl.Lot, memo: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": lot.id,
        "account_id": lot.account_id,
        "amount": lot.amount,
        "remaining": lot.remaining,
        "source": lot.source,
        "expires_at": lot.expires_at,
        "priority": lot.priority,
        "created_at": lot.created_at,
        "memo": _json(memo),
        "starts_at": lot.starts_at,
    }


def _hold_row(hold: dl.Hold) -> dict[str, Any]:
    return {
        "id": hold.id,
        "account_id": hold.account_id,
        "amount": hold.amount,
        "list_tokens": hold.list_tokens,
        "state": hold.state.value,
        "captured": hold.captured,
        "allocation": _json(hold.allocation),
        "created_at": hold.created_at,
        "expires_at": hold.expires_at,
        "settled_at": None,
    }


def _posting_row(txn_id: str, p: dl.Posting) -> dict[str, Any]:
    return {
        "txn_id": txn_id,
        "book": p.book.value,
        "account_id": p.account_id,
        "lot_id": p.lot_id,
        "hold_id": p.hold_id,
        "amount": p.amount,
    }
