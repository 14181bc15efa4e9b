"""Hypothesis drives random sequences of every ledger operation against a real database.

After every step: postings sum to zero, no balance, lot or hold is negative, no
capture exceeds its hold, the cached balances equal what the postings say, and the
model's expectation of revenue and of held tokens matches the books. Replays of
earlier idempotent requests must change nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    rule,
    run_state_machine_as_test,
)

from comfygate.adapters.db.tables_ledger import holds, lots, postings
from comfygate.bootstrap import Container
from comfygate.domain.errors import HoldNotOpenError, InsufficientBalanceError
from tests.fakes import FakeClock


@dataclass
class ModelHold:
    hold_id: str
    amount: int
    key: str


def make_machine(container: Container, clock: FakeClock) -> type[RuleBasedStateMachine]:
    ledger, store = container.ledger, container.ledger_store

    class LedgerMachine(RuleBasedStateMachine):
        open_holds = Bundle("open_holds")

        def __init__(self) -> None:
            super().__init__()
            self.account = ledger.open_account(name="stateful")
            self.revenue = 0
            self.held: dict[str, int] = {}
            self.counter = 0
            self.done: list[tuple[str, dict[str, Any], Any]] = []

        def key(self) -> str:
            self.counter += 1
            return f"k{self.counter}"

        @rule(
            amount=st.integers(1, 60),
            expires_h=st.sampled_from([None, 1, 48]),
            starts_h=st.sampled_from([None, None, 2]),  # granted ahead of its start
        )
        def grant(self, amount: int, expires_h: int | None, starts_h: int | None) -> None:
            now = clock.now()
            expires_at = None if expires_h is None else now + timedelta(hours=expires_h)
            starts_at = None if starts_h is None else now + timedelta(hours=starts_h)
            if starts_at and expires_at and expires_at <= starts_at:
                return
            kwargs = dict(account_id=self.account, amount=amount, source="promotion",
                          idempotency_key=self.key(), expires_at=expires_at,
                          starts_at=starts_at)  # fmt: skip
            self.done.append(("grant", kwargs, ledger.grant(**kwargs)))

        @rule(target=open_holds, amount=st.integers(0, 70), ttl=st.sampled_from([30, 7200]))
        def hold(self, amount: int, ttl: int) -> ModelHold | None:
            key = self.key()
            kwargs = dict(account_id=self.account, amount=amount, idempotency_key=key, ttl_s=ttl)
            before = container.accounts.balance(account_id=self.account).available
            try:
                receipt = ledger.place_hold(**kwargs)
            except InsufficientBalanceError:
                assert before < amount
                return None
            assert before >= amount  # only from lots spendable now
            self.done.append(("place_hold", kwargs, receipt))
            self.held[receipt.hold_id] = amount
            return ModelHold(receipt.hold_id, amount, key)

        @rule(h=consumes(open_holds), fraction=st.sampled_from([0.0, 0.5, 1.0, None]))
        def capture(self, h: ModelHold | None, fraction: float | None) -> None:
            if h is None:
                return
            amount = None if fraction is None else int(h.amount * fraction)
            kwargs = dict(hold_id=h.hold_id, idempotency_key=h.key, amount=amount)
            try:
                receipt = ledger.capture(**kwargs)
            except HoldNotOpenError:
                self.held.pop(h.hold_id, None)  # expired (released) meanwhile
                return
            assert receipt.captured == (h.amount if amount is None else amount)
            self.revenue += receipt.captured
            self.held.pop(h.hold_id)
            self.done.append(("capture", kwargs, receipt))

        @rule(h=consumes(open_holds))
        def release(self, h: ModelHold | None) -> None:
            if h is None:
                return
            kwargs = dict(hold_id=h.hold_id, idempotency_key=h.key, reason="test")
            try:
                receipt = ledger.release(**kwargs)
            except HoldNotOpenError:
                self.held.pop(h.hold_id, None)
                return
            assert receipt.released == h.amount
            self.held.pop(h.hold_id)
            self.done.append(("release", kwargs, receipt))

        @rule(minutes=st.sampled_from([1, 45, 24 * 60]))
        def time_passes(self, minutes: int) -> None:
            clock.advance(minutes=minutes)

        @rule()
        def expire(self) -> None:
            ledger.expire()
            self.sync_expired_holds()

        @rule(data=st.data())
        def replay(self, data: st.DataObject) -> None:
            if not self.done:
                return
            op, kwargs, first = data.draw(st.sampled_from(self.done))
            before = container.accounts.balance(account_id=self.account)
            again = getattr(ledger, op)(**kwargs)
            assert again.replayed and again.txn_id == first.txn_id
            after = container.accounts.balance(account_id=self.account)
            assert (after.available, after.held) == (before.available, before.held)

        def sync_expired_holds(self) -> None:
            with store.engine.connect() as conn:
                states = dict(conn.execute(sa.select(holds.c.id, holds.c.state)).all())
            for hold_id in list(self.held):
                if states[hold_id] == "expired":
                    self.held.pop(hold_id)

        @invariant()
        def books_balance_and_caches_agree(self) -> None:
            sums = store.posting_sums()
            assert sum(sums.values()) == 0
            report = container.accounts.reconcile()
            assert report.drifts == []

        @invariant()
        def nothing_negative_and_no_overcapture(self) -> None:
            cached = store.balance(self.account)
            assert cached is not None and cached.available >= 0 and cached.held >= 0
            with store.engine.connect() as conn:
                lowest = conn.execute(sa.select(sa.func.min(lots.c.remaining))).scalar()
                over = conn.execute(
                    sa.select(sa.func.count()).where(holds.c.captured > holds.c.amount)
                ).scalar_one()
            assert lowest is None or lowest >= 0
            assert over == 0

        @invariant()
        def no_hold_draws_on_a_lot_before_its_start_or_after_its_end(self) -> None:
            with store.engine.connect() as conn:
                spans = {r.id: r for r in conn.execute(sa.select(lots.c.id, lots.c.starts_at,
                                                                 lots.c.expires_at))}  # fmt: skip
                taken = conn.execute(sa.select(holds.c.created_at, holds.c.allocation)).all()
            for created_at, allocation in taken:
                for lot_id, _tokens in json.loads(allocation):
                    lot = spans[lot_id]
                    assert lot.starts_at is None or lot.starts_at <= created_at
                    assert lot.expires_at is None or created_at < lot.expires_at

        @invariant()
        def model_matches_books(self) -> None:
            self.sync_expired_holds()
            cached = store.balance(self.account)
            assert cached is not None
            assert cached.held == sum(self.held.values())
            with store.engine.connect() as conn:
                revenue = conn.execute(
                    sa.select(sa.func.coalesce(sa.func.sum(postings.c.amount), 0)).where(
                        postings.c.account_id == self.account, postings.c.book == "revenue"
                    )
                ).scalar_one()
            assert revenue == self.revenue

        @invariant()
        def each_lot_shows_what_it_has_left_and_what_is_held_of_it(self) -> None:
            view = container.accounts.balance(account_id=self.account)
            assert sum(lot.held for lot in view.lots) == view.held
            with store.engine.connect() as conn:
                mine = sa.select(lots.c.id, lots.c.remaining).where(
                    lots.c.account_id == self.account
                )
                left = dict(conn.execute(mine).all())
            assert {lot.lot_id: lot.remaining for lot in view.lots} == {
                lot_id: remaining
                for lot_id, remaining in left.items()
                if remaining > 0 or any(lot.lot_id == lot_id and lot.held for lot in view.lots)
            }

    return LedgerMachine


def test_ledger_state_machine(container: Container, clock: FakeClock) -> None:
    backend = container.engine.dialect.name
    examples = 40 if backend == "sqlite" else 8
    machine = make_machine(container, clock)
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=examples,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
