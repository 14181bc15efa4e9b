"""What the hot path keeps in process: SQLite's in-process write lock, the price book
version lists and the entitlement lists (seen at once by the process that changes
them, by others after their time to live)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from comfygate.adapters.db import migrate
from comfygate.adapters.db.engine import _write_lock_for, create_engine, read_only
from comfygate.adapters.db.sql_ledger import SqlLedgerStore
from comfygate.adapters.db.sql_plans import SqlSubscriptionStore
from comfygate.adapters.db.sql_pricing import SqlPriceBookRepository, read_price_book_file
from comfygate.adapters.db.tables_pricing import quote_locks
from comfygate.domain import plans as dp
from comfygate.domain.pricing_document import price_book_to_document
from comfygate.domain.pricing_validation import parse_price_book
from comfygate.services.quoting import PriceBookRecord

T0 = datetime(2026, 11, 27, 4, 0, tzinfo=UTC)
HOUR = 3600.0


def _book(version: str) -> PriceBookRecord:
    doc = price_book_to_document(read_price_book_file())
    doc["version"] = version
    return PriceBookRecord(parse_price_book(doc), None, T0, T0)


def _active(repo: SqlPriceBookRepository, at: datetime = T0) -> str | None:
    found = repo.active(account_id="acct_x", at=at)
    return None if found is None else found.book.version


def test_a_new_price_book_is_seen_at_once_here_and_after_the_ttl_elsewhere(
    engine: Engine,
) -> None:
    here = SqlPriceBookRepository(engine, versions_ttl_s=HOUR)
    elsewhere = SqlPriceBookRepository(engine, versions_ttl_s=HOUR)  # another process
    uncached = SqlPriceBookRepository(engine, versions_ttl_s=0)
    assert _active(here) is None and _active(elsewhere) is None
    here.add(_book("v1"))
    assert _active(here) == "v1"
    assert _active(elsewhere) is None  # its copy of the version list is an hour old
    assert _active(uncached) == "v1"
    # A version known to the copy is exact at every instant: v2 from an hour later.
    later = _book("v2")
    here.add(PriceBookRecord(later.book, None, T0 + timedelta(hours=1), T0))
    assert _active(here, T0 + timedelta(minutes=59)) == "v1"
    assert _active(here, T0 + timedelta(hours=1)) == "v2"


def _subscribe(store: SqlSubscriptionStore, account_id: str, start: datetime) -> None:
    plan = dp.Plan("vip", "VIP", "unlimited", 0, "month", None, 2, "99")
    period = dp.Period(start, start + timedelta(days=30))
    sub, _ = store.choose_period(
        account_id=account_id, plan="vip", choose=lambda _known: period, created_at=start
    )
    store.add_entitlement(subscription_id=sub, account_id=account_id, plan=plan, period=period)


def test_a_new_entitlement_is_seen_at_once_here_and_after_the_ttl_elsewhere(
    engine: Engine,
) -> None:
    account_id = "acct_vip"
    SqlLedgerStore(engine).create_account(account_id=account_id, name="vip", created_at=T0)
    here = SqlSubscriptionStore(engine, entitlements_ttl_s=HOUR)
    elsewhere = SqlSubscriptionStore(engine, entitlements_ttl_s=HOUR)
    assert here.active_entitlement(account_id, T0) is None
    assert elsewhere.active_entitlement(account_id, T0) is None
    _subscribe(here, account_id, T0)
    found = here.active_entitlement(account_id, T0)
    assert found is not None and (found.plan, found.max_concurrent_jobs) == ("vip", 2)
    assert elsewhere.active_entitlement(account_id, T0) is None  # until its copy expires
    assert (
        SqlSubscriptionStore(engine, entitlements_ttl_s=0).active_entitlement(account_id, T0)
        == found
    )
    # The copy holds every entitlement: in force or not is decided at each instant.
    assert here.active_entitlement(account_id, T0 - timedelta(seconds=1)) is None
    assert here.active_entitlement(account_id, T0 + timedelta(days=30)) is None


def test_sqlite_write_transactions_take_and_give_back_the_process_lock(tmp_path: Path) -> None:
    path = tmp_path / "lock.db"
    engine = create_engine(f"sqlite:///{path}")
    migrate.upgrade(engine)
    lock = _write_lock_for(str(path))
    count = sa.select(sa.func.count()).select_from(quote_locks)
    try:
        with engine.begin() as conn:
            assert lock._lock.locked()  # held for the whole write transaction
            conn.execute(count)
        assert not lock._lock.locked()  # ... and given back on commit
        with pytest.raises(RuntimeError), engine.begin():
            raise RuntimeError("roll back")
        assert not lock._lock.locked()  # on rollback
        with engine.connect() as conn:
            conn.execute(count)
            assert lock._lock.locked()
        assert not lock._lock.locked()  # when a connection goes back to the pool
        with read_only(engine.connect()) as conn:
            conn.execute(count)
            assert not lock._lock.locked()  # reads never take it
        assert _write_lock_for(str(tmp_path / "." / "lock.db")) is lock  # one per file
    finally:
        engine.dispose()
