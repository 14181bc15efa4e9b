"""Ids sort in the order one process made them, and never repeat."""

from __future__ import annotations

from comfygate.domain.ids import new_id


def test_ids_are_unique_and_increasing() -> None:
    made = [new_id("txn") for _ in range(5000)]
    assert made == sorted(made)
    assert len(set(made)) == len(made)
    assert all(x.startswith("txn_") and len(x) == 30 for x in made)
