"""The ledger store on SQL (SQLite, PostgreSQL, MariaDB) with SQLAlchemy Core.

Concurrency: every unit of work locks the account's ``balances`` row first —
``SELECT ... FOR UPDATE`` on PostgreSQL and MariaDB, and on SQLite the whole database
through ``BEGIN IMMEDIATE`` (see ``engine.py``). Everything read after the lock is
current, so no read-then-write race is possible. Statements are few and batched:
a hold is one lock, one idempotency probe, one lot read and five writes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect, Engine

from comfygate.adapters.db.batches import batches_for, script_dialect
from comfygate.adapters.db.engine import read_only
from comfygate.adapters.db.prepared import Prepared
from comfygate.adapters.db.tables_ledger import (
    accounts,
    balances,
    holds,
    ledger_transactions,
    lots,
    postings,
)
from comfygate.domain import ledger as dl
from comfygate.domain.errors import AccountNotFoundError, HoldNotFoundError
from comfygate.services.ledger_ports import (
    CachedBalance,
    Drift,
    DuplicateIdempotencyKeyError,
    NewTransaction,
    StatementLine,
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
# What is read after it comes from separate statements, never from the locking one:
# in READ COMMITTED a locking read that waited returns the locked row as committed but
# every joined row as it was when the statement began, which would be stale.
_LOCK_BALANCE = sa.select(balances.c.account_id).where(
    balances.c.account_id == sa.bindparam("account_id")
)
# The balance row of a hold's account. MariaDB has no ``FOR UPDATE OF`` and locks the
# hold row too, harmlessly: it is the account's.
_LOCK_HOLD_ACCOUNT = (
    sa.select(balances.c.account_id)
    .join(holds, holds.c.account_id == balances.c.account_id)
    .where(holds.c.id == sa.bindparam("hold_id"))
)
_HOLD = sa.select(*_HOLD_COLUMNS).where(holds.c.id == sa.bindparam("hold_id"))
_FIND_TXN = sa.select(
    ledger_transactions.c.id, ledger_transactions.c.request_hash, ledger_transactions.c.result
).where(ledger_transactions.c.idempotency_key == sa.bindparam("key"))
_LOTS = sa.select(*_LOT_COLUMNS).where(
    lots.c.account_id == sa.bindparam("account_id"), lots.c.remaining > 0
)
# A literal, not a parameter: the planner then knows ``ix_holds_open`` (partial) applies.
_OPEN = holds.c.state == sa.literal_column(f"'{dl.HoldState.OPEN.value}'")
_OPEN_HOLDS_DUE = sa.select(*_HOLD_COLUMNS).where(
    holds.c.account_id == sa.bindparam("account_id"),
    _OPEN,
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


class _LedgerSql:
    """The hot statements, prepared for one dialect."""

    def __init__(self, dialect: Dialect) -> None:
        if dialect.name == "postgresql":
            lock_hold = _LOCK_HOLD_ACCOUNT.with_for_update(of=balances)
        else:  # MariaDB locks every row read; SQLite has no row locks (BEGIN IMMEDIATE)
            lock_hold = _LOCK_HOLD_ACCOUNT.with_for_update()
        dialect = script_dialect(dialect)
        self.lock_account = Prepared(_LOCK_BALANCE.with_for_update(), dialect)
        self.lock_hold = Prepared(lock_hold, dialect)
        self.hold = Prepared(_HOLD, dialect)
        self.find_txn = Prepared(_FIND_TXN, dialect)
        self.lots = Prepared(_LOTS, dialect)
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


def _book_sum(book: str) -> sa.ColumnElement[Any]:
    """SUM of the postings to ``book`` in a grouped query (0 when there are none)."""
    amount = sa.case((postings.c.book == book, postings.c.amount), else_=0)
    return sa.func.coalesce(sa.func.sum(amount), 0)


def _lot(row: sa.Row[Any] | tuple[Any, ...]) -> dl.Lot:
    return dl.Lot(*row)


def _hold(row: tuple[Any, ...]) -> dl.Hold:
    hold_id, account_id, amount, list_tokens, state, captured, created, expires, taken = row
    allocation = tuple((lot_id, tokens) for lot_id, tokens in json.loads(taken))
    return dl.Hold(
        hold_id, account_id, amount, list_tokens, dl.HoldState(state), captured, created,
        expires, allocation,
    )  # fmt: skip


class SqlLedgerUnitOfWork:
    """One database transaction of the ledger.

    Writes are queued and sent just before the next read or the commit, as one batch
    (``batches.py``): on PostgreSQL one round trip, with the ``COMMIT`` when it ends
    the transaction, so a hold or a capture costs two round trips, a locking read and
    its writes. Reads always see the writes queued before them.
    """

    def __init__(self, driver: Any, dialect: Dialect, sql: _LedgerSql) -> None:
        self._sql = sql
        self._batches = batches_for(driver, dialect, sql.all)
        self._dbapi: Any = dialect.loaded_dbapi
        self._pending: list[tuple[Prepared, Sequence[Mapping[str, Any]]]] = []
        self._keys: list[str] = []
        self.appends = 0

    def lock_account(self, account_id: str) -> list[dl.Lot]:
        sql, key = self._sql, {"account_id": account_id}
        locked, lots = self._read((sql.lock_account, key), (sql.lots, key))
        if not locked:
            raise AccountNotFoundError(f"no account {account_id}", account_id=account_id)
        return [_lot(row) for row in lots]

    def lock_hold(self, hold_id: str) -> dl.Hold:
        sql, key = self._sql, {"hold_id": hold_id}
        locked, hold = self._read((sql.lock_hold, key), (sql.hold, key))
        if not locked:
            raise HoldNotFoundError(f"no hold {hold_id}", hold_id=hold_id)
        return _hold(hold[0])

    def find_transaction(self, idempotency_key: str) -> StoredTransaction | None:
        (rows,) = self._read((self._sql.find_txn, {"key": idempotency_key}))
        if not rows:
            return None
        txn_id, request_hash, result = rows[0]
        return StoredTransaction(txn_id, request_hash, json.loads(result))

    def lots(self, account_id: str) -> list[dl.Lot]:
        (rows,) = self._read((self._sql.lots, {"account_id": account_id}))
        return [_lot(row) for row in rows]

    def open_holds_due(self, account_id: str, now: datetime) -> list[dl.Hold]:
        (rows,) = self._read((self._sql.open_holds_due, {"account_id": account_id, "now": now}))
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
        with self._errors():
            self._batches.commit(self._take_pending())

    def close(self) -> None:
        self._batches.close()

    def _read(self, *queries: tuple[Prepared, Mapping[str, Any]]) -> list[list[tuple[Any, ...]]]:
        """Send the queued writes, then ``queries`` in order; each query's rows."""
        with self._errors():
            return self._batches.read(self._take_pending(), queries)

    def _take_pending(self) -> list[tuple[Prepared, Sequence[Mapping[str, Any]]]]:
        pending, self._pending = self._pending, []
        return pending

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Driver errors as SQLAlchemy would raise them; a reused key as our own."""
        try:
            yield
        except self._dbapi.IntegrityError as error:
            if self._keys and any(name in str(error) for name in _KEY_INDEX):
                raise DuplicateIdempotencyKeyError(self._keys[-1]) from error
            raise sa.exc.IntegrityError("ledger batch", None, error) from error
        except self._dbapi.Error as error:
            raise sa.exc.DBAPIError.instance(
                "ledger batch", None, error, self._dbapi.Error
            ) from error


def _txn_row(txn: NewTransaction, movement: dl.Movement) -> dict[str, Any]:
    return {
        "id": txn.id,
        "kind": movement.kind.value,
        "account_id": movement.account_id,
        "idempotency_key": txn.idempotency_key,
        "request_hash": txn.request_hash,
        "hold_id": movement.hold_id,
        "created_at": txn.created_at,
        "memo": json.dumps(txn.memo, default=str),
        "result": json.dumps(txn.result, default=str),
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
        "memo": json.dumps(memo, default=str),
    }


def _hold_row(hold: dl.Hold) -> dict[str, Any]:
    return {
        "id": hold.id,
        "account_id": hold.account_id,
        "amount": hold.amount,
        "list_tokens": hold.list_tokens,
        "state": hold.state.value,
        "captured": hold.captured,
        "allocation": json.dumps([list(pair) for pair in hold.allocation]),
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


class SqlLedgerStore:
    """``LedgerStore`` on a SQLAlchemy engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sql = _LedgerSql(engine.dialect)

    @contextmanager
    def unit_of_work(self) -> Iterator[SqlLedgerUnitOfWork]:
        # A DBAPI connection straight from the pool: a SQLAlchemy ``Connection`` and its
        # transaction object cost more per movement than the movement's statements.
        pooled = self.engine.raw_connection()
        try:
            uow = SqlLedgerUnitOfWork(pooled.driver_connection, self.engine.dialect, self._sql)
            try:
                yield uow
            finally:
                uow.close()  # rolls back unless committed
        finally:
            pooled.close()

    def create_account(self, *, account_id: str, name: str, created_at: datetime) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                accounts.insert(), {"id": account_id, "name": name, "created_at": created_at}
            )
            conn.execute(balances.insert(), {"account_id": account_id, "available": 0, "held": 0})

    def account_exists(self, account_id: str) -> bool:
        with read_only(self.engine.connect()) as conn:
            query = sa.select(accounts.c.id).where(accounts.c.id == account_id)
            return conn.execute(query).first() is not None

    def balance(self, account_id: str) -> CachedBalance | None:
        with read_only(self.engine.connect()) as conn:
            query = sa.select(balances.c.available, balances.c.held).where(
                balances.c.account_id == account_id
            )
            row = conn.execute(query).first()
        return None if row is None else CachedBalance(row.available, row.held)

    def lots(self, account_id: str) -> list[dl.Lot]:
        with read_only(self.engine.connect()) as conn:
            return [_lot(r) for r in conn.execute(_LOTS, {"account_id": account_id})]

    def statement(self, account_id: str, *, limit: int, before: str | None) -> list[StatementLine]:
        t, p = ledger_transactions, postings
        query = (
            sa.select(
                t.c.id,
                t.c.kind,
                t.c.created_at,
                t.c.hold_id,
                t.c.memo,
                _book_sum("available").label("d_available"),
                _book_sum("held").label("d_held"),
            )
            .select_from(t.outerjoin(p, p.c.txn_id == t.c.id))
            .where(t.c.account_id == account_id)
            .group_by(t.c.id, t.c.kind, t.c.created_at, t.c.hold_id, t.c.memo)
            .order_by(t.c.id.desc())
            .limit(limit)
        )
        if before:
            query = query.where(t.c.id < before)
        with read_only(self.engine.connect()) as conn:
            rows = conn.execute(query).all()
        return [
            StatementLine(
                r.id,
                r.kind,
                r.created_at,
                int(r.d_available),
                int(r.d_held),
                r.hold_id,
                json.loads(r.memo),
            )
            for r in rows
        ]

    def accounts_with_expiring(self, now: datetime) -> list[str]:
        due_holds = sa.select(holds.c.account_id).where(_OPEN, holds.c.expires_at <= now)
        due_lots = sa.select(lots.c.account_id).where(
            lots.c.remaining > 0, lots.c.expires_at <= now
        )
        with read_only(self.engine.connect()) as conn:
            found = conn.execute(sa.union(due_holds, due_lots)).scalars().all()
        return sorted(set(found))

    def posting_sums(self) -> dict[str, int]:
        query = sa.select(postings.c.book, sa.func.sum(postings.c.amount)).group_by(postings.c.book)
        with read_only(self.engine.connect()) as conn:
            return {book: int(total) for book, total in conn.execute(query)}

    def reconcile(self) -> list[Drift]:
        with read_only(self.engine.connect()) as conn:
            return _reconcile(conn)


