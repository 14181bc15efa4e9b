"""Engines that are correct for writers on each backend.

- SQLite: WAL, ``synchronous=NORMAL``, a busy timeout, and ``BEGIN IMMEDIATE`` for
  every transaction so that two writers never read-then-write past each other. A new
  database gets 1 KiB pages rather than 4 KiB: a commit writes every page it touched
  to the WAL whole, and a movement's rows are small, so a hold writes a quarter of the
  bytes (an existing database keeps its page size). The WAL is checkpointed every
  40,000 pages rather than SQLite's 1,000: the commit that crosses the mark copies and
  syncs, and each hot page is copied once per checkpoint.
  Within one process, write transactions on a database file also queue on a Python
  lock before ``BEGIN IMMEDIATE``: SQLite's own busy handler polls with sleeps of
  1 to 100 ms, so threads of one gateway contending for the write lock would sleep
  far longer than the transactions they wait for. The lock is handed over the
  moment the holder commits or rolls back; other processes still meet the busy
  timeout as before.
- PostgreSQL and MariaDB: READ COMMITTED; writers serialise per account on a row lock
  (``SELECT ... FOR UPDATE``) taken by the repositories. psycopg's automatic
  preparation of statements is off (see ``create_engine``).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine
from sqlalchemy.pool import ConnectionPoolEntry

SQLITE_BUSY_TIMEOUT_MS = 30_000
SERVER_ISOLATION_LEVEL = "READ COMMITTED"
"""PostgreSQL's and MariaDB's isolation level for every transaction."""
SQLITE_PAGE_SIZE = 1024
SQLITE_WAL_CHECKPOINT_PAGES = 40_000  # 40 MiB of 1 KiB pages


class _WriteLock:
    """This process's writers of one SQLite file, one at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owner: int | None = None

    def acquire(self) -> bool:
        """Wait for the lock (at most the busy timeout); False if not taken, in which
        case ``BEGIN IMMEDIATE`` meets SQLite's busy handling exactly as without it."""
        me = threading.get_ident()
        if self._owner == me:  # a second write transaction in this thread: as before
            return False
        if not self._lock.acquire(timeout=SQLITE_BUSY_TIMEOUT_MS / 1000):
            return False
        self._owner = me
        return True

    def release(self) -> None:
        self._owner = None
        self._lock.release()


_write_locks: dict[str, _WriteLock] = {}
_write_locks_guard = threading.Lock()


def _write_lock_for(database: str) -> _WriteLock:
    with _write_locks_guard:
        return _write_locks.setdefault(os.path.realpath(database), _WriteLock())


class _SqliteConnection(sqlite3.Connection):
    """A sqlite3 connection that gives the process's write lock back when its write
    transaction ends (commit, rollback or close), after SQLite has ended it."""

    write_lock: _WriteLock | None = None
    holding: bool = False

    def begin(self, mode: str) -> None:
        if mode == "IMMEDIATE" and self.write_lock is not None and not self.holding:
            self.holding = self.write_lock.acquire()
        try:
            self.execute(f"BEGIN {mode}")
        except BaseException:
            self._release()
            raise

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self._release()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self._release()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._release()

    def _release(self) -> None:
        if self.holding and not self._in_transaction():
            self.holding = False
            assert self.write_lock is not None
            self.write_lock.release()

    def _in_transaction(self) -> bool:
        try:
            return self.in_transaction
        except sqlite3.ProgrammingError:  # closed: no transaction left
            return False


def normalise_url(url: str | URL) -> URL:
    """Pick our drivers: psycopg 3 for PostgreSQL, PyMySQL for MySQL/MariaDB."""
    parsed = sa.make_url(url)
    backend, driver = parsed.get_backend_name(), parsed.get_driver_name()
    if backend == "postgresql" and driver in ("psycopg2", "postgresql", ""):
        parsed = parsed.set(drivername="postgresql+psycopg")
    elif backend in ("mysql", "mariadb"):
        parsed = parsed.set(drivername="mysql+pymysql")
        if "charset" not in parsed.query:
            parsed = parsed.update_query_dict({"charset": "utf8mb4"})
    return parsed


def create_engine(url: str | URL, *, pool_size: int = 20, echo: bool = False) -> Engine:
    """Create an engine for ``url`` with the per-backend settings above."""
    parsed = normalise_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed, echo=echo)
    # psycopg prepares a query on its own after five runs, and on every ROLLBACK of a
    # connection holding such statements sends DEALLOCATE ALL, which would also drop
    # the statements the ledger prepares itself (batches.py). So it prepares nothing.
    connect_args = {"prepare_threshold": None} if parsed.get_backend_name() == "postgresql" else {}
    return sa.create_engine(
        parsed,
        isolation_level=SERVER_ISOLATION_LEVEL,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_recycle=1800,
        echo=echo,
        connect_args=connect_args,
    )


def _sqlite_engine(url: URL, *, echo: bool) -> Engine:
    on_disk = bool(url.database) and url.database != ":memory:"
    if on_disk:
        assert url.database is not None
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    write_lock = _write_lock_for(url.database) if on_disk and url.database else None
    connect_args: dict[str, Any] = {
        "check_same_thread": False,
        "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000,
        "factory": _SqliteConnection,
    }
    engine = sa.create_engine(url, echo=echo, connect_args=connect_args)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: sqlite3.Connection, _record: ConnectionPoolEntry) -> None:
        if isinstance(dbapi_conn, _SqliteConnection):
            dbapi_conn.write_lock = write_lock
        # Let SQLAlchemy, not the driver, decide when transactions begin.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA page_size={SQLITE_PAGE_SIZE}")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute(f"PRAGMA wal_autocheckpoint={SQLITE_WAL_CHECKPOINT_PAGES}")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
        driver = conn.connection.driver_connection
        if not isinstance(driver, _SqliteConnection):
            conn.exec_driver_sql(f"BEGIN {mode}")
            return
        # Straight to the driver: a whole SQLAlchemy execution per BEGIN costs more
        # than the statement. Errors are wrapped as SQLAlchemy would have.
        try:
            driver.begin(mode)
        except sqlite3.Error as exc:
            raise sa.exc.OperationalError(f"BEGIN {mode}", None, exc) from exc

    return engine


def read_only(conn: sa.Connection) -> sa.Connection:
    """Mark a connection for reads: on SQLite it begins DEFERRED (no write lock)."""
    return conn.execution_options(sqlite_begin="DEFERRED")


def is_backend(conn_or_engine: sa.Connection | Engine, name: str) -> bool:
    """Whether the dialect is ``name`` ("sqlite", "postgresql", "mysql")."""
    return conn_or_engine.dialect.name == name
