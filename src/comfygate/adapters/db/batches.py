"""Sending a transaction's statements to the driver in as few trips as it allows.

A unit of work queues its writes and hands them over, with the reads that must see
them, at the next read or at the commit (``Batches.read`` / ``Batches.commit``):

- SQLite and MariaDB (``SequentialBatches``): one statement at a time on the driver's
  cursor. SQLite is in process; MariaDB pays a round trip per statement.
- PostgreSQL (``ScriptBatches``): each hand-over is one script of ``EXECUTE``s of
  server-prepared statements, bound on the client and sent in a single simple-protocol
  message: the first read opens the transaction (``BEGIN``), and the commit travels
  with the last writes. A hold or a capture is then two round trips. psycopg's
  pipeline mode would do the same over the extended protocol, but it spends ~45 µs of
  Python per statement and polls the socket while it waits; a script costs one
  ``execute``.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from sqlalchemy.engine import Dialect

from comfygate.adapters.db.engine import SERVER_ISOLATION_LEVEL
from comfygate.adapters.db.prepared import Prepared

Writes = Sequence[tuple[Prepared, Sequence[Mapping[str, Any]]]]
Queries = Sequence[tuple[Prepared, Mapping[str, Any]]]


class Batches(Protocol):
    def read(self, writes: Writes, queries: Queries) -> list[list[tuple[Any, ...]]]:
        """Run ``writes`` then ``queries``; the rows of each query."""
        ...

    def commit(self, writes: Writes) -> None:
        """Run ``writes`` and commit."""
        ...

    def close(self) -> None:
        """End the transaction (rolled back unless committed); the next hand-over
        begins another on the same connection."""
        ...

    def release(self) -> None:
        """Leave the connection as the pool gave it; these batches are done with."""
        ...


def script_dialect(dialect: Dialect) -> Dialect:
    """The dialect to compile statements with for ``batches_for``'s batches.

    PostgreSQL's statements are prepared on the server (``PREPARE ... AS``), which
    numbers its parameters: ``$1``, ``$2``...
    """
    if dialect.name == "postgresql":
        return type(dialect)(paramstyle="numeric_dollar")  # type: ignore[call-arg]
    return dialect


def batches_for(driver: Any, dialect: Dialect, statements: Sequence[Prepared]) -> Batches:
    """Batches on the DBAPI connection ``driver`` (straight from the pool), for
    ``statements`` (all compiled by ``script_dialect``), for as many transactions
    in turn as its owner likes. The first hand-over of each begins it."""
    if dialect.name == "postgresql":
        return ScriptBatches(driver, statements)
    return SequentialBatches(driver, sqlite=dialect.name == "sqlite")


class SequentialBatches:
    """Statements one by one on the driver's cursor."""

    def __init__(self, driver: Any, *, sqlite: bool) -> None:
        self._driver = driver
        # SQLite: BEGIN IMMEDIATE, through the connection class that also takes the
        # process's write lock (engine.py). PyMySQL begins implicitly.
        self._opening: Callable[[], None] | None = (
            functools.partial(driver.begin, "IMMEDIATE") if sqlite else None
        )
        self._begin: Callable[[], None] | None = self._opening
        self._committed = False

    def read(self, writes: Writes, queries: Queries) -> list[list[tuple[Any, ...]]]:
        self._send(writes)
        results = []
        for query, values in queries:
            cursor = self._driver.cursor()
            cursor.execute(query.sql, query.params(values))
            results.append(query.rows(cursor))
        return results

    def commit(self, writes: Writes) -> None:
        self._send(writes)
        self._driver.commit()
        self._committed = True

    def close(self) -> None:
        committed, self._committed, self._begin = self._committed, False, self._opening
        if not committed:
            self._driver.rollback()

    def release(self) -> None:
        pass

    def _send(self, writes: Writes) -> None:
        if self._begin is not None:
            begin, self._begin = self._begin, None
            begin()
        cursor = self._driver.cursor()
        for statement, rows in writes:
            if len(rows) == 1:
                cursor.execute(statement.sql, statement.params(rows[0]))
            else:
                cursor.executemany(statement.sql, [statement.params(row) for row in rows])


