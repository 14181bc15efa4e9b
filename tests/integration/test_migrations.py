"""The migrations build exactly the tables the code declares, on every backend."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from comfygate import bootstrap
from comfygate.adapters.db import migrate
from comfygate.adapters.db.base import metadata, refuse_colliding_keys
from comfygate.adapters.db.engine import create_engine
from comfygate.adapters.db.tables_jobs import usage_events
from comfygate.adapters.db.tables_ledger import holds
from comfygate.config import Settings
from tests.conftest import DatabaseFactory
from tests.reports_support import T0, Use, new_account, store_usage


def test_upgraded_schema_matches_the_declared_tables(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        migrate.upgrade(engine)
        # Down past the newest ledger, identity and jobs revisions and up again.
        command.downgrade(migrate.alembic_config(engine), "ledger_0001")
        command.downgrade(migrate.alembic_config(engine), "identity_0001")
        command.downgrade(migrate.alembic_config(engine), "jobs_0001")
        migrate.upgrade(engine)
        with engine.connect() as conn:
            diffs = compare_metadata(MigrationContext.configure(conn), metadata)
            indexes = {ix["name"]: ix for ix in sa.inspect(conn).get_indexes(holds.name)}
        mariadb = engine.dialect.name == "mysql"
        # Alembic's comparison ignores ``ddl_if``: this index is declared for MariaDB only.
        only_mariadb = ("add_index", "ix_holds_state_expires_at")
        assert [d for d in diffs if mariadb or (d[0], d[1].name) != only_mariadb] == []
        assert "ix_holds_open" in indexes
        assert ("ix_holds_state_expires_at" in indexes) == mariadb
        assert "ix_holds_account_id" not in indexes
    finally:
        engine.dispose()


def test_a_new_sqlite_database_has_small_pages_and_an_old_one_keeps_its_own(
    tmp_path: Path,
) -> None:
    """New files get 1 KiB pages (a commit writes whole pages); a file made with
    SQLite's default 4 KiB pages keeps them, in WAL mode, and upgrades as before."""
    old = tmp_path / "old.db"
    with sqlite3.connect(old) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE made_before (x)")
    for path, size in ((tmp_path / "new.db", 1024), (old, 4096)):
        engine = create_engine(f"sqlite:///{path}")
        try:
            migrate.upgrade(engine)
            with engine.connect() as conn:
                assert conn.exec_driver_sql("PRAGMA page_size").scalar() == size
                assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        finally:
            engine.dispose()


MONEY_TABLES = ("accounts", "balances", "lots", "holds", "ledger_transactions", "postings")


def _money_rows(engine: sa.Engine) -> dict[str, list[dict[str, Any]]]:
    """Every row of the money tables, as the first revisions have them (no lot start)."""
    rows = {}
    with engine.connect() as conn:
        for name in MONEY_TABLES:
            table = metadata.tables[name]
            columns = [c for c in table.c if c.name != "starts_at"]
            query = sa.select(*columns).order_by(*table.primary_key.columns)
            rows[name] = [dict(r._mapping) for r in conn.execute(query)]
    return rows


def _heads(engine: sa.Engine) -> set[str]:
    with engine.connect() as conn:
        return set(MigrationContext.configure(conn).get_current_heads())


def _downgrade(engine: sa.Engine, *revisions: str) -> None:
    for revision in revisions:
        command.downgrade(migrate.alembic_config(engine), revision)


