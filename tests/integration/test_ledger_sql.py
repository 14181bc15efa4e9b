"""The ledger on SQLite, PostgreSQL and MariaDB: every movement, replay and expiry."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from comfygate import bootstrap
from comfygate.adapters.db.sql_ledger_uow import LedgerSql
from comfygate.adapters.db.tables_ledger import balances, holds, ledger_transactions, lots
from comfygate.bootstrap import Container
from comfygate.config import Settings
from comfygate.domain.errors import (
    AccountNotFoundError,
    CaptureExceedsHoldError,
    HoldNotFoundError,
    HoldNotOpenError,
    IdempotencyConflictError,
    InsufficientBalanceError,
    InvalidInputError,
)
from tests.fakes import FakeClock
from tests.integration.query_costs import SqliteSteps, rows_touched


def balance(c: Container, account_id: str) -> tuple[int, int]:
    view = c.accounts.balance(account_id=account_id)
    return view.available, view.held


def assert_consistent(c: Container) -> None:
    report = c.accounts.reconcile()
    assert report.drifts == []
    assert report.ok


def test_seed_example_hold_and_capture(container: Container) -> None:
    c = container
    acct = c.ledger.open_account(name="seed")
    c.ledger.grant(account_id=acct, amount=50, source="promotion", idempotency_key="g1")
    hold = c.ledger.place_hold(account_id=acct, amount=11, idempotency_key="job-1")
    assert balance(c, acct) == (39, 11)
    settled = c.ledger.capture(hold_id=hold.hold_id, idempotency_key="job-1")
    assert (settled.captured, settled.released, settled.state) == (11, 0, "captured")
    assert balance(c, acct) == (39, 0)
    assert_consistent(c)


def test_partial_capture_returns_the_rest_and_release_returns_all(container: Container) -> None:
    c = container
    acct = c.ledger.open_account(name="a")
    c.ledger.grant(account_id=acct, amount=100, source="topup", idempotency_key="g")
    h1 = c.ledger.place_hold(account_id=acct, amount=30, idempotency_key="h1")
    h2 = c.ledger.place_hold(account_id=acct, amount=20, idempotency_key="h2")
    assert balance(c, acct) == (50, 50)
    c.ledger.capture(hold_id=h1.hold_id, amount=12, idempotency_key="c1")
    c.ledger.release(hold_id=h2.hold_id, idempotency_key="r2", reason="worker failed")
    assert balance(c, acct) == (88, 0)
    with pytest.raises(HoldNotOpenError):
        c.ledger.capture(hold_id=h2.hold_id, idempotency_key="late")
    with pytest.raises(HoldNotFoundError):
        c.ledger.capture(hold_id="hold_missing", idempotency_key="x")
    h3 = c.ledger.place_hold(account_id=acct, amount=5, idempotency_key="h3")
    with pytest.raises(CaptureExceedsHoldError):
        c.ledger.capture(hold_id=h3.hold_id, amount=6, idempotency_key="c3")
    assert_consistent(c)


def test_insufficient_balance_moves_nothing(container: Container) -> None:
    c = container
    acct = c.ledger.open_account(name="poor")
    c.ledger.grant(account_id=acct, amount=10, source="promotion", idempotency_key="g")
    with pytest.raises(InsufficientBalanceError) as err:
        c.ledger.place_hold(account_id=acct, amount=11, idempotency_key="h")
    assert (err.value.available, err.value.required) == (10, 11)
    assert balance(c, acct) == (10, 0)
    assert [line.kind for line in c.accounts.statement(account_id=acct)] == ["grant"]


def test_bad_arguments_are_refused(container: Container) -> None:
    c = container
    acct = c.ledger.open_account(name="x")
    with pytest.raises(InvalidInputError):
        c.ledger.grant(account_id=acct, amount=0, source="promotion", idempotency_key="g")
    with pytest.raises(InvalidInputError):
        c.ledger.grant(account_id=acct, amount=5, source="gift", idempotency_key="g")
    with pytest.raises(InvalidInputError):
        c.ledger.place_hold(account_id=acct, amount=-1, idempotency_key="h")
    with pytest.raises(AccountNotFoundError):
        c.ledger.grant(account_id="acct_nobody", amount=5, source="promotion", idempotency_key="g")
    assert c.accounts.statement(account_id=acct) == []


def test_replays_return_the_first_answer_and_move_nothing(container: Container) -> None:
    c = container
    acct = c.ledger.open_account(name="r")
    g1 = c.ledger.grant(account_id=acct, amount=40, source="promotion", idempotency_key="g")
    g2 = c.ledger.grant(account_id=acct, amount=40, source="promotion", idempotency_key="g")
    assert (g2.replayed, g2.lot_id, g2.txn_id) == (True, g1.lot_id, g1.txn_id)
    h1 = c.ledger.place_hold(account_id=acct, amount=15, idempotency_key="job")
    h2 = c.ledger.place_hold(account_id=acct, amount=15, idempotency_key="job")
    assert h2.replayed and h2.hold_id == h1.hold_id
    s1 = c.ledger.capture(hold_id=h1.hold_id, idempotency_key="job")
    s2 = c.ledger.capture(hold_id=h1.hold_id, idempotency_key="job")
    assert s2.replayed and s2.txn_id == s1.txn_id
    assert balance(c, acct) == (25, 0)
    with pytest.raises(IdempotencyConflictError):
        c.ledger.place_hold(account_id=acct, amount=16, idempotency_key="job")
    with pytest.raises(IdempotencyConflictError):
        c.ledger.grant(account_id=acct, amount=41, source="promotion", idempotency_key="g")
    # Keys are per account: another account may use the same key.
    other = c.ledger.open_account(name="o")
    c.ledger.grant(account_id=other, amount=40, source="promotion", idempotency_key="g")
    assert balance(c, other) == (40, 0)
    assert_consistent(c)


def test_keys_first_used_before_the_request_hash_changed_still_replay(
    container: Container, clock: FakeClock
) -> None:
    """Earlier versions hashed a request's standard-library JSON (with spaces): a key
    used then, and retried after an upgrade, replays; another request still conflicts."""
    c = container
    acct = c.ledger.open_account(name="upgrade")
    expires = clock.now() + timedelta(days=3)
    grant = c.ledger.grant(account_id=acct, amount=40, source="plan", idempotency_key="g",
                           expires_at=expires)  # fmt: skip
    hold = c.ledger.place_hold(account_id=acct, amount=15, idempotency_key="job")
    capture = c.ledger.capture(hold_id=hold.hold_id, idempotency_key="job")
    earlier = {
        f"{acct}:grant:g": ("grant", {"amount": 40, "source": "plan", "expires_at": expires,
                                      "priority": 0}),
        f"{acct}:hold:job": ("hold", {"amount": 15, "list_tokens": 15}),
        f"{hold.hold_id}:capture:job": ("capture", {"hold_id": hold.hold_id, "amount": None}),
    }  # fmt: skip
    with c.engine.begin() as conn:
        for key, (op, params) in earlier.items():
            canonical = json.dumps({"op": op, **params}, sort_keys=True, default=str)
            digest = hashlib.sha256(canonical.encode()).hexdigest()
            update = ledger_transactions.update().where(
                ledger_transactions.c.idempotency_key == key
            )
            assert conn.execute(update.values(request_hash=digest)).rowcount == 1
    again = c.ledger.grant(account_id=acct, amount=40, source="plan", idempotency_key="g",
                           expires_at=expires)  # fmt: skip
    assert again.replayed and again.txn_id == grant.txn_id
    assert c.ledger.place_hold(account_id=acct, amount=15, idempotency_key="job").replayed
    assert c.ledger.capture(hold_id=hold.hold_id, idempotency_key="job").txn_id == capture.txn_id
    with pytest.raises(IdempotencyConflictError):
        c.ledger.place_hold(account_id=acct, amount=16, idempotency_key="job")
    with pytest.raises(IdempotencyConflictError):
        c.ledger.capture(hold_id=hold.hold_id, idempotency_key="job", amount=3)
    assert balance(c, acct) == (25, 0)


def test_a_plan_grant_from_before_lots_had_a_start_still_replays(
    container: Container, clock: FakeClock
) -> None:
    """Plan grants now name their period's start. One granted before (its request
    hashed without it), retried after an upgrade, replays; another amount conflicts,
    and so does another start for a grant that named one."""
    c = container
    acct = c.ledger.open_account(name="before starts")
    first = c.plans.subscribe(account_id=acct, plan="monthly")
    key = f"{acct}:grant:plan:monthly:{first.period_start.isoformat()}"
    params = {"op": "grant", "amount": 1000, "source": "plan", "priority": 0,
              "expires_at": first.period_end.astimezone(UTC)}  # fmt: skip
    digest = hashlib.sha256(orjson.dumps(params, default=str, option=orjson.OPT_SORT_KEYS))
    with c.engine.begin() as conn:
        update = ledger_transactions.update().where(ledger_transactions.c.idempotency_key == key)
        assert conn.execute(update.values(request_hash=digest.hexdigest())).rowcount == 1
    again = c.plans.subscribe(account_id=acct, plan="monthly")
    assert (again.lot_id, again.tokens_granted) == (first.lot_id, 0)
    grant: dict[str, Any] = {
        "account_id": acct,
        "amount": 1000,
        "source": "plan",
        "expires_at": first.period_end,
        "starts_at": first.period_start,
        "idempotency_key": f"plan:monthly:{first.period_start.isoformat()}",
    }
    with pytest.raises(IdempotencyConflictError):
        c.ledger.grant(**{**grant, "amount": 999})
    named = c.ledger.grant(**{**grant, "idempotency_key": "named"})
    assert c.ledger.grant(**{**grant, "idempotency_key": "named"}).txn_id == named.txn_id
    with pytest.raises(IdempotencyConflictError):
        c.ledger.grant(
            **{
                **grant,
                "idempotency_key": "named",
                "starts_at": first.period_start + timedelta(days=1),
            }
        )
    # A grant from now on without a start is not one that names a start, or back.
    unnamed = {**grant, "idempotency_key": "unnamed", "starts_at": None}
    c.ledger.grant(**unnamed)
    for other in (
        {**unnamed, "starts_at": clock.now() + timedelta(days=1)},
        {**grant, "idempotency_key": "named", "starts_at": None},
    ):
        with pytest.raises(IdempotencyConflictError):
            c.ledger.grant(**other)
    assert balance(c, acct) == (3000, 0)


def test_lots_burn_in_order_and_release_returns_to_the_same_lots(
    container: Container, clock: FakeClock
) -> None:
    c = container
    acct = c.ledger.open_account(name="lots")
    now = clock.now()
    late = c.ledger.grant(
        account_id=acct, amount=100, source="plan", idempotency_key="late",
        expires_at=now + timedelta(days=30),
    )  # fmt: skip
    soon = c.ledger.grant(
        account_id=acct, amount=10, source="promotion", idempotency_key="soon",
        expires_at=now + timedelta(days=1),
    )  # fmt: skip

    def lots() -> dict[str, tuple[int, int]]:
        """Each lot's (remaining, held), in the order they burn."""
        return {v.lot_id: (v.remaining, v.held) for v in c.accounts.balance(account_id=acct).lots}

    h = c.ledger.place_hold(account_id=acct, amount=15, idempotency_key="h")
    # The lot expiring first was emptied first, and shows what is held of it (a
    # drained lot once vanished from the balance until the hold was settled).
    assert list(lots().items()) == [(soon.lot_id, (0, 10)), (late.lot_id, (95, 5))]
    c.ledger.release(hold_id=h.hold_id, idempotency_key="r", reason="canceled")
    assert list(lots().items()) == [(soon.lot_id, (10, 0)), (late.lot_id, (100, 0))]
    h = c.ledger.place_hold(account_id=acct, amount=15, idempotency_key="h2")
    c.ledger.capture(hold_id=h.hold_id, idempotency_key="c2")
    assert list(lots().items()) == [(late.lot_id, (95, 0))]
    assert_consistent(c)


