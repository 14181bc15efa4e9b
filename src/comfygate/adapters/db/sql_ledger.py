"""The ledger store on SQL (SQLite, PostgreSQL, MariaDB) with SQLAlchemy Core.

Concurrency: every unit of work locks the account's ``balances`` row first —
``SELECT ... FOR UPDATE`` on PostgreSQL and MariaDB, and on SQLite the whole database
through ``BEGIN IMMEDIATE`` (see ``engine.py``). Everything read after the lock is
current, so no read-then-write race is possible. Statements are few and batched:
a hold is one lock, one idempotency probe, one lot read and five writes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from comfygate.adapters.db.engine import read_only
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

_LOCK_BALANCE = (
    sa.select(balances.c.available, balances.c.held)
    .where(balances.c.account_id == sa.bindparam("account_id"))
    .with_for_update()
)
_FIND_TXN = sa.select(
    ledger_transactions.c.id, ledger_transactions.c.request_hash, ledger_transactions.c.result
).where(ledger_transactions.c.idempotency_key == sa.bindparam("key"))
_LOTS = sa.select(lots).where(lots.c.account_id == sa.bindparam("account_id"), lots.c.remaining > 0)
# Statements are built once: SQLAlchemy then reuses their compiled form.
_INSERT_TXN = ledger_transactions.insert()
_INSERT_LOT = lots.insert()
_INSERT_HOLD = holds.insert()
_INSERT_POSTING = postings.insert()
_HOLD = sa.select(holds).where(holds.c.id == sa.bindparam("hold_id"))
_SETTLE_HOLD = holds.update().where(holds.c.id == sa.bindparam("b_hold_id"))
_HOLD_ACCOUNT = (
    sa.select(balances.c.account_id)
    .join(holds, holds.c.account_id == balances.c.account_id)
    .where(holds.c.id == sa.bindparam("hold_id"))
)
# Lock only the balance row: it serialises the account (hold rows change under it).
# MariaDB has no ``FOR UPDATE OF``; there the join's hold row is locked too, harmlessly.
_LOCK_HOLD_PG = _HOLD_ACCOUNT.with_for_update(of=balances)
_LOCK_HOLD = _HOLD_ACCOUNT.with_for_update()
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


def _book_sum(book: str) -> sa.ColumnElement[Any]:
    """SUM of the postings to ``book`` in a grouped query (0 when there are none)."""
    amount = sa.case((postings.c.book == book, postings.c.amount), else_=0)
    return sa.func.coalesce(sa.func.sum(amount), 0)


def _lot(row: sa.Row[Any]) -> dl.Lot:
    return dl.Lot(
        row.id,
        row.account_id,
        row.amount,
        row.remaining,
        row.source,
        row.expires_at,
        row.priority,
        row.created_at,
    )


def _hold(row: sa.Row[Any]) -> dl.Hold:
    allocation = tuple((lot_id, amount) for lot_id, amount in json.loads(row.allocation))
    return dl.Hold(
        row.id,
        row.account_id,
        row.amount,
        row.list_tokens,
        dl.HoldState(row.state),
        row.captured,
        row.created_at,
        row.expires_at,
        allocation,
    )


class SqlLedgerUnitOfWork:
    """One database transaction of the ledger."""

    def __init__(self, conn: sa.Connection) -> None:
        self._conn = conn

    def lock_account(self, account_id: str) -> CachedBalance:
        row = self._conn.execute(_LOCK_BALANCE, {"account_id": account_id}).first()
        if row is None:
            raise AccountNotFoundError(f"no account {account_id}", account_id=account_id)
        return CachedBalance(row.available, row.held)

    def lock_hold(self, hold_id: str) -> str:
        query = _LOCK_HOLD_PG if self._conn.dialect.name == "postgresql" else _LOCK_HOLD
        account_id = self._conn.execute(query, {"hold_id": hold_id}).scalar_one_or_none()
        if account_id is None:
            raise HoldNotFoundError(f"no hold {hold_id}", hold_id=hold_id)
        return str(account_id)

    def find_transaction(self, idempotency_key: str) -> StoredTransaction | None:
        row = self._conn.execute(_FIND_TXN, {"key": idempotency_key}).first()
        if row is None:
            return None
        return StoredTransaction(row.id, row.request_hash, json.loads(row.result))

    def lots(self, account_id: str) -> list[dl.Lot]:
        return [_lot(r) for r in self._conn.execute(_LOTS, {"account_id": account_id})]

    def hold(self, hold_id: str) -> dl.Hold | None:
        row = self._conn.execute(_HOLD, {"hold_id": hold_id}).first()
        return None if row is None else _hold(row)

    def open_holds_due(self, account_id: str, now: datetime) -> list[dl.Hold]:
        query = sa.select(holds).where(
            holds.c.account_id == account_id,
            holds.c.state == dl.HoldState.OPEN.value,
            holds.c.expires_at <= now,
        )
        return [_hold(r) for r in self._conn.execute(query)]

    def append(
        self,
        txn: NewTransaction,
        movement: dl.Movement,
        *,
        new_lot: dl.Lot | None = None,
        new_hold: dl.Hold | None = None,
        settled_hold: dl.Hold | None = None,
    ) -> None:
        conn = self._conn
        try:
            conn.execute(_INSERT_TXN, _txn_row(txn, movement))
        except sa.exc.IntegrityError as error:
            if txn.idempotency_key is None:
                raise
            raise DuplicateIdempotencyKeyError(txn.idempotency_key) from error
        if new_lot is not None:
            conn.execute(_INSERT_LOT, _lot_row(new_lot, txn.memo))
        if new_hold is not None:
            conn.execute(_INSERT_HOLD, _hold_row(new_hold))
        if movement.postings:
            conn.execute(_INSERT_POSTING, [_posting_row(txn.id, p) for p in movement.postings])
        if settled_hold is not None:
            conn.execute(
                _SETTLE_HOLD,
                {
                    "b_hold_id": settled_hold.id,
                    "state": settled_hold.state.value,
                    "captured": settled_hold.captured,
                    "settled_at": txn.created_at,
                },
            )
        if movement.lot_deltas:
            conn.execute(
                _ADD_TO_LOT, [{"b_lot_id": k, "delta": v} for k, v in movement.lot_deltas.items()]
            )
        d_available = movement.book_delta(dl.Book.AVAILABLE)
        d_held = movement.book_delta(dl.Book.HELD)
        if d_available or d_held:
            conn.execute(
                _ADD_TO_BALANCE,
                {"b_account_id": movement.account_id, "d_available": d_available, "d_held": d_held},
            )

    def commit(self) -> None:
        self._conn.commit()


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

    @contextmanager
    def unit_of_work(self) -> Iterator[SqlLedgerUnitOfWork]:
        with self.engine.connect() as conn, conn.begin():
            # ``conn.begin()`` rolls back on leaving unless committed inside.
            yield SqlLedgerUnitOfWork(conn)

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
        due_holds = sa.select(holds.c.account_id).where(
            holds.c.state == dl.HoldState.OPEN.value, holds.c.expires_at <= now
        )
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


def _reconcile(conn: sa.Connection) -> list[Drift]:
    """Recompute every cache from postings and list where they disagree."""
    p = postings
    drifts: list[Drift] = []
    per_account = (
        sa.select(
            balances.c.account_id,
            balances.c.available,
            balances.c.held,
            _book_sum("available"),
            _book_sum("held"),
        )
        .select_from(balances.outerjoin(p, p.c.account_id == balances.c.account_id))
        .group_by(balances.c.account_id, balances.c.available, balances.c.held)
    )
    for account_id, available, held, d_available, d_held in conn.execute(per_account):
        if available != d_available:
            drifts.append(Drift(account_id, "available", available, int(d_available)))
        if held != d_held:
            drifts.append(Drift(account_id, "held", held, int(d_held)))
    per_lot = (
        sa.select(
            lots.c.account_id,
            lots.c.id,
            lots.c.remaining,
            _book_sum("available"),
        )
        .select_from(lots.outerjoin(p, p.c.lot_id == lots.c.id))
        .group_by(lots.c.account_id, lots.c.id, lots.c.remaining)
    )
    for account_id, lot_id, remaining, derived in conn.execute(per_lot):
        if remaining != derived:
            drifts.append(Drift(account_id, f"lot {lot_id} remaining", remaining, int(derived)))
    per_hold = (
        sa.select(
            holds.c.account_id,
            holds.c.id,
            holds.c.state,
            holds.c.amount,
            _book_sum("held"),
        )
        .select_from(holds.outerjoin(p, p.c.hold_id == holds.c.id))
        .group_by(holds.c.account_id, holds.c.id, holds.c.state, holds.c.amount)
    )
    for account_id, hold_id, state, amount, derived in conn.execute(per_hold):
        expected = amount if state == dl.HoldState.OPEN.value else 0
        if expected != derived:
            drifts.append(Drift(account_id, f"hold {hold_id} held", expected, int(derived)))
    return drifts