def test_money_survives_a_downgrade_to_the_first_revisions_and_back(database_url: str) -> None:
    app = bootstrap.build(Settings(database_url=database_url))
    app.upgrade_database()
    ledger = app.ledger
    alice, bob = ledger.open_account(name="alice"), ledger.open_account(name="bob")
    app.plans.subscribe(account_id=alice, plan="monthly")
    app.plans.subscribe(account_id=bob, plan="vip")
    ledger.grant(account_id=alice, amount=30, source="promotion", idempotency_key="promo")
    for key, settle in (("paid", "capture"), ("back", "release"), ("open", None)):
        hold = ledger.place_hold(account_id=alice, amount=11, idempotency_key=key)
        if settle == "capture":
            ledger.capture(hold_id=hold.hold_id, idempotency_key=key, amount=7)
        elif settle == "release":
            ledger.release(hold_id=hold.hold_id, idempotency_key=key, reason="test")
    vip = ledger.place_hold(account_id=bob, amount=0, list_tokens=19, idempotency_key="vip")
    ledger.capture(hold_id=vip.hold_id, idempotency_key="vip")
    before, balance = _money_rows(app.engine), _balance(app, alice)
    app.close()
    engine = create_engine(database_url)
    try:
        _downgrade(engine, "ledger_0001", "identity_0001", "jobs_0001", "pricing_0001")
        assert _heads(engine) == {"identity_0001", "jobs_0001", "pricing_0001"}
        with engine.connect() as conn:
            assert "starts_at" not in {c["name"] for c in sa.inspect(conn).get_columns("lots")}
        assert _money_rows(engine) == before
    finally:
        engine.dispose()
    app = bootstrap.build(Settings(database_url=database_url))
    try:
        app.upgrade_database()
        assert _money_rows(app.engine) == before
        assert app.accounts.reconcile().ok
        assert _balance(app, alice) == balance
        assert ledger_replays_and_moves(app, alice)
    finally:
        app.close()


def _balance(app: bootstrap.Container, account: str) -> tuple[int, int, list[Any]]:
    """(A started lot's start is not kept below ledger_0004: it makes no difference.)"""
    view = app.accounts.balance(account_id=account)
    return view.available, view.held, [(x.lot_id, x.remaining, x.expires_at) for x in view.lots]


def ledger_replays_and_moves(app: bootstrap.Container, account: str) -> bool:
    again = app.ledger.place_hold(account_id=account, amount=11, idempotency_key="paid")
    hold = app.ledger.place_hold(account_id=account, amount=5, idempotency_key="after")
    taken = app.ledger.capture(hold_id=hold.hold_id, idempotency_key="after")
    return again.replayed and taken.captured == 5 and app.accounts.reconcile().ok


def _plain(reflected: Any) -> str:
    """What the inspector reports, as text to compare (a partial index's condition
    comes back as a clause object, equal to another only by its text)."""
    if isinstance(reflected, dict):
        return "{" + ", ".join(f"{k!r}: {_plain(v)}" for k, v in sorted(reflected.items())) + "}"
    if isinstance(reflected, list | tuple):
        return "[" + ", ".join(_plain(v) for v in reflected) + "]"
    if isinstance(reflected, sa.ClauseElement):
        return repr(str(reflected))
    return repr(reflected)


def _schema(engine: sa.Engine) -> dict[str, dict[str, Any]]:
    """Each table's columns, keys, indexes and foreign keys, as the database reports them."""

    def each(found: list[Any]) -> list[str]:
        return sorted(_plain(item) for item in found)

    with engine.connect() as conn:
        inspector = sa.inspect(conn)
        return {
            table: {
                "columns": [_plain(c) for c in inspector.get_columns(table)],
                "primary_key": _plain(inspector.get_pk_constraint(table)),
                "unique": each(inspector.get_unique_constraints(table)),
                "indexes": each(inspector.get_indexes(table)),
                "foreign_keys": each(inspector.get_foreign_keys(table)),
            }
            for table in inspector.get_table_names()
        }


def test_a_downgrade_to_base_and_back_builds_the_schema_of_a_new_database(
    db_factory: DatabaseFactory,
) -> None:
    """The first revisions once dropped indexes before their tables: on MariaDB an
    index that serves a foreign key cannot go, so the downgrade failed halfway (its
    DDL commits as it goes), a retry failed on the index already gone, and the
    upgrade after it left usage_events without ix_usage_events_created_at."""
    used, new = db_factory.new_url(), db_factory.new_url()
    app = bootstrap.build(Settings(database_url=used))
    app.upgrade_database()
    made = app.identity.create_account(name="acme", actor="test")
    app.plans.subscribe(account_id=made.account_id, plan="monthly")
    app.ledger.grant(account_id=made.account_id, amount=30, source="topup", idempotency_key="g")
    hold = app.ledger.place_hold(account_id=made.account_id, amount=11, idempotency_key="h")
    app.ledger.capture(hold_id=hold.hold_id, idempotency_key="h", amount=7)
    app.close()
    engine = create_engine(used)
    try:
        _downgrade(engine, "base")
        with engine.connect() as conn:
            assert set(sa.inspect(conn).get_table_names()) <= {"alembic_version"}
        assert _heads(engine) == set()
        migrate.upgrade(engine)
        after_downgrade = _schema(engine)
    finally:
        engine.dispose()
    engine = create_engine(new)
    try:
        migrate.upgrade(engine)
        assert "usage_events" in after_downgrade
        assert after_downgrade == _schema(engine)
    finally:
        engine.dispose()


