"""``Prepared`` writes and reads exactly what SQLAlchemy's own execution would."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa

from comfygate.adapters.db.base import UtcDateTime
from comfygate.adapters.db.engine import create_engine
from comfygate.adapters.db.prepared import Prepared

meta = sa.MetaData()
things = sa.Table(
    "prepared_things",
    meta,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("n", sa.BigInteger, nullable=False),
    sa.Column("at", UtcDateTime, nullable=True),
)
AT = datetime(2026, 11, 28, 1, 2, 3, 456789, tzinfo=UTC)


def test_round_trips_match_sqlalchemy_execution(database_url: str) -> None:
    engine = create_engine(database_url)
    meta.create_all(engine)
    dialect = engine.dialect
    insert = Prepared(things.insert(), dialect, columns=["id", "n", "at"])
    # One name bound twice and a literal (``n > 0``): both must reach the driver.
    bump = Prepared(
        things.update()
        .where(things.c.id == sa.bindparam("b_id"), things.c.n > 0, things.c.n < sa.bindparam("d"))
        .values(n=things.c.n + sa.bindparam("d")),
        dialect,
    )
    select = Prepared(
        sa.select(things.c.id, things.c.n, things.c.at).order_by(things.c.id), dialect
    )
    one = Prepared(sa.select(things.c.n).where(things.c.id == sa.bindparam("id")), dialect)
    try:
        with engine.begin() as conn:
            cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
            cursor.executemany(
                insert.sql,
                [insert.params({"id": "a", "n": 5, "at": AT}), insert.params(
                    {"id": "b", "n": 0, "at": None})],
            )  # fmt: skip
            cursor.execute(bump.sql, bump.params({"b_id": "a", "d": 7}))
            cursor.execute(bump.sql, bump.params({"b_id": "b", "d": 7}))  # n > 0 fails
            cursor.execute(select.sql, select.params({}))
            ours = select.rows(cursor)
            cursor.execute(one.sql, one.params({"id": "a"}))  # a single parameter
            assert one.rows(cursor) == [(12,)]
        with engine.connect() as conn:
            theirs = [tuple(row) for row in conn.execute(sa.select(things).order_by(things.c.id))]
        assert ours == theirs == [("a", 12, AT), ("b", 0, None)]
    finally:
        meta.drop_all(engine)
        engine.dispose()
