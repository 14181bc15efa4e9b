"""Ids sort in the order one process made them, and never repeat."""

from __future__ import annotations

import time

from hypothesis import given
from hypothesis import strategies as st

from comfygate.domain import ids
from comfygate.domain.ids import new_id


def test_ids_are_unique_and_increasing() -> None:
    made = [new_id("txn") for _ in range(5000)]
    assert made == sorted(made)
    assert len(set(made)) == len(made)
    assert all(x.startswith("txn_") and len(x) == 30 for x in made)


def test_an_id_is_its_millisecond_then_a_counter_that_counts_up_within_it() -> None:
    before = time.time_ns() // 1_000_000
    first, second = new_id("hold"), new_id("hold")
    after = time.time_ns() // 1_000_000
    t1, r1 = _decode(first.removeprefix("hold_"))
    t2, r2 = _decode(second.removeprefix("hold_"))
    assert before <= t1 <= t2 <= after
    assert t2 > t1 or r2 == r1 + 1


@given(st.integers(min_value=0, max_value=(1 << 80) - 1))
def test_the_random_digits_are_the_general_encoding_unrolled(value: int) -> None:
    assert ids._random_digits(value) == ids._b32(value, 16)
    assert _decode("0" * 10 + ids._random_digits(value)) == (0, value)


def _decode(digits: str) -> tuple[int, int]:
    """(millisecond, random part) of an id's 26 digits."""
    value = 0
    for digit in digits:
        value = value * 32 + ids._ALPHABET.index(digit)
    return value >> 80, value & ((1 << 80) - 1)