def test_expiry_writes_off_lots_and_releases_holds_idempotently(
    container: Container, clock: FakeClock
) -> None:
    c = container
    acct = c.ledger.open_account(name="exp")
    promotion = c.ledger.grant(
        account_id=acct, amount=30, source="promotion", idempotency_key="g",
        expires_at=clock.now() + timedelta(hours=1),
    )  # fmt: skip
    c.ledger.grant(account_id=acct, amount=5, source="adjustment", idempotency_key="g2")
    h = c.ledger.place_hold(account_id=acct, amount=20, idempotency_key="h", ttl_s=60)
    clock.advance(minutes=2)
    with pytest.raises(HoldNotOpenError, match="expired"):
        c.ledger.capture(hold_id=h.hold_id, idempotency_key="c")
    assert balance(c, acct) == (35, 0)  # the expired hold was released by the capture attempt
    h2 = c.ledger.place_hold(account_id=acct, amount=8, idempotency_key="h2", ttl_s=60)
    clock.advance(hours=1)
    assert balance(c, acct) == (5, 8)  # the 30-token lot (22 left) is past expiry: not spendable
    report = c.ledger.expire()
    assert (report.holds_expired, report.tokens_released) == (1, 8)
    assert (report.lots_expired, report.tokens_written_off) == (1, 30)
    assert balance(c, acct) == (5, 0)
    again = c.ledger.expire()
    assert (again.holds_expired, again.lots_expired) == (0, 0)
    with pytest.raises(HoldNotOpenError):
        c.ledger.release(hold_id=h2.hold_id, idempotency_key="r", reason="late")
    assert c.ledger_store.posting_sums()["expired"] == 30
    (written_off,) = [x for x in c.accounts.statement(account_id=acct) if x.kind == "expire_lot"]
    assert (written_off.available_delta, written_off.memo) == (-30, {"lot_id": promotion.lot_id})
    assert_consistent(c)


