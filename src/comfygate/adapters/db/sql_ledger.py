"""The ledger store on SQL (SQLite, PostgreSQL, MariaDB) with SQLAlchemy Core.

Movements run in ``SqlLedgerUnitOfWork`` (``sql_ledger_uow.py``); this module opens
them, and holds the read side: balances, statements, expiry candidates, reconcile.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.pool import PoolProxiedConnection

from comfygate.adapters.db.base import newest_first
from comfygate.adapters.db.batches import Batches, batches_for
from comfygate.adapters.db.engine import read_only
from comfygate.adapters.db.sql_ledger_uow import (
    HOLD_IS_OPEN,
    LOTS,
    LedgerSql,
    SqlLedgerUnitOfWork,
    lot_from_row,
    translated,
)
from comfygate.adapters.db.tables_ledger import (
    accounts,
    balances,
    holds,
    ledger_transactions,
    lots,
    postings,
)
from comfygate.domain import ledger as dl
from comfygate.services.ledger_ports import CachedBalance, Drift, StatementLine

log = logging.getLogger(__name__)


def _book_sum(book: str) -> sa.ColumnElement[Any]:
    """SUM of the postings to ``book`` in a grouped query (0 when there are none)."""
    amount = sa.case((postings.c.book == book, postings.c.amount), else_=0)
    return sa.func.coalesce(sa.func.sum(amount), 0)


class _Kept:
    """A pooled DBAPI connection the store keeps between units of work, with the
    batches its movements run in."""

    __slots__ = ("batches", "pooled", "since")

    def __init__(self, pooled: PoolProxiedConnection, batches: Batches) -> None:
        self.pooled, self.batches, self.since = pooled, batches, time.monotonic()


class _Scope:
    """``with store.unit_of_work() as uow``: a kept connection's unit of work."""

    __slots__ = ("_kept", "_store")

    def __init__(self, store: SqlLedgerStore) -> None:
        self._store = store

    def __enter__(self) -> SqlLedgerUnitOfWork:
        store = self._store
        self._kept = kept = store._take()
        return SqlLedgerUnitOfWork(kept.batches, store.engine.dialect, store._sql)

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        self._store._put_back(self._kept, failing=kind is not None)


