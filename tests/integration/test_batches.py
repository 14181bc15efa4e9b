"""How the ledger's statements reach each driver, and what a failure leaves behind."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
import sqlalchemy as sa

from comfygate.adapters.db import batches
from comfygate.adapters.db.prepared import Prepared
from comfygate.adapters.db.sql_ledger import _Kept
from comfygate.adapters.db.tables_ledger import ledger_transactions
from comfygate.bootstrap import Container
from comfygate.domain.errors import InvalidInputError

# Server-prepared statements are PostgreSQL's: these run on it alone.
POSTGRESQL_ONLY = pytest.mark.parametrize("db_factory", ["postgresql"], indirect=True)


def test_a_failed_commit_leaves_the_pooled_connection_as_it_was(container: Container) -> None:
    c = container
    acct = c.ledger.open_account(name="pool")
    c.ledger.grant(account_id=acct, amount=50, source="topup", idempotency_key="g")
    c.ledger.place_hold(account_id=acct, amount=5, idempotency_key="h")
    # The replay's first attempt fails at commit on the journal's unique key.
    assert c.ledger.place_hold(account_id=acct, amount=5, idempotency_key="h").replayed
    c.ledger_store.close()  # the store gives back the connection it kept
    with c.engine.connect() as conn:  # the same pooled connection, the pool's way
        if conn.dialect.name == "postgresql":  # ScriptBatches switched it, and back
            assert conn.connection.driver_connection.autocommit is False  # type: ignore[union-attr]
        conn.execute(sa.text("SELECT 1"))
        assert conn.in_transaction()
    assert c.ledger.place_hold(account_id=acct, amount=5, idempotency_key="h2").amount == 5
    assert c.accounts.balance(account_id=acct).held == 10


@POSTGRESQL_ONLY
def test_statements_already_prepared_on_a_session_are_not_prepared_again(
    container: Container,
) -> None:
    """A process that forgot what it prepared (or a second store on the same engine)
    finds the statements on the server instead of failing on ``PREPARE``."""
    c = container
    acct = c.ledger.open_account(name="prepared")
    c.ledger.grant(account_id=acct, amount=50, source="topup", idempotency_key="g")
    c.ledger_store.close()  # the next movement sets up batches on a pooled connection
    batches._prepared_on.clear()
    c.ledger.place_hold(account_id=acct, amount=5, idempotency_key="h")
    c.ledger_store.close()
    with c.engine.connect() as conn:
        names = conn.execute(sa.text("SELECT name FROM pg_prepared_statements")).scalars()
        ours = [name for name in names if name.startswith("comfygate_")]
    assert len(ours) == len(set(ours)) > 5


def _ours_on_the_session(conn: sa.Connection) -> set[str]:
    names = conn.execute(sa.text("SELECT name FROM pg_prepared_statements")).scalars()
    return {name for name in names if name.startswith("comfygate_")}


@POSTGRESQL_ONLY
def test_statements_survive_other_work_on_the_connection_and_come_back_if_dropped(
    container: Container,
) -> None:
    """psycopg, left to itself, prepares a query run five times and answers every
    ROLLBACK with DEALLOCATE ALL; and anyone may DEALLOCATE ALL on a session."""
    c = container
    acct = c.ledger.open_account(name="dropped")
    c.ledger.grant(account_id=acct, amount=50, source="topup", idempotency_key="g")
    c.ledger_store.close()
    with c.engine.connect() as conn:  # the one pooled connection, used the usual way
        for _ in range(8):
            conn.execute(sa.text("SELECT count(*) FROM balances")).scalar()
        conn.rollback()
        assert len(_ours_on_the_session(conn)) > 5
        conn.execute(sa.text("DEALLOCATE ALL"))
        conn.commit()
        assert _ours_on_the_session(conn) == set()
    assert c.ledger.place_hold(account_id=acct, amount=5, idempotency_key="h").amount == 5
    c.ledger_store.close()
    with c.engine.connect() as conn:
        assert len(_ours_on_the_session(conn)) > 5
    assert c.accounts.balance(account_id=acct).held == 5


def _checked_out(c: Container) -> int:
    return c.engine.pool.checkedout()  # type: ignore[attr-defined, no-any-return]


def test_the_store_keeps_its_connection_between_movements_and_gives_it_back(
    container: Container,
) -> None:
    c = container
    acct = c.ledger.open_account(name="kept")
    c.ledger.grant(account_id=acct, amount=50, source="topup", idempotency_key="g")
    c.ledger.place_hold(account_id=acct, amount=5, idempotency_key="h")
    assert _checked_out(c) == 1  # kept for the next movement
    c.ledger_store.close()
    assert _checked_out(c) == 0


@pytest.mark.parametrize("db_factory", ["sqlite", "mariadb"], indirect=True)
def test_sequential_batches_keep_one_cursor_and_close_it_when_released(
    container: Container,
) -> None:
    c = container
    pooled = c.engine.raw_connection()
    try:
        made = batches.batches_for(pooled.driver_connection, c.engine.dialect, [])
        assert isinstance(made, batches.SequentialBatches)
        one = Prepared(sa.select(sa.literal_column("1")), c.engine.dialect)
        assert made.read([], [(one, {})]) == [(1,)]
        cursor = made._cursor
        assert made.read([], [(one, {})]) == [(1,)]
        assert made._cursor is cursor
        made.close()
        made.release()
        with pytest.raises(c.engine.dialect.loaded_dbapi.Error):
            cursor.execute(one.sql)
    finally:
        pooled.close()


def test_a_connection_older_than_the_recycle_age_goes_back_to_the_pool(
    container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = container
    acct = c.ledger.open_account(name="recycled")
    monkeypatch.setattr(type(c.ledger_store), "RECYCLE_S", 0.0)
    c.ledger.grant(account_id=acct, amount=50, source="topup", idempotency_key="g")
    assert _checked_out(c) == 0
    assert c.accounts.balance(account_id=acct).available == 50


def test_a_connection_kept_idle_past_the_recycle_age_is_not_used_again(
    container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = container
    acct = c.ledger.open_account(name="idle")
    c.ledger.grant(account_id=acct, amount=50, source="topup", idempotency_key="g")
    (kept,) = c.ledger_store._idle
    monkeypatch.setattr(kept, "since", kept.since - type(c.ledger_store).RECYCLE_S - 1)
    c.ledger.place_hold(account_id=acct, amount=5, idempotency_key="h")
    (now_kept,) = c.ledger_store._idle  # through the pool again, which checks its age
    assert now_kept is not kept
    assert _checked_out(c) == 1


def _end_other_sessions(c: Container) -> None:
    with c.engine.connect() as conn:
        conn.execute(
            sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )


class _GoneBatches:
    """Batches on a connection that cannot be reset any more."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def release(self) -> None:
        raise self.error