def test_one_account_whose_expiry_fails_does_not_hold_up_the_others(
    container: Container, clock: FakeClock
) -> None:
    """Once, the first failing account ended the run, and every run after it: no other
    account's holds were released nor its lots written off."""
    c = container
    broken, fine, other = (c.ledger.open_account(name=name) for name in ("b", "f", "o"))
    holds_due = {}
    for acct in (broken, fine, other):
        c.ledger.grant(account_id=acct, amount=50, source="topup", idempotency_key="g")
        holds_due[acct] = c.ledger.place_hold(account_id=acct, amount=10, idempotency_key="h",
                                              ttl_s=60).hold_id  # fmt: skip
    with c.engine.begin() as conn:  # a hold no code can read back
        conn.execute(holds.update().where(holds.c.id == holds_due[broken]).values(allocation="{"))
    clock.advance(minutes=2)
    assert c.ledger_store.accounts_with_expiring(clock.now()) == [broken, fine, other]
    report = c.ledger.expire()
    assert (report.holds_expired, report.tokens_released) == (2, 20)
    assert report.failed_accounts == (broken,)
    assert balance(c, fine) == balance(c, other) == (50, 0)
    assert balance(c, broken) == (40, 10)  # its balance still reads, the hold unlisted
    # Every account failing in a row is not the accounts' fault: the run stops.
    with c.engine.begin() as conn:
        conn.execute(holds.update().values(allocation="{", state="open"))
    clock.advance(minutes=2)
    with pytest.raises(orjson.JSONDecodeError):
        c.ledger.expire()


