"""Statements compiled once per dialect and run straight on the driver's cursor.

A ``conn.execute`` of an already compiled SQLAlchemy statement still costs about
15 µs of Python (execution context, events, result set-up); the driver's own
``cursor.execute`` costs about 1.5 µs. The ledger's hot path runs a handful of
statements per movement, so it uses ``Prepared`` instead, without giving up what
SQLAlchemy gets right: the SQL text is the dialect's compilation of the Core
statement, every parameter goes through its column type's bind processor and every
result value through the result processor, so what is written and read back is
exactly what ``conn.execute`` would have written and read.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.compiler import SQLCompiler

_keys = itertools.count(1)


def _getter(keys: Sequence[str]) -> Callable[[Mapping[str, Any]], Sequence[Any]]:
    """A function of a mapping: the values of ``keys``, in order, as a tuple."""
    if len(keys) == 1:
        (key,) = keys
        return lambda values: (values[key],)
    return operator.itemgetter(*keys) if keys else lambda _values: ()


class Prepared:
    """One statement, compiled for one dialect."""

    def __init__(
        self, statement: sa.ClauseElement, dialect: Dialect, *, columns: Sequence[str] = ()
    ) -> None:
        # ``columns`` names the SET / VALUES columns of an INSERT or UPDATE that has none.
        compiled = statement.compile(dialect=dialect, column_keys=list(columns) or None)
        assert isinstance(compiled, SQLCompiler)
        self.sql = compiled.string
        self.key = next(_keys)
        """Unique in this process: names the statement where a server keeps it prepared."""
        # Positional paramstyles list the names in placeholder order (once per
        # placeholder for SQLite's qmark, once per number for numeric ones).
        order = compiled.positiontup
        # Per parameter, in the order the driver wants them: the caller's key, and the
        # type's bind processor. A parameter the caller need not give is a literal of
        # the statement (the 0 of ``remaining > 0``): its value is the default.
        binds = {
            name: (bind.key, bind.type.dialect_impl(dialect).bind_processor(dialect))
            for bind, name in compiled.bind_names.items()
        }
        self._defaults = {
            bind.key: bind.effective_value for bind in compiled.bind_names if not bind.required
        }
        names = list(order or binds)
        self._names = None if order is not None else names
        # The values, in order, in one C call; then the few that need converting.
        self._get = _getter([binds[name][0] for name in names])
        self._processors = [
            (i, processor) for i, (_, processor) in enumerate(binds[n] for n in names) if processor
        ]
        selected: Iterable[sa.ColumnElement[Any]] = getattr(statement, "selected_columns", ())
        results = [
            column.type.dialect_impl(dialect).result_processor(dialect, None) for column in selected
        ]
        self._results = [(i, p) for i, p in enumerate(results) if p is not None]

    def params(self, values: Mapping[str, Any]) -> Sequence[Any] | Mapping[str, Any]:
        """``values`` as the driver wants them: converted, and ordered if positional."""
        if self._defaults:
            values = {**self._defaults, **values}
        converted: Sequence[Any] = self._get(values)
        if self._processors:
            converted = list(converted)
            for i, processor in self._processors:
                if converted[i] is not None:
                    converted[i] = processor(converted[i])
        if self._names is None:
            return converted
        return dict(zip(self._names, converted, strict=True))

    def rows(self, cursor: Any) -> list[tuple[Any, ...]]:
        """Fetch the cursor's rows, each value through its column type."""
        return self.convert(cursor.fetchall())

    def convert(self, rows: Sequence[Sequence[Any]]) -> list[tuple[Any, ...]]:
        """The driver's ``rows`` of this statement, each value through its column type."""
        if not self._results:
            return [tuple(row) for row in rows]
        converted = []
        for row in rows:
            values = list(row)
            for i, processor in self._results:
                if values[i] is not None:
                    values[i] = processor(values[i])
            converted.append(tuple(values))
        return converted
