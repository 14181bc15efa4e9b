"""Request and response bodies of the account, payment and admin routes (OpenAPI).

Tokens are integers; times are ISO-8601 UTC; decimal amounts are strings. Converters
from service records live next to the models they fill.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from comfygate.services.accounts import BalanceView, LotView
from comfygate.services.identity_ports import ApiKey, IssuedKey, User
from comfygate.services.identity_types import Role
from comfygate.services.ledger_ports import StatementLine
from comfygate.services.payments import Order

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    """A page of items, newest first; pass ``next_cursor`` as ``cursor`` for the next."""

    items: list[T]
    next_cursor: str | None = None


class LotOut(BaseModel):
    lot_id: str
    source: str
    amount: int
    remaining: int
    held: int
    expires_at: datetime | None
    expired: bool
    starts_at: datetime | None
    started: bool

    @classmethod
    def of(cls, lot: LotView) -> LotOut:
        return cls(**{name: getattr(lot, name) for name in cls.model_fields})


class BalanceOut(BaseModel):
    account_id: str
    available: int
    held: int
    unlimited: bool
    unlimited_until: datetime | None
    lots: list[LotOut]

    @classmethod
    def of(cls, view: BalanceView) -> BalanceOut:
        return cls(
            account_id=view.account_id,
            available=view.available,
            held=view.held,
            unlimited=view.unlimited,
            unlimited_until=view.unlimited_until,
            lots=[LotOut.of(lot) for lot in view.lots],
        )


class StatementLineOut(BaseModel):
    txn_id: str
    kind: str
    created_at: datetime
    available_delta: int
    held_delta: int
    hold_id: str | None
    memo: dict[str, Any]

    @classmethod
    def of(cls, line: StatementLine) -> StatementLineOut:
        return cls(**{name: getattr(line, name) for name in cls.model_fields})


class PlanOut(BaseModel):
    name: str
    title: str
    kind: str
    tokens: int
    period: str | None
    valid_days: int | None
    max_concurrent_jobs: int | None
    price: str


class SubscribeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    plan: str


class SubscribeForIn(SubscribeIn):
    account_id: str


class SubscriptionOut(BaseModel):
    account_id: str
    plan: str
    kind: str
    period_start: datetime
    period_end: datetime
    tokens_granted: int
    lot_id: str | None
    unlimited: bool
    replayed: bool = False
    subscription_id: str | None = None


class OrderIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    plan: str
    provider: str = "manual"


class OrderOut(BaseModel):
    id: str
    account_id: str
    user_id: str
    plan: str
    provider: str
    state: str
    amount: str
    currency: str
    created_at: datetime
    paid_at: datetime | None
    provider_ref: str | None
    grant: dict[str, Any] | None

    @classmethod
    def of(cls, order: Order) -> OrderOut:
        return cls(
            id=order.id,
            account_id=order.account_id,
            user_id=order.user_id,
            plan=order.plan,
            provider=order.provider,
            state=order.state.value,
            amount=order.amount,
            currency=order.currency,
            created_at=order.created_at,
            paid_at=order.paid_at,
            provider_ref=order.provider_ref,
            grant=None if order.grant is None else dict(order.grant),
        )


class UserIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    role: Role = Role.USER


class UserOut(BaseModel):
    id: str
    account_id: str
    name: str
    role: Role
    created_at: datetime

    @classmethod
    def of(cls, user: User) -> UserOut:
        return cls(**{name: getattr(user, name) for name in cls.model_fields})


class KeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Role | None = None
    user_id: str | None = None
    label: str = Field(default="", max_length=200)


class IssuedKeyOut(BaseModel):
    """The plaintext ``api_key`` is shown in this response only."""

    key_id: str
    api_key: str
    account_id: str
    user_id: str
    role: Role
    created_at: datetime

    @classmethod
    def of(cls, key: IssuedKey) -> IssuedKeyOut:
        return cls(**{name: getattr(key, name) for name in cls.model_fields})


class KeyOut(BaseModel):
    key_id: str
    account_id: str
    user_id: str
    role: Role
    label: str
    created_at: datetime
    revoked_at: datetime | None

    @classmethod
    def of(cls, key: ApiKey) -> KeyOut:
        return cls(
            key_id=key.id,
            account_id=key.account_id,
            user_id=key.user_id,
            role=key.role,
            label=key.label,
            created_at=key.created_at,
            revoked_at=key.revoked_at,
        )


class AccountIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    admin_name: str = Field(default="admin", min_length=1, max_length=200)


class NewAccountOut(BaseModel):
    account_id: str
    name: str
    user: UserOut
    api_key: str
    key_id: str


class AccountOut(BaseModel):
    id: str
    name: str
    created_at: datetime
    balance: BalanceOut | None = None


class GrantIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tokens: int = Field(gt=0)
    source: str = "promotion"
    expires_at: datetime | None = None
    priority: int = 0
    idempotency_key: str | None = Field(default=None, max_length=200)


class GrantOut(BaseModel):
    txn_id: str
    lot_id: str
    account_id: str
    amount: int
    source: str
    expires_at: str | None
    replayed: bool


class AuditEntryOut(BaseModel):
    id: str
    at: datetime
    actor: str
    actor_account_id: str | None
    action: str
    target: str
    account_id: str | None
    details: dict[str, Any]