def test_unlimited_holds_take_nothing_but_record_the_list_price(container: Container) -> None:
    c = container
    acct = c.ledger.open_account(name="vip")
    sub = c.plans.subscribe(account_id=acct, plan="vip")
    assert sub.unlimited and c.accounts.balance(account_id=acct).unlimited
    h = c.ledger.place_hold(account_id=acct, amount=0, list_tokens=19, idempotency_key="j")
    assert (h.amount, h.list_tokens) == (0, 19)
    s = c.ledger.capture(hold_id=h.hold_id, idempotency_key="j")
    assert s.captured == 0
    assert balance(c, acct) == (0, 0)
    assert_consistent(c)


def test_subscriptions_grant_once_per_period(container: Container, clock: FakeClock) -> None:
    c = container
    acct = c.ledger.open_account(name="sub")
    first = c.plans.subscribe(account_id=acct, plan="monthly")
    again = c.plans.subscribe(account_id=acct, plan="monthly")
    assert first.lot_id == again.lot_id
    # What this call granted: once the replay, too, said 1,000 (an order showed them).
    assert (first.tokens_granted, again.tokens_granted) == (1000, 0)
    assert balance(c, acct) == (1000, 0)
    nxt = c.plans.renew(account_id=acct, plan="monthly")
    c.plans.renew(account_id=acct, plan="monthly")
    assert nxt.period_start == first.period_end
    assert c.accounts.balance(account_id=acct).available == 1000  # next month's: not yet
    bought = c.plans.buy_topup(account_id=acct, plan="topup-500", idempotency_key="order-1")
    clock.advance(minutes=24 * 60)  # once an idempotency conflict: its expiry moved on
    again_later = c.plans.buy_topup(account_id=acct, plan="topup-500", idempotency_key="order-1")
    assert again_later == replace(bought, replayed=True)  # the same pack, said to be so
    assert bought.period_end - bought.period_start == timedelta(days=365)
    assert (first.replayed, again.replayed, bought.replayed) == (False, True, False)
    assert c.accounts.balance(account_id=acct).available == 1500
    with pytest.raises(InvalidInputError):
        c.plans.subscribe(account_id=acct, plan="topup-500")
    clock.current = first.period_end + timedelta(seconds=1)
    c.ledger.expire()
    assert c.accounts.balance(account_id=acct).available == 1500
    assert_consistent(c)


def test_a_period_renewed_ahead_is_spendable_only_once_it_begins(
    container: Container, clock: FakeClock
) -> None:
    c = container
    acct = c.ledger.open_account(name="early")
    first = c.plans.subscribe(account_id=acct, plan="monthly")
    nxt = c.plans.renew(account_id=acct, plan="monthly")
    view = c.accounts.balance(account_id=acct)
    ahead = next(lot for lot in view.lots if lot.lot_id == nxt.lot_id)
    assert (ahead.starts_at, ahead.started, ahead.remaining) == (nxt.period_start, False, 1000)
    assert view.available == 1000
    with pytest.raises(InsufficientBalanceError) as err:
        c.ledger.place_hold(account_id=acct, amount=1001, idempotency_key="too-much")
    assert err.value.available == 1000
    spent = c.ledger.place_hold(account_id=acct, amount=1000, idempotency_key="this-month")
    c.ledger.capture(hold_id=spent.hold_id, idempotency_key="this-month")
    clock.current = first.period_end  # next month begins
    assert c.accounts.balance(account_id=acct).available == 1000
    hold = c.ledger.place_hold(account_id=acct, amount=1000, idempotency_key="next-month")
    assert c.ledger.capture(hold_id=hold.hold_id, idempotency_key="next-month").captured == 1000
    assert balance(c, acct) == (0, 0)
    assert_consistent(c)