def test_a_downgrade_that_would_change_money_is_refused(database_url: str) -> None:
    """Each of these once went through: a lot granted ahead of its start became
    spendable at once; on MariaDB, keys that differ only in case failed the unique
    index halfway; replaced built-in price books were dropped with their prices."""
    app = bootstrap.build(Settings(database_url=database_url))
    app.upgrade_database()
    acct = app.ledger.open_account(name="ahead")
    app.plans.subscribe(account_id=acct, plan="monthly")
    app.plans.renew(account_id=acct, plan="monthly")  # next month's lot starts later
    for key in ("Order-A", "order-a"):
        app.ledger.grant(account_id=acct, amount=5, source="topup", idempotency_key=key)
    with app.engine.begin() as conn:
        replaced = {"version": "default-0", "document": "{}", "first_used_at": sa.func.now()}
        conn.execute(sa.insert(metadata.tables["builtin_price_books"]).values(**replaced))
    heads = _heads(app.engine)
    app.close()
    engine = create_engine(database_url)
    try:
        with pytest.raises(RuntimeError, match="granted ahead of their start"):
            _downgrade(engine, "ledger_0003")
        with pytest.raises(RuntimeError, match="replaced"):
            _downgrade(engine, "pricing_0001")
        if engine.dialect.name == "mysql":  # DDL commits: it stops at the one refusing
            ledger_0004 = {h for h in heads if not h.startswith("ledger_")} | {"ledger_0004"}
            assert _heads(engine) == ledger_0004
        else:
            assert _heads(engine) == heads  # nothing done
        with engine.begin() as conn:  # (as if next month had begun)
            conn.execute(sa.update(metadata.tables["lots"]).values(starts_at=None))
        if engine.dialect.name == "mysql":
            with pytest.raises(RuntimeError, match="differ only in case"):
                _downgrade(engine, "ledger_0002")
        else:  # bytes are compared either way
            _downgrade(engine, "ledger_0002")
        migrate.upgrade(engine)
        assert _heads(engine) == heads
    finally:
        engine.dispose()


def test_keys_collide_only_within_their_unique_index(database_url: str) -> None:
    """The jobs' unique index is (account, key): the same key in two accounts once
    refused a MariaDB downgrade it would not have broken."""
    engine = create_engine(database_url)
    if engine.dialect.name != "mysql":
        engine.dispose()
        pytest.skip("collations are MariaDB's")
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "CREATE TABLE keyed (account_id VARCHAR(40), idempotency_key VARCHAR(255) "
                "CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin)"
            )
            rows = [("a", "retry-1"), ("b", "retry-1"), ("a", "Retry-2 ")]
            conn.exec_driver_sql("INSERT INTO keyed VALUES (%s, %s)", rows)
            refuse_colliding_keys(conn, "keyed", "utf8mb4_general_ci", scope=["account_id"])
            conn.exec_driver_sql("INSERT INTO keyed VALUES ('a', 'retry-2')")
            with pytest.raises(RuntimeError, match="differ only in case"):
                refuse_colliding_keys(conn, "keyed", "utf8mb4_general_ci", scope=["account_id"])
            with pytest.raises(RuntimeError, match="differ only in case"):
                refuse_colliding_keys(conn, "keyed", "utf8mb4_general_ci")  # "retry-1"
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE IF EXISTS keyed")
        engine.dispose()


def test_times_stored_before_double_precision_read_back_as_written(database_url: str) -> None:
    """MariaDB kept seconds in a 4-byte FLOAT: 0.1 s read back as 0.10000000149 (in the
    report's next bin), and widening the column alone would keep that error."""
    engine = create_engine(database_url)
    try:
        migrate.upgrade(engine)
        command.downgrade(migrate.alembic_config(engine), "jobs_0004")
        account = new_account(engine, "acme")
        store_usage(engine, [Use(account, "colorize.person", "succeeded", 11, 11, 0.1, None, T0)])
        migrate.upgrade(engine)
        with engine.connect() as conn:
            stored = conn.execute(sa.select(usage_events.c.inference_s)).scalar_one()
        assert stored == 0.1 and type(stored) is float
    finally:
        engine.dispose()
