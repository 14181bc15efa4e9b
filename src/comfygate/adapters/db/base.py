"""The one SQLAlchemy ``MetaData`` every table module registers on.

Column types that must mean the same on SQLite, PostgreSQL and MariaDB live here:
tokens are BIGINT everywhere, times are stored as timezone-aware UTC.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING)

Tokens = sa.BigInteger
"""Token amounts: integers, 64-bit, on every backend."""

IDEMPOTENCY_KEY_COLLATION = "utf8mb4_nopad_bin"
IdempotencyKey = sa.String(255).with_variant(
    mysql.VARCHAR(255, charset="utf8mb4", collation=IDEMPOTENCY_KEY_COLLATION), "mysql"
)
"""A client's idempotency key: compared byte for byte on every backend. MariaDB's
default collation would take ``Job-A`` and ``job-a``, or ``k`` and ``k ``, for one key."""


def idempotency_key_collation_ddl(table: str, collation: str) -> str:
    """MariaDB's statement giving ``table.idempotency_key`` the ``collation`` (for
    the migrations that make it byte for byte, and their downgrades)."""
    return (
        f"ALTER TABLE {table} MODIFY idempotency_key VARCHAR(255) "
        f"CHARACTER SET utf8mb4 COLLATE {collation} NULL"
    )


def refuse_colliding_keys(
    conn: sa.Connection, table: str, collation: str, *, scope: Sequence[str] = ()
) -> None:
    """Refuse to give ``table.idempotency_key`` back a ``collation`` (MariaDB) under
    which two of its keys are one (within the ``scope`` columns its unique index
    also has): the index would fail halfway through a downgrade, and the older schema
    would replay one key's request for the other."""
    rows = sa.table(table, sa.column("idempotency_key"), *map(sa.column, scope))
    key = rows.c.idempotency_key
    same = conn.execute(
        sa.select(sa.func.min(key))
        .where(key.is_not(None))
        .group_by(*(rows.c[name] for name in scope), sa.collate(key, collation))
        .having(sa.func.count() > 1)
        .limit(1)
    ).scalar()
    if same is not None:
        raise RuntimeError(
            f"cannot downgrade: {table} has idempotency keys that differ only in case, "
            f"accents or trailing spaces (such as {same!r}), which {collation} takes "
            "for one key"
        )


Id = sa.String(40)
"""Client-generated ids (``comfygate.domain.ids.new_id``)."""


def partial_index(name: str, *columns: str, where: str) -> sa.Index:
    """An index of the rows that match ``where`` on SQLite and PostgreSQL; MariaDB has
    no partial indexes and indexes every row."""
    clause = sa.text(where)
    return sa.Index(name, *columns, sqlite_where=clause, postgresql_where=clause)


def newest_first(
    query: sa.Select[Any],
    id_column: sa.ColumnElement[str],
    keys: Sequence[tuple[sa.ColumnElement[Any], Any]],
    *,
    before: str | None,
    limit: int,
    dialect: Dialect,
) -> sa.Select[Any]:
    """A page of ``query``: its rows whose ``keys`` columns have those values, newest
    (greatest id) first, older than the cursor ``before``, as a range of an index on
    (the keys' columns..., id) read backwards.

    SQLite is given the keys as equalities. PostgreSQL and MariaDB are given each as a
    range of one value, and the order by each too, so that only that index gives the
    order: with equalities, MariaDB read the index by the keys alone and filtered on
    the id (every newer row, for a page deep in the history) or walked the primary
    key; PostgreSQL, for an account quiet since others wrote much, walked the primary
    key (or another index ending with the id) back past all their rows.
    """
    order: list[sa.ColumnElement[Any]] = []
    for column, value in keys:
        if dialect.name == "sqlite":
            query = query.where(column == value)
        else:
            query = query.where(column >= value, column <= value)
            order.append(column.desc())
    if before is not None:
        query = query.where(id_column < before)
    return query.order_by(*order, id_column.desc()).limit(limit)


class UtcDateTime(TypeDecorator[datetime]):
    """A UTC instant with microseconds on every backend; naive values are refused.

    Stored naive (in UTC) so SQLite, PostgreSQL and MariaDB compare them the same way.
    """

    impl = sa.DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "mysql":
            from sqlalchemy.dialects.mysql import DATETIME

            return dialect.type_descriptor(DATETIME(fsp=6))
        return dialect.type_descriptor(sa.DateTime())

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; use UTC-aware times")
        return value.astimezone(UTC).replace(tzinfo=None)

    def bind_processor(self, dialect: Dialect) -> Callable[[datetime | None], Any] | None:
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)

        # SQLite stores the text SQLAlchemy's DATETIME writes, "YYYY-MM-DD HH:MM:SS.ffffff":
        # in one step here, instead of process_bind_param and then that type's own
        # formatting (a dict and a % per value). A test holds the two to the same text.
        def process(value: datetime | None) -> str | None:
            if value is None:
                return None
            if value.tzinfo is not UTC:
                if value.tzinfo is None:
                    raise ValueError("naive datetime given to the database; use UTC-aware times")
                value = value.astimezone(UTC)
            return _sqlite_text(value)

        return process

    def result_processor(
        self, dialect: Dialect, coltype: object
    ) -> Callable[[Any], datetime | None] | None:
        parse = super().result_processor(dialect, coltype)
        if dialect.name != "sqlite" or parse is None:
            return parse

        # Parsing SQLite's text costs more than formatting it, and the ledger reads back
        # instants it has just written (a hold's times at its capture) or reads often
        # (a lot's): those come from ``_Instants``.
        def process(value: str | None) -> datetime | None:
            if value is None:
                return None
            instant = _Instants.by_text.get(value)
            if instant is None:
                instant = parse(value)
                _Instants.remember(value, instant)
            return instant

        return process

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC)


_TWO_DIGITS = [f"{n:02d}" for n in range(100)]


class _Instants:
    """SQLite's text of instants written or read lately, and the instants."""

    LIMIT = 4096
    by_text: ClassVar[dict[str, datetime | None]] = {}

    @classmethod
    def remember(cls, text: str, instant: datetime | None) -> None:
        if len(cls.by_text) >= cls.LIMIT:
            cls.by_text = {}
        cls.by_text[text] = instant


class _LastText:
    """The text of the instant formatted last, shared by every statement: a movement
    writes the same ``now`` into several rows (a journal row, a hold, a settlement)."""

    value: tuple[datetime | None, str] = (None, "")


def _sqlite_text(value: datetime) -> str:
    """SQLite's DATETIME text of a UTC ``value``, from a table of two-digit strings:
    ``isoformat`` spends most of its time in printf."""
    last, text = _LastText.value
    if value is last:
        return text
    two = _TWO_DIGITS
    text = (
        f"{value.year:04d}-{two[value.month]}-{two[value.day]} "
        f"{two[value.hour]}:{two[value.minute]}:{two[value.second]}.{value.microsecond:06d}"
    )
    _LastText.value = (value, text)
    if type(value) is datetime:  # read back as what was written, not a subclass
        _Instants.remember(text, value)
    return text