def _derived(key: sa.Column[Any], *books: str) -> sa.Subquery:
    """Per ``key`` (account, lot or hold), the postings' total to each of ``books``."""
    return (
        sa.select(key.label("key"), *(_book_sum(book).label(book) for book in books))
        .where(key.is_not(None))
        .group_by(key)
        .subquery()
    )


def _reconcile(conn: sa.Connection) -> list[Drift]:
    """Recompute every cache from postings and list where they disagree.

    Each check aggregates the postings once (a scan: postings are indexed only by
    transaction) and joins the totals to the cache, so only drifts come back.
    """
    drifts: list[Drift] = []
    by_account = _derived(postings.c.account_id, "available", "held")
    available = sa.func.coalesce(by_account.c.available, 0)
    held = sa.func.coalesce(by_account.c.held, 0)
    per_account = (
        sa.select(balances.c.account_id, balances.c.available, available, balances.c.held, held)
        .select_from(balances.outerjoin(by_account, by_account.c.key == balances.c.account_id))
        .where(sa.or_(balances.c.available != available, balances.c.held != held))
    )
    for account_id, cached_available, derived_available, cached_held, derived_held in conn.execute(
        per_account
    ):
        if cached_available != derived_available:
            drifts.append(Drift(account_id, "available", cached_available, int(derived_available)))
        if cached_held != derived_held:
            drifts.append(Drift(account_id, "held", cached_held, int(derived_held)))
    by_lot = _derived(postings.c.lot_id, "available")
    lot_available = sa.func.coalesce(by_lot.c.available, 0)
    per_lot = (
        sa.select(lots.c.account_id, lots.c.id, lots.c.remaining, lot_available)
        .select_from(lots.outerjoin(by_lot, by_lot.c.key == lots.c.id))
        .where(lots.c.remaining != lot_available)
    )
    for account_id, lot_id, remaining, derived in conn.execute(per_lot):
        drifts.append(Drift(account_id, f"lot {lot_id} remaining", remaining, int(derived)))
    by_hold = _derived(postings.c.hold_id, "held")
    hold_held = sa.func.coalesce(by_hold.c.held, 0)
    expected = sa.case((holds.c.state == dl.HoldState.OPEN.value, holds.c.amount), else_=0)
    per_hold = (
        sa.select(holds.c.account_id, holds.c.id, expected, hold_held)
        .select_from(holds.outerjoin(by_hold, by_hold.c.key == holds.c.id))
        .where(expected != hold_held)
    )
    for account_id, hold_id, cached, derived in conn.execute(per_hold):
        drifts.append(Drift(account_id, f"hold {hold_id} held", int(cached), int(derived)))
    return drifts
