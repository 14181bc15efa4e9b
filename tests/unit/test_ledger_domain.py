"""The ledger's pure core: burn order, balanced movements, settlement splits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from comfygate.domain import ledger as dl
from comfygate.domain.errors import CaptureExceedsHoldError, InsufficientBalanceError

NOW = datetime(2026, 11, 27, tzinfo=UTC)


def lot(
    lot_id: str, remaining: int, *, days: int | None, priority: int = 0, age_h: int = 0
) -> dl.Lot:
    expires = None if days is None else NOW + timedelta(days=days)
    created = NOW - timedelta(hours=age_h)
    return dl.Lot(lot_id, "acct", remaining, remaining, "promotion", expires, priority, created)


def test_burns_the_lot_expiring_first_then_priority_then_age() -> None:
    lots = [
        lot("never", 100, days=None),
        lot("late", 100, days=30),
        lot("soon", 5, days=1),
        lot("soon-low-priority", 5, days=1, priority=5),
        lot("soon-older", 5, days=1, age_h=3),
    ]
    taken = dl.allocate(lots, 20, NOW)
    assert taken == (("soon-older", 5), ("soon", 5), ("soon-low-priority", 5), ("late", 5))


def test_expired_and_empty_lots_are_not_spent() -> None:
    lots = [lot("gone", 50, days=-1), lot("empty", 0, days=3), lot("ok", 10, days=3)]
    with pytest.raises(InsufficientBalanceError) as err:
        dl.allocate(lots, 11, NOW)
    assert (err.value.available, err.value.required) == (10, 11)
    assert dl.allocate(lots, 10, NOW) == (("ok", 10),)


def test_a_lot_granted_ahead_is_spent_only_from_its_start() -> None:
    ahead = lot("next-month", 1000, days=40)._replace(starts_at=NOW + timedelta(days=3))
    lots = [lot("this-month", 10, days=3), ahead]
    with pytest.raises(InsufficientBalanceError) as err:
        dl.allocate(lots, 11, NOW)
    assert err.value.available == 10
    assert [x.id for x in dl.spendable(lots, NOW)] == ["this-month"]
    start = NOW + timedelta(days=3)  # the first instant it is spendable
    assert dl.allocate(lots, 11, start) == (("next-month", 11),)  # ("this-month" expired)
    assert not ahead.has_started(start - timedelta(microseconds=1))
    assert ahead.has_started(start) and ahead.is_spendable(start)


def test_zero_hold_takes_nothing() -> None:
    assert dl.allocate([], 0, NOW) == ()
    movement = dl.hold_movement(account_id="acct", hold_id="h", allocation=())
    assert movement.postings == ()


def test_unbalanced_movement_is_refused() -> None:
    with pytest.raises(ValueError, match="unbalanced"):
        dl.Movement(dl.TxnKind.GRANT, "acct", (dl.Posting(dl.Book.AVAILABLE, "acct", 5),))


def hold(allocation: tuple[tuple[str, int], ...]) -> dl.Hold:
    amount = sum(a for _, a in allocation)
    return dl.Hold("h", "acct", amount, amount, dl.HoldState.OPEN, 0, NOW, NOW, allocation)


def test_partial_capture_charges_first_lots_first_and_returns_the_rest() -> None:
    movement = dl.settle_movement(hold((("a", 4), ("b", 6))), capture=7, kind=dl.TxnKind.CAPTURE)
    assert movement.book_delta(dl.Book.REVENUE) == 7
    assert movement.book_delta(dl.Book.HELD) == -10
    assert movement.book_delta(dl.Book.AVAILABLE) == 3
    assert dict(movement.lot_deltas) == {"b": 3}


def test_capture_cannot_exceed_the_hold() -> None:
    with pytest.raises(CaptureExceedsHoldError):
        dl.settle_movement(hold((("a", 4),)), capture=5, kind=dl.TxnKind.CAPTURE)


def test_expiry_writes_off_the_remainder() -> None:
    movement = dl.expire_lot_movement(lot("x", 30, days=-1))
    assert movement.book_delta(dl.Book.EXPIRED) == 30
    assert movement.lot_deltas == {"x": -30}


amounts = st.lists(st.integers(min_value=1, max_value=500), min_size=1, max_size=6)


@given(remainders=amounts, want=st.integers(min_value=0, max_value=3000), capture=st.data())
def test_every_movement_balances_and_conserves_tokens(
    remainders: list[int], want: int, capture: st.DataObject
) -> None:
    lots = [lot(f"l{i}", r, days=i + 1) for i, r in enumerate(remainders)]
    if want > sum(remainders):
        with pytest.raises(InsufficientBalanceError):
            dl.allocate(lots, want, NOW)
        return
    allocation = dl.allocate(lots, want, NOW)
    assert sum(a for _, a in allocation) == want
    by_lot = {x.id: x.remaining for x in lots}
    assert all(0 < a <= by_lot[lot_id] for lot_id, a in allocation)
    h = hold(allocation)
    charged = capture.draw(st.integers(min_value=0, max_value=want))
    settle = dl.settle_movement(h, capture=charged, kind=dl.TxnKind.CAPTURE)
    assert sum(p.amount for p in settle.postings) == 0
    assert settle.book_delta(dl.Book.REVENUE) == charged
    assert sum(settle.lot_deltas.values()) == want - charged