def test_statement_pages_newest_first(container: Container) -> None:
    c = container
    acct = c.ledger.open_account(name="s")
    for i in range(5):
        c.ledger.grant(account_id=acct, amount=i + 1, source="promotion", idempotency_key=f"g{i}")
    first = c.accounts.statement(account_id=acct, limit=3)
    assert [x.available_delta for x in first] == [5, 4, 3]
    rest = c.accounts.statement(account_id=acct, limit=3, before=first[-1].txn_id)
    assert [x.available_delta for x in rest] == [2, 1]
    other = c.ledger.open_account(name="other")  # its lines are in none of the pages
    c.ledger.grant(account_id=other, amount=9, source="promotion", idempotency_key="g")
    hold = c.ledger.place_hold(account_id=acct, amount=6, idempotency_key="h")
    c.ledger.capture(hold_id=hold.hold_id, idempotency_key="h", amount=4)
    again = c.ledger.place_hold(account_id=acct, amount=3, idempotency_key="h2")
    c.ledger.release(hold_id=again.hold_id, idempotency_key="h2", reason="failed")
    lines = c.accounts.statement(account_id=acct, limit=4)
    assert [(x.kind, x.available_delta, x.held_delta) for x in lines] == [
        ("release", 3, -3),
        ("hold", -3, 3),
        ("capture", 2, -6),
        ("hold", -6, 6),
    ]
    assert len(c.accounts.statement(account_id=acct, limit=100)) == 9


def test_reconcile_reports_each_cache_that_disagrees_with_the_postings(
    container: Container,
) -> None:
    c = container
    acct = c.ledger.open_account(name="drift")
    grant = c.ledger.grant(account_id=acct, amount=50, source="topup", idempotency_key="g")
    hold = c.ledger.place_hold(account_id=acct, amount=11, idempotency_key="h")
    assert_consistent(c)
    with c.engine.begin() as conn:  # corrupt every cache behind the ledger's back
        conn.execute(balances.update().values(available=40, held=12))
        conn.execute(lots.update().values(remaining=38))
        conn.execute(holds.update().values(amount=10))
    found = {(d.account_id, d.what, d.cached, d.derived) for d in c.accounts.reconcile().drifts}
    assert found == {
        (acct, "available", 40, 39),
        (acct, "held", 12, 11),
        (acct, f"lot {grant.lot_id} remaining", 38, 39),
        (acct, f"hold {hold.hold_id} held", 10, 11),
    }
    assert not c.accounts.reconcile().ok


def test_memos_with_quotes_percent_signs_and_placeholders_are_stored_verbatim(
    container: Container,
) -> None:
    """PostgreSQL's statements are bound on the client: text must reach it unharmed."""
    c = container
    acct = c.ledger.open_account(name="memo")
    memo = {"note": "100% o'clock; DROP TABLE x; -- %(amount)s %s $1 \\ 漢字"}
    c.ledger.grant(account_id=acct, amount=5, source="topup", idempotency_key="g", memo=memo)
    c.ledger.place_hold(account_id=acct, amount=2, idempotency_key="h'%s", memo=memo)
    lines = c.ledger_store.statement(acct, limit=10, before=None)
    assert [line.memo for line in lines] == [memo, memo]
    replay = c.ledger.place_hold(account_id=acct, amount=2, idempotency_key="h'%s")
    assert replay.replayed
    assert_consistent(c)


def test_out_of_range_input_is_refused_before_anything_moves(
    container: Container, clock: FakeClock
) -> None:
    """Each of these once reached the database: a raw DataError or OverflowError, a
    balance turned REAL on SQLite, a priority that broke every later read."""
    ledger = container.ledger
    acct = ledger.open_account(name="bounds")
    ledger.grant(account_id=acct, amount=100, source="promotion", idempotency_key="g0")
    later = clock.now() + timedelta(hours=1)
    bad_grants: list[dict[str, Any]] = [
        {"amount": 2**63 - 1},
        {"amount": 10**12 + 1},
        {"priority": "x"},
        {"priority": 2**31},
        {"idempotency_key": ""},
        {"idempotency_key": "k" * 201},
        {"expires_at": clock.now()},  # dead on arrival
        {"expires_at": later.replace(tzinfo=None)},
        {"expires_at": datetime.max.replace(tzinfo=UTC)},  # once an OverflowError
        {"valid_for": timedelta(0)},
        {"valid_for": timedelta(days=1), "expires_at": later},
        {"starts_at": later, "expires_at": later},  # ends as it starts
        {"starts_at": later.replace(tzinfo=None)},
        {"starts_at": datetime.min.replace(tzinfo=UTC)},
        {"starts_at": later, "valid_for": timedelta(days=1)},
    ]
    for bad in bad_grants:
        grant = {"account_id": acct, "amount": 5, "source": "promotion",
                 "idempotency_key": "g1", **bad}  # fmt: skip
        with pytest.raises(InvalidInputError):
            ledger.grant(**grant)
    for ttl_s in (0, -1, 31 * 24 * 3600):
        with pytest.raises(InvalidInputError):
            ledger.place_hold(account_id=acct, amount=5, idempotency_key="h", ttl_s=ttl_s)
    with pytest.raises(InvalidInputError):
        ledger.open_account(name="n" * 201)
    assert balance(container, acct) == (100, 0)
    assert_consistent(container)


