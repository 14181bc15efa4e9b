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
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.compiler import SQLCompiler

_Processor = Callable[[Any], Any] | None
_keys = itertools.count(1)


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
        self._order = compiled.positiontup
        self.param_count = len(self._order if self._order is not None else compiled.bind_names)
        # Per parameter, in the order the driver wants them: the caller's key, whether
        # the caller must give it (else it is a literal of the statement, with this
        # value), and the type's bind processor.
        binds = {
            name: (
                bind.key,
                bind.required,
                bind.effective_value,
                bind.type.dialect_impl(dialect).bind_processor(dialect),
            )
            for bind, name in compiled.bind_names.items()
        }
        self._positional = self._order is not None
        self._binds = [(name, *binds[name]) for name in (self._order or binds)]
        selected: Iterable[sa.ColumnElement[Any]] = getattr(statement, "selected_columns", ())
        results = [
            column.type.dialect_impl(dialect).result_processor(dialect, None) for column in selected
        ]
        self._results = [(i, p) for i, p in enumerate(results) if p is not None]

    def params(self, values: Mapping[str, Any]) -> Sequence[Any] | Mapping[str, Any]:
        """``values`` as the driver wants them: converted, and ordered if positional."""
        converted = []
        for _, key, required, literal, processor in self._binds:
            value = values[key] if required else values.get(key, literal)
            converted.append(value if processor is None or value is None else processor(value))
        if self._positional:
            return converted
        return dict(zip((bind[0] for bind in self._binds), converted, strict=True))

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