class ScriptBatches:
    """Client-bound scripts on psycopg, one message per hand-over.

    Every statement is prepared on the server once per connection (``PREPARE``, which
    outlives transactions) and run as ``EXECUTE name(literals...)``: a simple-protocol
    script would otherwise have the server parse and plan each statement every time.
    The driver connection runs in autocommit mode while these batches have it, so that
    psycopg sends no ``BEGIN`` of its own (a round trip); the script's ``BEGIN`` names
    the isolation level every engine is configured with, ``close`` rolls back whatever
    the script left open, and ``release`` restores the connection's mode for the pool.
    Prepared statements live in the server session: behind PgBouncer, use session
    pooling (transaction pooling hands each transaction another session).
    """

    def __init__(self, driver: Any, statements: Sequence[Prepared]) -> None:
        import psycopg  # PostgreSQL's driver: only when there is PostgreSQL
        from psycopg.pq import TransactionStatus

        assert isinstance(driver, psycopg.Connection)
        self._driver = driver
        driver.autocommit = True
        self._cursor = psycopg.ClientCursor(driver)
        self._idle = TransactionStatus.IDLE
        self._opening = f"BEGIN ISOLATION LEVEL {SERVER_ISOLATION_LEVEL}"
        self._begin: str | None = self._opening
        self._statements = statements
        self._not_prepared = psycopg.errors.InvalidSqlStatementName
        try:
            self._prepare(statements)
        except BaseException:
            self.release()  # the pool must not get the connection in autocommit mode
            raise

    def read(self, writes: Writes, queries: Queries) -> list[list[tuple[Any, ...]]]:
        script, params = self._script(writes)
        for query, values in queries:
            script.append(_execute(query))
            params.extend(query.params(values))
        cursor = self._cursor
        self._run(script, params)
        for _ in range(len(script) - len(queries)):  # BEGIN and writes: no rows
            cursor.nextset()
        results = []
        for query, _ in queries:
            results.append(query.rows(cursor))
            cursor.nextset()
        return results

    def commit(self, writes: Writes) -> None:
        script, params = self._script(writes)
        self._run([*script, "COMMIT"], params)

    def close(self) -> None:
        self._begin = self._opening
        if self._driver.info.transaction_status != self._idle:  # left open by an error
            self._driver.rollback()

    def release(self) -> None:
        self.close()
        self._driver.autocommit = False

    def _run(self, script: list[str], params: list[Any]) -> None:
        """Send ``script``. If it opens the transaction and a statement it runs is no
        longer prepared (someone sent ``DEALLOCATE ALL`` on this session), prepare
        them again and resend it: nothing has happened yet. Later in a transaction
        that cannot be, as only this unit of work uses the connection meanwhile."""
        try:
            self._cursor.execute("; ".join(script), params)
        except self._not_prepared:
            _prepared_on.pop(self._driver, None)
            if script[0] != self._opening:
                raise
            self._driver.rollback()
            self._prepare(self._statements)
            self._cursor.execute("; ".join(script), params)

    def _prepare(self, statements: Sequence[Prepared]) -> None:
        """Prepare on this connection whichever of ``statements`` it has not yet."""
        known = _prepared_on.setdefault(self._driver, set())
        if all(s.key in known for s in statements):
            return
        self._cursor.execute("SELECT name FROM pg_prepared_statements")
        there = {name for (name,) in self._cursor.fetchall()}
        missing = [s for s in statements if _name(s) not in there]
        if missing:  # no parameters: the SQL goes as it is, ``%`` included
            self._cursor.execute("; ".join(f"PREPARE {_name(s)} AS {s.sql}" for s in missing))
        known.update(s.key for s in statements)

    def _script(self, writes: Writes) -> tuple[list[str], list[Any]]:
        """The statements (and their parameters, in order) that start a script."""
        script = [] if self._begin is None else [self._begin]
        self._begin = None
        params: list[Any] = []
        for statement, rows in writes:
            execute = _execute(statement)
            for row in rows:
                script.append(execute)
                params.extend(statement.params(row))
        return script, params


_prepared_on: weakref.WeakKeyDictionary[Any, set[int]] = weakref.WeakKeyDictionary()
"""Per psycopg connection, the keys of the statements prepared on its session."""


def _name(statement: Prepared) -> str:
    return f"comfygate_{statement.key}"


def _execute(statement: Prepared) -> str:
    args = ", ".join(["%s"] * statement.param_count)
    return f"EXECUTE {_name(statement)}({args})" if args else f"EXECUTE {_name(statement)}"
