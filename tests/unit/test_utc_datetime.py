"""``UtcDateTime`` on SQLite formats in one step what SQLAlchemy's own two would."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.dialects import sqlite

from comfygate.adapters.db import base
from comfygate.adapters.db.base import UtcDateTime

DIALECT = sqlite.dialect()
OFFSETS = st.timedeltas(min_value=timedelta(hours=-23), max_value=timedelta(hours=23)).map(
    lambda delta: timezone(timedelta(minutes=delta // timedelta(minutes=1)))
)
INSTANTS = st.datetimes(min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31))


def _sqlalchemys_text(value: datetime) -> str:
    """process_bind_param, then SQLite's DATETIME bind processor: the generic path."""
    naive = UtcDateTime().process_bind_param(value, DIALECT)
    processor = sqlite.DATETIME().bind_processor(DIALECT)
    assert processor is not None
    text: str = processor(naive)
    return text


def _ours() -> Callable[[datetime | None], Any]:
    processor = UtcDateTime().dialect_impl(DIALECT).bind_processor(DIALECT)
    assert processor is not None
    return processor


@given(INSTANTS, OFFSETS)
def test_the_text_is_what_sqlalchemy_would_write(instant: datetime, offset: timezone) -> None:
    value = instant.replace(tzinfo=offset)
    assert _ours()(value) == _sqlalchemys_text(value)


def test_whole_seconds_keep_their_microseconds_and_none_stays_none() -> None:
    process = _ours()
    assert process(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2026-01-02 03:04:05.000000"
    assert process(None) is None


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        _ours()(datetime(2026, 1, 2))


@given(st.lists(INSTANTS, min_size=1, max_size=5), st.lists(st.integers(0, 4), max_size=20))
def test_repeated_and_interleaved_values_keep_their_own_text(
    instants: list[datetime], picks: list[int]
) -> None:
    """The text of the last value is remembered: any order of repeats still gets each
    value's own text."""
    values = [instant.replace(tzinfo=UTC) for instant in instants]
    process = _ours()
    for pick in picks:
        value = values[pick % len(values)]
        assert process(value) == _sqlalchemys_text(value)


def _read() -> Callable[[str | None], Any]:
    processor = UtcDateTime().dialect_impl(DIALECT).result_processor(DIALECT, None)
    assert processor is not None
    return processor


def _sqlalchemys_read(text: str) -> datetime:
    """SQLite's DATETIME result processor, then process_result_value: the generic path."""
    processor = sqlite.DATETIME().result_processor(DIALECT, None)
    assert processor is not None
    return UtcDateTime().process_result_value(processor(text), DIALECT)  # type: ignore[return-value]


@given(st.lists(st.tuples(INSTANTS, st.booleans()), max_size=8))
def test_text_reads_back_as_sqlalchemy_would_read_it_written_by_us_or_not(
    cases: list[tuple[datetime, bool]],
) -> None:
    """Instants written lately are read from memory: the same instant, as an aware
    UTC datetime, whether or not this process wrote the text."""
    write, read = _ours(), _read()
    for instant, written in cases:
        value = instant.replace(tzinfo=UTC)
        text = write(value) if written else _sqlalchemys_text(value)
        got = read(text)
        assert got == _sqlalchemys_read(text) == value
        assert got is not None and got.tzinfo is UTC
    assert read(None) is None


def test_the_memory_of_texts_is_bounded() -> None:
    write, read = _ours(), _read()
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for n in range(base._Instants.LIMIT + 10):
        instant = start + timedelta(microseconds=n)
        assert read(write(instant)) == instant
    assert len(base._Instants.by_text) <= base._Instants.LIMIT
