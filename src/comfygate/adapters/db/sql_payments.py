"""Orders and applied payment events on SQL."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from comfygate.adapters.db.engine import read_only
from comfygate.adapters.db.tables_payments import orders, payment_events
from comfygate.services.payments import Order, OrderState, PaymentNotice


def _order(row: Any) -> Order:
    return Order(
        id=row.id,
        account_id=row.account_id,
        user_id=row.user_id,
        plan=row.plan,
        provider=row.provider,
        state=OrderState(row.state),
        amount=row.amount,
        currency=row.currency,
        created_at=row.created_at,
        paid_at=row.paid_at,
        provider_ref=row.provider_ref,
        grant=None if row.grant_info is None else json.loads(row.grant_info),
        idempotency_key=row.idempotency_key,
    )


class SqlOrderStore:
    """``OrderStore``: state changes are conditional updates from ``pending``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def insert(self, order: Order) -> bool:
        row = {
            "id": order.id,
            "account_id": order.account_id,
            "user_id": order.user_id,
            "plan": order.plan,
            "provider": order.provider,
            "state": order.state.value,
            "amount": order.amount,
            "currency": order.currency,
            "created_at": order.created_at,
            "idempotency_key": order.idempotency_key,
        }
        try:
            with self.engine.begin() as conn:
                conn.execute(orders.insert(), row)
        except sa.exc.IntegrityError:
            key = order.idempotency_key
            if key is None or self.by_key(order.account_id, key) is None:
                raise  # not the key's doing
            return False  # the account placed an order with this key first
        return True

    def by_key(self, account_id: str, idempotency_key: str) -> Order | None:
        query = sa.select(orders).where(
            orders.c.account_id == account_id, orders.c.idempotency_key == idempotency_key
        )
        with read_only(self.engine.connect()) as conn:
            row = conn.execute(query).first()
        return None if row is None else _order(row)

    def get(self, order_id: str) -> Order | None:
        with read_only(self.engine.connect()) as conn:
            row = conn.execute(sa.select(orders).where(orders.c.id == order_id)).first()
        return None if row is None else _order(row)

    def list(
        self,
        *,
        account_id: str | None,
        state: str | None,
        limit: int,
        before: str | None,
        plan: str | None = None,
        user_id: str | None = None,
    ) -> list[Order]:
        query = sa.select(orders).order_by(orders.c.id.desc()).limit(limit)
        if account_id is not None:
            query = query.where(orders.c.account_id == account_id)
        if user_id is not None:
            query = query.where(orders.c.user_id == user_id)
        if state is not None:
            query = query.where(orders.c.state == state)
        if plan is not None:
            query = query.where(orders.c.plan == plan)
        if before is not None:
            query = query.where(orders.c.id < before)
        with read_only(self.engine.connect()) as conn:
            return [_order(row) for row in conn.execute(query)]

    def settle(self, order: Order) -> bool:
        values = {
            "state": order.state.value,
            "paid_at": order.paid_at,
            "provider_ref": order.provider_ref,
            "grant_info": None if order.grant is None else json.dumps(dict(order.grant)),
        }
        update = (
            orders.update()
            .where(orders.c.id == order.id, orders.c.state == OrderState.PENDING.value)
            .values(**values)
        )
        with self.engine.begin() as conn:
            return conn.execute(update).rowcount == 1

    def record_grant(self, order: Order) -> bool:
        update = _paid_without_grant(order).values(grant_info=json.dumps(dict(order.grant or {})))
        with self.engine.begin() as conn:
            return conn.execute(update).rowcount == 1

    def paid_without_grant(self, limit: int, *, after: str | None = None) -> Sequence[Order]:
        query = sa.select(orders).where(*_PAID_WITHOUT_GRANT).order_by(orders.c.id).limit(limit)
        if after is not None:
            query = query.where(orders.c.id > after)
        with read_only(self.engine.connect()) as conn:
            return [_order(row) for row in conn.execute(query)]

    def record_event(self, notice: PaymentNotice, received_at: datetime) -> bool:
        row = {
            "provider": notice.provider,
            "event_id": notice.event_id,
            "order_id": notice.order_id,
            "status": notice.status[: payment_events.c.status.type.length],  # type: ignore[attr-defined]
            "received_at": received_at,
        }
        try:
            with self.engine.begin() as conn:
                conn.execute(payment_events.insert(), row)
        except sa.exc.IntegrityError:
            return False
        return True


_PAID_WITHOUT_GRANT = (orders.c.state == OrderState.PAID.value, orders.c.grant_info.is_(None))
"""An order paid whose grant is not yet stored."""


def _paid_without_grant(order: Order) -> sa.Update:
    """An update of ``order`` while it is paid but its grant is not yet stored."""
    return orders.update().where(orders.c.id == order.id, *_PAID_WITHOUT_GRANT)