class SqlLedgerStore:
    """``LedgerStore`` on a SQLAlchemy engine.

    Movements run on DBAPI connections the store keeps checked out of the engine's
    pool between units of work (up to ``keep`` of them, by default the pool's size),
    each with its batches ready: a SQLAlchemy ``Connection`` with its transaction
    object, or even a pool checkout and reset, cost more per movement than the
    movement's statements. A connection is given back to the pool after an error the
    rollback did not survive, after ``RECYCLE_S``, and by ``close``.
    """

    RECYCLE_S = 1800.0

    def __init__(self, engine: Engine, *, keep: int | None = None) -> None:
        self.engine = engine
        self._sql = LedgerSql(engine.dialect)
        self._dbapi = engine.dialect.loaded_dbapi
        size = getattr(engine.pool, "size", None)
        self._keep = keep if keep is not None else (size() if callable(size) else 1)
        self._idle: list[_Kept] = []  # append and pop: atomic, no lock needed

    def unit_of_work(self) -> _Scope:
        return _Scope(self)

    def close(self) -> None:
        """Give every kept connection back to the pool."""
        while self._idle:
            self._release(self._idle.pop())

    def _take(self) -> _Kept:
        while True:
            try:
                kept = self._idle.pop()
            except IndexError:
                break
            if time.monotonic() - kept.since <= self.RECYCLE_S:
                return kept
            self._release(kept)  # kept idle for too long: the server may have ended it
        pooled = self.engine.raw_connection()
        try:
            batches = batches_for(pooled.driver_connection, self.engine.dialect, self._sql.all)
        except self._dbapi.Error as error:
            pooled.close()
            raise translated(error, self._dbapi) from error
        except BaseException:
            pooled.close()
            raise
        return _Kept(pooled, batches)

    def _put_back(self, kept: _Kept, *, failing: bool) -> None:
        """End ``kept``'s transaction and keep it, or give it back. If the rollback
        fails, the connection is gone: it is dropped, and the error raised unless the
        unit of work is already failing with its own."""
        try:
            kept.batches.close()  # rolls back unless committed
        except self._dbapi.Error as error:
            kept.pooled.invalidate()
            if failing:
                return
            raise translated(error, self._dbapi) from error
        stale = time.monotonic() - kept.since > self.RECYCLE_S
        if stale or len(self._idle) >= self._keep:
            self._release(kept)
        else:
            self._idle.append(kept)

    def _release(self, kept: _Kept) -> None:
        """Give ``kept`` back to the pool as the pool gave it; if it cannot be reset,
        the connection is gone, and the pool forgets it."""
        try:
            kept.batches.release()
        except self._dbapi.Error:
            kept.pooled.invalidate()
        else:
            kept.pooled.close()

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

    def lots(self, account_id: str) -> list[tuple[dl.Lot, int]]:
        """The live lots (``ix_lots_live``), what the open holds hold of each
        (``ix_holds_open``), and the lots those holds drew dry, by id."""
        open_holds = sa.select(holds.c.id, holds.c.allocation).where(
            holds.c.account_id == account_id, HOLD_IS_OPEN
        )
        held: dict[str, int] = {}
        with read_only(self.engine.connect()) as conn:
            for hold_id, allocation in conn.execute(open_holds):
                try:
                    taken = [(str(lot), int(tokens)) for lot, tokens in orjson.loads(allocation)]
                except (ValueError, TypeError):  # (reconcile reports it)
                    log.warning("hold %s: unreadable allocation %r", hold_id, allocation)
                    continue
                for lot_id, tokens in taken:
                    held[lot_id] = held.get(lot_id, 0) + tokens
            found = [lot_from_row(r) for r in conn.execute(LOTS, {"account_id": account_id})]
            dry = sorted(set(held) - {lot.id for lot in found})
            if dry:
                by_id = sa.select(*LOTS.selected_columns).where(lots.c.id.in_(dry))
                found += [lot_from_row(r) for r in conn.execute(by_id)]
        return [(lot, held.get(lot.id, 0)) for lot in found]

    def statement(self, account_id: str, *, limit: int, before: str | None) -> list[StatementLine]:
        """The page first (a range of ``ix_ledger_transactions_account_newest``), then
        each of its transactions' postings (by ``ix_postings_txn_id``): the work is the
        page's, whatever the account's history. (Joined and grouped instead, PostgreSQL
        planned a scan of every posting.)"""
        t, p = ledger_transactions, postings
        page = sa.select(t.c.id, t.c.kind, t.c.created_at, t.c.hold_id, t.c.memo)
        keys = [(t.c.account_id, account_id)]
        page = newest_first(
            page, t.c.id, keys, before=before or None, limit=limit, dialect=self.engine.dialect
        )
        lines = page.subquery()

        def delta(book: str) -> sa.ScalarSelect[Any]:
            total = sa.select(sa.func.coalesce(sa.func.sum(p.c.amount), 0))
            return total.where(p.c.txn_id == lines.c.id, p.c.book == book).scalar_subquery()

        query = sa.select(
            *lines.c, delta("available").label("d_available"), delta("held").label("d_held")
        ).order_by(lines.c.id.desc())
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
        due_holds = sa.select(holds.c.account_id).where(HOLD_IS_OPEN, holds.c.expires_at <= now)
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
        """In one snapshot: a movement that commits meanwhile is wholly in it or wholly
        out (read committed, one check's statements saw a hold the one before had not,
        and reported a sound ledger as drifting). SQLite's read transaction is one."""
        conn = read_only(self.engine.connect())
        if self.engine.dialect.name != "sqlite":
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn:
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
    """Recompute every cache from the journal and list where they disagree.

    Each check aggregates the postings (or, for holds' states, the settling
    transactions) once, in a scan, and joins the totals to the cache, so only drifts
    come back.
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
    drifts += _per_row(conn, lots, "remaining", postings.c.lot_id, "available")
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
    checks = (_lot_bounds, _lot_grants, _captures, _hold_states, _allocations)
    return drifts + [drift for check in checks for drift in check(conn)]


def _lot_bounds(conn: sa.Connection) -> list[Drift]:
    """A lot never holds more than it was granted, nor less than nothing (a release
    routed to the wrong lot passes every sum above and fails this)."""
    beyond = sa.select(lots.c.account_id, lots.c.id, lots.c.remaining, lots.c.amount).where(
        sa.or_(lots.c.remaining > lots.c.amount, lots.c.remaining < 0)
    )
    return [
        Drift(account_id, f"lot {lot_id} remaining (of {amount} granted)", remaining, amount)
        for account_id, lot_id, remaining, amount in conn.execute(beyond)
    ]


def _per_row(
    conn: sa.Connection,
    table: sa.Table,
    cache: str,
    key: sa.Column[Any],
    book: str,
    *,
    sign: int = 1,
) -> list[Drift]:
    """Rows of ``table`` (lots or holds) whose ``cache`` column is not ``sign`` times
    what their postings (found by ``key``) put in ``book``."""
    by_row = _derived(key, book)
    derived = sign * sa.func.coalesce(by_row.c[book], 0)
    wrong = (
        sa.select(table.c.account_id, table.c.id, table.c[cache], derived)
        .select_from(table.outerjoin(by_row, by_row.c.key == table.c.id))
        .where(table.c[cache] != derived)
    )
    kind = table.name.rstrip("s")
    return [
        Drift(account_id, f"{kind} {row_id} {cache}", int(cached), int(found))
        for account_id, row_id, cached, found in conn.execute(wrong)
    ]


def _lot_grants(conn: sa.Connection) -> list[Drift]:
    """A lot's ``amount`` is what its grant posted (the bounds above trust it)."""
    return _per_row(conn, lots, "amount", postings.c.lot_id, "grants", sign=-1)