def test_a_grant_replays_after_its_lot_has_expired(container: Container, clock: FakeClock) -> None:
    ledger = container.ledger
    acct = ledger.open_account(name="late replay")
    grant = {"account_id": acct, "amount": 5, "source": "promotion", "idempotency_key": "g",
             "expires_at": clock.now() + timedelta(hours=1)}  # fmt: skip
    first = ledger.grant(**grant)
    clock.advance(minutes=120)
    again = ledger.grant(**grant)
    assert again.replayed and again.lot_id == first.lot_id


def test_keys_that_differ_only_in_case_accents_or_trailing_spaces_are_different(
    container: Container,
) -> None:
    """On MariaDB's default collation they were one key: the second top-up replayed."""
    c = container
    acct = c.ledger.open_account(name="keys")
    for key in ("PAY-abc", "pay-ABC"):
        c.plans.buy_topup(account_id=acct, plan="topup-500", idempotency_key=key)
    holds = {
        key: c.ledger.place_hold(account_id=acct, amount=1, idempotency_key=key)
        for key in ("Job-A", "job-a", "k", "k ", "café", "cafe")
    }
    assert len({h.hold_id for h in holds.values()}) == 6
    assert not any(h.replayed for h in holds.values())
    assert balance(c, acct) == (994, 6)


def test_reconcile_finds_a_rewritten_allocation_a_wrong_capture_and_an_overfull_lot(
    container: Container,
) -> None:
    """Each of these once passed every sum that reconcile checked."""
    c = container
    acct = c.ledger.open_account(name="tampered")
    first = c.ledger.grant(account_id=acct, amount=50, source="promotion", idempotency_key="a")
    second = c.ledger.grant(account_id=acct, amount=50, source="promotion", idempotency_key="b")
    hold = c.ledger.place_hold(account_id=acct, amount=70, idempotency_key="h")
    assert_consistent(c)
    with c.engine.begin() as conn:  # as if a bug wrote it: all from the second lot
        conn.execute(
            holds.update()
            .where(holds.c.id == hold.hold_id)
            .values(allocation=json.dumps([[second.lot_id, 70]]), captured=5)
        )
        conn.execute(lots.update().where(lots.c.id == second.lot_id).values(amount=10))
    whats = sorted(d.what for d in c.accounts.reconcile().drifts)
    assert whats == sorted(
        [
            f"hold {hold.hold_id} allocation from lot {first.lot_id}",
            f"hold {hold.hold_id} allocation from lot {second.lot_id}",
            f"hold {hold.hold_id} captured",
            f"lot {second.lot_id} amount",  # its grant posted 50
            f"lot {second.lot_id} remaining (of 10 granted)",  # 30 left
        ]
    )


def test_reconcile_finds_a_hold_whose_state_is_not_what_the_journal_says(
    container: Container,
) -> None:
    """A settled hold's state, and a zero-token hold's at all, passed every sum."""
    c = container
    acct = c.ledger.open_account(name="states")
    c.ledger.grant(account_id=acct, amount=100, source="topup", idempotency_key="g")
    paid = c.ledger.place_hold(account_id=acct, amount=10, idempotency_key="paid")
    c.ledger.capture(hold_id=paid.hold_id, amount=5, idempotency_key="paid")
    vip = c.ledger.place_hold(account_id=acct, amount=0, list_tokens=19, idempotency_key="vip")
    c.ledger.capture(hold_id=vip.hold_id, idempotency_key="vip")
    twice = c.ledger.place_hold(account_id=acct, amount=0, idempotency_key="twice")
    c.ledger.release(hold_id=twice.hold_id, idempotency_key="twice", reason="test")
    assert_consistent(c)
    with c.engine.begin() as conn:  # as a bug might write them
        conn.execute(holds.update().where(holds.c.id == paid.hold_id).values(state="released"))
        conn.execute(holds.update().where(holds.c.id == vip.hold_id).values(state="open"))
        again = {"id": "txn_again", "kind": "expire_hold", "account_id": acct,
                 "hold_id": twice.hold_id, "created_at": datetime.now(UTC), "memo": "{}",
                 "result": "{}"}  # fmt: skip
        conn.execute(ledger_transactions.insert().values(**again))
    found = {(d.what, d.cached, d.derived, d.unit) for d in c.accounts.reconcile().drifts}
    assert found == {
        (f"hold {paid.hold_id} is released, but the journal says captured", 1, 1, "settlements"),
        (f"hold {vip.hold_id} is open, but the journal says captured", 0, 1, "settlements"),
        (f"hold {twice.hold_id} is released, but the journal settles it 2 times", 1, 2,
         "settlements"),
    }  # fmt: skip


