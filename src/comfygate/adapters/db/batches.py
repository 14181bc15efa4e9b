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
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.engine import Dialect

from comfygate.adapters.db.engine import SERVER_ISOLATION_LEVEL
from comfygate.adapters.db.prepared import Prepared

Writes = Sequence[tuple[Prepared, Sequence[Mapping[str, Any]]]]
Queries = Sequence[tuple[Prepared, Mapping[str, Any]]]


class Batches(Protocol):
    def read(self, writes: Writes, queries: Queries) -> list[tuple[Any, ...]]:
        """Run ``writes`` then ``queries``; the rows of the last query (the ones before
        it run for what they do, such as taking a lock)."""
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
    """Statements one by one on a driver cursor, the same one for as long as the
    batches have the connection: every statement's rows are read before the next."""

    def __init__(self, driver: Any, *, sqlite: bool) -> None:
        self._driver = driver
        self._cursor = driver.cursor()
        # SQLite: BEGIN IMMEDIATE, through the connection class that also takes the
        # process's write lock (engine.py). PyMySQL begins implicitly.
        self._opening: Callable[[], None] | None = (
            functools.partial(driver.begin, "IMMEDIATE") if sqlite else None
        )
        self._begin: Callable[[], None] | None = self._opening
        self._committed = False

    def read(self, writes: Writes, queries: Queries) -> list[tuple[Any, ...]]:
        self._send(writes)
        cursor = self._cursor
        for query, values in queries:
            cursor.execute(query.sql, query.params(values))
        return query.rows(cursor)

    def commit(self, writes: Writes) -> None:
        self._send(writes)
        self._driver.commit()
        self._committed = True

    def close(self) -> None:
        committed, self._committed, self._begin = self._committed, False, self._opening
        if not committed:
            self._driver.rollback()

    def release(self) -> None:
        self._cursor.close()

    def _send(self, writes: Writes) -> None:
        if self._begin is not None:
            begin, self._begin = self._begin, None
            begin()
        cursor = self._cursor
        for statement, rows in writes:
            if len(rows) == 1:
                cursor.execute(statement.sql, statement.params(rows[0]))
            else:
                cursor.executemany(statement.sql, [statement.params(row) for row in rows])