def test_closing_the_store_drops_a_kept_connection_it_cannot_reset(
    container: Container,
) -> None:
    c = container
    pooled = c.engine.raw_connection()
    gone = _GoneBatches(c.engine.dialect.loaded_dbapi.OperationalError("server closed"))
    c.ledger_store._idle.append(_Kept(pooled, gone))  # type: ignore[arg-type]
    c.ledger_store.close()  # does not raise: the connection is invalidated
    assert _checked_out(c) == 0
    assert pooled.dbapi_connection is None  # invalidated, not given back to the pool


@POSTGRESQL_ONLY
def test_a_kept_connection_that_died_is_dropped_and_the_next_movement_works(
    container: Container,
) -> None:
    """The server ended the session of the kept connection (a restart, a failover):
    the movement on it fails, nothing moves, and the store does not keep it."""
    c = container
    acct = c.ledger.open_account(name="died")
    c.ledger.grant(account_id=acct, amount=50, source="topup", idempotency_key="g")
    _end_other_sessions(c)
    with pytest.raises(sa.exc.DBAPIError):
        c.ledger.place_hold(account_id=acct, amount=5, idempotency_key="h")
    assert _checked_out(c) == 0  # invalidated, not kept
    assert c.ledger.place_hold(account_id=acct, amount=5, idempotency_key="h").amount == 5
    assert c.accounts.balance(account_id=acct).held == 5