def test_reconcile_reads_one_snapshot_while_holds_are_placed(container: Container) -> None:
    """Once, a hold placed between two of its statements was reported as drift of a
    sound ledger (PostgreSQL and MariaDB read each statement's own snapshot)."""
    c = container
    acct = c.ledger.open_account(name="busy")
    c.ledger.grant(account_id=acct, amount=100, source="topup", idempotency_key="g")
    placed: list[str] = []

    def meanwhile(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        # Right after the first of the allocation check's two reads: another client
        # places a hold, on its own connection.
        if not placed and statement.lstrip().startswith("SELECT postings.hold_id"):
            placed.append(c.ledger.place_hold(account_id=acct, amount=10,
                                              idempotency_key="meanwhile").hold_id)  # fmt: skip

    sa.event.listen(c.engine, "after_cursor_execute", meanwhile)
    try:
        report = c.accounts.reconcile()
    finally:
        sa.event.remove(c.engine, "after_cursor_execute", meanwhile)
    assert placed and report.drifts == []
    assert_consistent(c)


def test_the_same_instant_in_another_offset_is_the_same_request(
    container: Container, clock: FakeClock
) -> None:
    c = container
    acct = c.ledger.open_account(name="offsets")
    shanghai = timezone(timedelta(hours=8))
    at_utc = (clock.now() + timedelta(days=3)).replace(microsecond=0)
    grant = {"account_id": acct, "amount": 7, "source": "promotion", "idempotency_key": "tz"}
    first = c.ledger.grant(**grant, expires_at=at_utc)
    again = c.ledger.grant(**grant, expires_at=at_utc.astimezone(shanghai))  # once a conflict
    assert again.replayed and again.txn_id == first.txn_id
    # A key first used with an offset, hashed as given before this change, replays too.
    given = at_utc.astimezone(shanghai)
    params = {"op": "grant", "amount": 7, "source": "promotion", "expires_at": given,
              "priority": 0}  # fmt: skip
    digest = hashlib.sha256(orjson.dumps(params, option=orjson.OPT_SORT_KEYS)).hexdigest()
    with c.engine.begin() as conn:
        key = ledger_transactions.c.idempotency_key == f"{acct}:grant:tz"
        conn.execute(ledger_transactions.update().where(key).values(request_hash=digest))
    assert c.ledger.grant(**grant, expires_at=given).replayed
    # A hold's time to live is part of the request.
    c.ledger.place_hold(account_id=acct, amount=1, idempotency_key="h", ttl_s=60)
    assert c.ledger.place_hold(account_id=acct, amount=1, idempotency_key="h", ttl_s=60).replayed
    with pytest.raises(IdempotencyConflictError):
        c.ledger.place_hold(account_id=acct, amount=1, idempotency_key="h", ttl_s=120)


def test_a_statement_page_costs_the_same_however_long_the_history(tmp_path: Any) -> None:
    """A page is a range of the account's index, read from the cursor: SQLite runs
    about as many instructions for it with 20 transactions behind it as with 1,000
    (it used to find, sum and sort every one of them for each page)."""
    c = bootstrap.build(Settings(database_url=f"sqlite:///{tmp_path / 'history.db'}"))
    c.upgrade_database()
    c.ledger_store.close()  # connections kept for movements are checked out again
    counter = SqliteSteps(c.engine)

    def page_cost(acct: str, before: str | None = None) -> int:
        counter.steps = 0
        lines = c.accounts.statement(account_id=acct, limit=10, before=before)
        assert len(lines) == 10
        return counter.steps

    def account(grants: int) -> str:
        acct = c.ledger.open_account(name=f"{grants} grants")
        for i in range(grants):
            c.ledger.grant(account_id=acct, amount=1, source="promotion", idempotency_key=f"{i}")
        return acct

    try:
        short, long = account(20), account(1000)
        middle = c.accounts.statement(account_id=long, limit=500)[-1].txn_id
        cost = page_cost(short)
        assert page_cost(long) < 2 * cost
        assert page_cost(long, before=middle) < 2 * cost
    finally:
        c.close()


def test_a_movement_costs_the_same_however_many_lots_were_used_up(tmp_path: Any) -> None:
    """A hold reads the account's lots with tokens left (``ix_lots_live``): 500 lots
    used up long ago are not read again by every movement, as they were."""
    c = bootstrap.build(Settings(database_url=f"sqlite:///{tmp_path / 'lots.db'}"))
    c.upgrade_database()
    ledger = c.ledger

    def hold_cost(acct: str, key: str) -> int:
        counter.steps = 0
        ledger.place_hold(account_id=acct, amount=1, idempotency_key=key)
        return counter.steps

    fresh, old = ledger.open_account(name="fresh"), ledger.open_account(name="old")
    for i in range(500):
        ledger.grant(account_id=old, amount=1, source="promotion", idempotency_key=f"{i}")
    spent = ledger.place_hold(account_id=old, amount=500, idempotency_key="spend")
    ledger.capture(hold_id=spent.hold_id, idempotency_key="spend")
    for acct in (fresh, old):
        ledger.grant(account_id=acct, amount=100, source="topup", idempotency_key="live")
    c.ledger_store.close()  # connections kept for movements are checked out again
    counter = SqliteSteps(c.engine)
    try:
        cost = hold_cost(fresh, "a")
        assert hold_cost(old, "a") < 1.5 * cost
        assert [lot.remaining for lot, _ in c.ledger_store.lots(old)] == [99]
    finally:
        c.close()


def _used_up_lots(account_id: str, n: int) -> list[dict[str, Any]]:
    """Rows of ``n`` lots of the account, long used up (as a bulk insert takes them)."""
    return [
        {"id": f"lot_{i:026d}", "account_id": account_id, "amount": 1, "remaining": 0,
         "source": "promotion", "expires_at": None, "priority": 0,
         "created_at": datetime(2025, 1, 1, tzinfo=UTC), "memo": "{}", "starts_at": None}
        for i in range(n)
    ]  # fmt: skip


def test_prepared_movement_reads_use_the_partial_indexes_on_postgresql(
    container: Container,
) -> None:
    """PostgreSQL runs the ledger's statements prepared, and a prepared statement's
    generic plan can use a partial index only if the query spells its condition as
    a literal: the live lots' (``remaining > 0``) and the open holds' (``'open'``)."""
    c = container
    if c.engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL's prepared statements")
    acct = c.ledger.open_account(name="lots")
    with c.engine.begin() as conn:
        conn.execute(lots.insert(), _used_up_lots(acct, 5000))
        settled = [
            {"id": f"hold_{i:026d}", "account_id": acct, "amount": 1, "list_tokens": 1,
             "state": "captured", "captured": 1, "allocation": "[]", "created_at": at,
             "expires_at": at, "settled_at": at}
            for i, at in enumerate([datetime(2025, 1, 1, tzinfo=UTC)] * 5000)
        ]  # fmt: skip
        conn.execute(holds.insert(), settled)
        conn.exec_driver_sql("ANALYZE lots")
        conn.exec_driver_sql("ANALYZE holds")
        conn.exec_driver_sql("SET plan_cache_mode = force_generic_plan")
        sql = LedgerSql(c.engine.dialect)
        plans = {}
        for name, statement in (("lots", sql.account_lots), ("due", sql.open_holds_due)):
            conn.exec_driver_sql(f"PREPARE generic_{name} AS {statement.sql}")
            args = ", ".join(["NULL"] * len(set(re.findall(r"\$\d+", statement.sql))))
            explained = conn.exec_driver_sql(f"EXPLAIN EXECUTE generic_{name}({args})")
            plans[name] = "\n".join(row[0] for row in explained)
    assert "ix_lots_live" in plans["lots"], plans["lots"]
    assert "ix_holds_open" in plans["due"], plans["due"]


def test_a_movement_reads_only_the_live_lots_on_mariadb(container: Container) -> None:
    """MariaDB has no partial indexes: there ``ix_lots_live`` is (account, remaining),
    and the lots read is a range of the live ones, not of every lot the account had."""
    c = container
    if c.engine.dialect.name != "mysql":
        pytest.skip("MariaDB's index (SQLite and PostgreSQL: by the tests above)")
    acct = c.ledger.open_account(name="lots")
    with c.engine.begin() as conn:
        conn.execute(lots.insert(), _used_up_lots(acct, 2000))
    c.ledger.grant(account_id=acct, amount=5, source="topup", idempotency_key="live")
    read = LedgerSql(c.engine.dialect).account_lots
    with c.engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE TABLE lots")
        assert rows_touched(conn, read.sql, read.params({"account_id": acct})) <= 3