class ScriptBatches:
    """Scripts on PostgreSQL's simple protocol, one message per hand-over.

    Every statement is prepared on the server once per connection (``PREPARE``, which
    outlives transactions) and run as ``EXECUTE name(literals...)``: a simple-protocol
    script would otherwise have the server parse and plan each statement every time.
    The literals are rendered here, strings by libpq's own ``PQescapeLiteral``, and the
    script goes to libpq's ``PQexec`` (which waits without holding the GIL); its last
    result is the one a read wants, loaded by psycopg's own loaders. psycopg's cursor
    would spend three times as long per script, binding and walking every result.

    The driver connection runs in autocommit mode while these batches have it, so that
    psycopg sends no ``BEGIN`` of its own (a round trip); the script's ``BEGIN`` names
    the isolation level every engine is configured with, ``close`` rolls back whatever
    the script left open, and ``release`` restores the connection's mode for the pool.
    Prepared statements live in the server session: behind PgBouncer, use session
    pooling (transaction pooling hands each transaction another session).
    """

    def __init__(self, driver: Any, statements: Sequence[Prepared]) -> None:
        import psycopg  # PostgreSQL's driver: only when there is PostgreSQL
        from psycopg import errors, pq
        from psycopg.adapt import Transformer

        assert isinstance(driver, psycopg.Connection)
        self._driver = driver
        driver.autocommit = True
        self._pgconn = driver.pgconn
        self._encoding = driver.info.encoding
        self._escape = pq.Escaping(driver.pgconn).escape_literal
        self._loader = Transformer.from_context(driver)
        self._ok = (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK)
        self._error = errors.error_from_result
        self._idle = pq.TransactionStatus.IDLE
        self._opening = f"BEGIN ISOLATION LEVEL {SERVER_ISOLATION_LEVEL}".encode()
        self._begin: bytes | None = self._opening
        self._statements = statements
        self._heads = {s.key: f"EXECUTE {_name(s)}".encode() for s in statements}
        self._not_prepared = errors.InvalidSqlStatementName
        self._data_error = psycopg.DataError
        try:
            self._prepare(statements)
        except BaseException:
            self.release()  # the pool must not get the connection in autocommit mode
            raise

    def read(self, writes: Writes, queries: Queries) -> list[tuple[Any, ...]]:
        script = self._script(writes)
        for query, values in queries:
            script.append(self._execute(query, query.params(values)))
        result = self._run(script)
        loader = self._loader
        loader.set_pgresult(result)
        rows = loader.load_rows(0, result.ntuples, tuple)
        loader.set_pgresult(None)
        return query.convert(rows)

    def commit(self, writes: Writes) -> None:
        script = self._script(writes)
        script.append(b"COMMIT")
        self._run(script)

    def close(self) -> None:
        self._begin = self._opening
        if self._driver.info.transaction_status != self._idle:  # left open by an error
            self._driver.rollback()

    def release(self) -> None:
        self.close()
        self._driver.autocommit = False

    def _run(self, script: list[bytes]) -> Any:
        """Send ``script``; the result of its last statement. If it opens the
        transaction and a statement it runs is no longer prepared (someone sent
        ``DEALLOCATE ALL`` on this session), prepare them again and resend it: nothing
        has happened yet. Later in a transaction that cannot be, as only this unit of
        work uses the connection meanwhile."""
        try:
            return self._exec(b"; ".join(script))
        except self._not_prepared:
            _prepared_on.pop(self._driver, None)
            if script[0] != self._opening:
                raise
            self._driver.rollback()
            self._prepare(self._statements)
            return self._exec(b"; ".join(script))

    def _exec(self, query: bytes) -> Any:
        result = self._pgconn.exec_(query)
        if result.status not in self._ok:  # an error, or a response libpq could not read
            raise self._error(result, self._encoding)
        return result

    def _prepare(self, statements: Sequence[Prepared]) -> None:
        """Prepare on this connection whichever of ``statements`` it has not yet."""
        known = _prepared_on.setdefault(self._driver, set())
        if all(s.key in known for s in statements):
            return
        cursor = self._driver.cursor()
        cursor.execute("SELECT name FROM pg_prepared_statements")
        there = {name for (name,) in cursor.fetchall()}
        missing = [s for s in statements if _name(s) not in there]
        if missing:  # no parameters: the SQL goes as it is, ``%`` included
            cursor.execute("; ".join(f"PREPARE {_name(s)} AS {s.sql}" for s in missing))
        known.update(s.key for s in statements)

    def _script(self, writes: Writes) -> list[bytes]:
        """The statements that start a script: ``BEGIN`` if it is the first, then the
        queued writes."""
        script = [] if self._begin is None else [self._begin]
        self._begin = None
        for statement, rows in writes:
            for row in rows:
                script.append(self._execute(statement, statement.params(row)))
        return script

    def _execute(self, statement: Prepared, params: Sequence[Any] | Mapping[str, Any]) -> bytes:
        head = self._heads[statement.key]
        if not params:
            return head
        return b"%b(%b)" % (head, b", ".join([self._literal(value) for value in params]))

    def _literal(self, value: Any) -> bytes:
        """``value`` as a literal of SQL: the types bind processors leave, quickly;
        anything else as psycopg renders it."""
        kind = type(value)
        if kind is str:
            if "\x00" in value:  # libpq would cut the script there
                raise self._data_error("PostgreSQL text fields cannot contain NUL (0x00) bytes")
            return self._escape(value.encode(self._encoding))
        if kind is int:
            return b"%d" % value
        if value is None:
            return b"NULL"
        if kind is datetime and value.tzinfo is None:  # UtcDateTime's naive UTC
            return b"'%b'::timestamp" % value.isoformat().encode()
        from psycopg import sql

        return sql.Literal(value).as_bytes(self._driver)


_prepared_on: weakref.WeakKeyDictionary[Any, set[int]] = weakref.WeakKeyDictionary()
"""Per psycopg connection, the keys of the statements prepared on its session."""


def _name(statement: Prepared) -> str:
    return f"comfygate_{statement.key}"