_SETTLED_AS = {
    dl.TxnKind.CAPTURE.value: dl.HoldState.CAPTURED.value,
    dl.TxnKind.RELEASE.value: dl.HoldState.RELEASED.value,
    dl.TxnKind.EXPIRE_HOLD.value: dl.HoldState.EXPIRED.value,
}


def _hold_states(conn: sa.Connection) -> list[Drift]:
    """A hold is open until one transaction settles it (a capture, a release or its
    expiry), and then in that one's state: a zero-token hold (VIP) posts nothing, so
    no sum says whether it was settled. Settled twice is drift too."""
    t = ledger_transactions
    settled = (
        sa.select(t.c.hold_id, sa.func.count().label("times"), sa.func.min(t.c.kind).label("kind"))
        .where(t.c.kind.in_(list(_SETTLED_AS)))
        .group_by(t.c.hold_id)
        .subquery()
    )
    journal_state = sa.case(
        *((settled.c.kind == kind, state) for kind, state in _SETTLED_AS.items()),
        else_=dl.HoldState.OPEN.value,
    )
    times = sa.func.coalesce(settled.c.times, 0)
    wrong = (
        sa.select(holds.c.account_id, holds.c.id, holds.c.state, journal_state, times)
        .select_from(holds.outerjoin(settled, settled.c.hold_id == holds.c.id))
        .where(sa.or_(holds.c.state != journal_state, times > 1))
    )
    drifts = []
    for account_id, hold_id, state, journal, n in conn.execute(wrong):
        what = f"hold {hold_id} is {state}, " + (
            f"but the journal settles it {n} times" if n > 1 else f"but the journal says {journal}"
        )
        said = int(state != dl.HoldState.OPEN.value)  # settlements its state implies
        drifts.append(Drift(account_id, what, said, int(n), unit="settlements"))
    return drifts


def _captures(conn: sa.Connection) -> list[Drift]:
    """Each hold's ``captured`` is what its postings paid to revenue."""
    return _per_row(conn, holds, "captured", postings.c.hold_id, "revenue")


def _allocations(conn: sa.Connection) -> list[Drift]:
    """An open hold's allocation (where a release sends its tokens back) is, lot by
    lot, what its postings took from each lot."""
    open_holds = holds.c.state == dl.HoldState.OPEN.value
    taken = (
        sa.select(postings.c.hold_id, postings.c.lot_id, sa.func.sum(postings.c.amount))
        .select_from(postings.join(holds, holds.c.id == postings.c.hold_id))
        .where(open_holds, postings.c.book == dl.Book.HELD.value)
        .group_by(postings.c.hold_id, postings.c.lot_id)
    )
    posted_by_hold: dict[str, dict[str, int]] = {}
    for hold_id, lot_id, total in conn.execute(taken):
        if total:
            posted_by_hold.setdefault(hold_id, {})[lot_id] = int(total)
    drifts = []
    query = sa.select(holds.c.account_id, holds.c.id, holds.c.allocation).where(open_holds)
    for account_id, hold_id, allocation in conn.execute(query):
        said = {lot_id: int(tokens) for lot_id, tokens in json.loads(allocation) if tokens}
        posted = posted_by_hold.get(hold_id, {})
        for lot_id in sorted(said.keys() | posted.keys()):
            if said.get(lot_id, 0) != posted.get(lot_id, 0):
                what = f"hold {hold_id} allocation from lot {lot_id}"
                drifts.append(Drift(account_id, what, said.get(lot_id, 0), posted.get(lot_id, 0)))
    return drifts