AWKWARD = [
    "it's",
    "back\\slash\\",
    'say "hi"',
    "%s %(x)s $1 ?",
    "'); DROP TABLE balances; --",
    "naïve ☕ 日本語",
    "E'\\x41'",
]


@pytest.mark.parametrize("text", AWKWARD)
def test_strings_that_need_quoting_are_stored_as_given(container: Container, text: str) -> None:
    """Keys and memos reach the database as literals on PostgreSQL (``ScriptBatches``):
    whatever they hold comes back unchanged, on every backend."""
    c = container
    acct = c.ledger.open_account(name="quotes")
    c.ledger.grant(account_id=acct, amount=50, source="topup", idempotency_key=text)
    hold = c.ledger.place_hold(account_id=acct, amount=5, idempotency_key=text)
    again = c.ledger.place_hold(account_id=acct, amount=5, idempotency_key=text)
    assert again.replayed and again.hold_id == hold.hold_id
    c.ledger.release(hold_id=hold.hold_id, idempotency_key=text, reason=text)
    lines = c.accounts.statement(account_id=acct)
    assert lines[0].memo == {"reason": text}
    assert c.accounts.balance(account_id=acct).available == 50


def test_memos_of_any_json_shape_come_back_and_old_spaced_json_still_reads(
    container: Container,
) -> None:
    """The journal's JSON is orjson's compact form; keys that are not strings become
    strings and other types their text, as ``json.dumps(default=str)`` did. Rows
    written by the earlier encoder, with spaces, read back the same."""
    c = container
    acct = c.ledger.open_account(name="memos")
    at = datetime(2026, 11, 28, 5, 6, 7, tzinfo=UTC)
    memo = {"n": 1, 2: [None, True, 1.5], "when": at, "price": Decimal("1.10"), "t": "日本"}
    c.ledger.grant(account_id=acct, amount=5, source="topup", idempotency_key="m", memo=memo)
    (line,) = c.accounts.statement(account_id=acct)
    when = line.memo.pop("when")
    assert datetime.fromisoformat(when) == at
    assert line.memo == {"n": 1, "2": [None, True, 1.5], "price": "1.10", "t": "日本"}
    with c.engine.begin() as conn:
        conn.execute(sa.update(ledger_transactions).values(memo='{"a": [1, 2], "b": "x"}'))
    assert c.accounts.statement(account_id=acct)[0].memo == {"a": [1, 2], "b": "x"}


def _script_batches(c: Container) -> tuple[batches.ScriptBatches, sa.PoolProxiedConnection]:
    pooled = c.engine.raw_connection()
    return batches.ScriptBatches(pooled.driver_connection, []), pooled


@POSTGRESQL_ONLY
def test_literals_read_back_as_the_values_they_render(container: Container) -> None:
    values = [
        None, 0, -11, 10**15, True, *AWKWARD,
        datetime(2026, 11, 28, 2, 21, 27, 385025), Decimal("1.50"), date(2026, 1, 2),
    ]  # fmt: skip
    script, pooled = _script_batches(container)
    try:
        cursor = pooled.driver_connection.cursor()  # type: ignore[union-attr]
        for value in values:
            literal = script._literal(value)
            cursor.execute(b"SELECT " + literal)
            assert cursor.fetchone() == (value,), literal
    finally:
        script.release()
        pooled.close()


@POSTGRESQL_ONLY
def test_a_string_with_a_nul_byte_is_refused_and_moves_nothing(container: Container) -> None:
    """libpq would cut the script at the NUL; psycopg refuses such text, and so do we."""
    c = container
    acct = c.ledger.open_account(name="nul")
    c.ledger.grant(account_id=acct, amount=50, source="topup", idempotency_key="g")
    with pytest.raises(sa.exc.DataError, match="NUL"):  # the lock's read: the account id
        c.ledger.place_hold(account_id=acct + "\x00", amount=5, idempotency_key="k")
    with pytest.raises(InvalidInputError, match="NUL"):  # a key: refused on every backend
        c.ledger.place_hold(account_id=acct, amount=5, idempotency_key="a\x00b")
    balance = c.accounts.balance(account_id=acct)
    assert (balance.available, balance.held) == (50, 0)
