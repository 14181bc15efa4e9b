"""The caller's own money: balance, ledger statement, plans, and subscriptions.

Every route reads the caller's own account; nothing here takes an account id from the
client except ``POST /v1/subscriptions``, which is the operator's. The statement is
the account's admins': it lists every user's holds and every grant, where a user sees
only their own jobs (``/v1/jobs``, ``/v1/usage``).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Query, status

from comfygate.entrypoints.api.deps import (
    AdminDep,
    ContainerDep,
    CursorQuery,
    OperatorDep,
    PrincipalDep,
)
from comfygate.entrypoints.api.schemas import (
    BalanceOut,
    Page,
    PlanOut,
    StatementLineOut,
    SubscribeForIn,
    SubscriptionOut,
)

router = APIRouter(prefix="/v1", tags=["account"])

LimitQuery = Annotated[int, Query(ge=1, le=500, description="page size")]


@router.get("/balance", response_model=BalanceOut, summary="The caller's balance")
def balance(container: ContainerDep, principal: PrincipalDep) -> BalanceOut:
    return BalanceOut.of(container.accounts.balance(account_id=principal.account_id))


def statement_page(
    container: ContainerDep, account_id: str, limit: int, cursor: str | None
) -> Page[StatementLineOut]:
    """A statement page; one extra line is read to know whether another page exists."""
    lines = container.accounts.statement(account_id=account_id, limit=limit + 1, before=cursor)
    items = [StatementLineOut.of(line) for line in lines[:limit]]
    next_cursor = items[-1].txn_id if len(lines) > limit and items else None
    return Page[StatementLineOut](items=items, next_cursor=next_cursor)


@router.get(
    "/ledger",
    response_model=Page[StatementLineOut],
    summary="The caller's account's ledger statement, newest first (admin)",
)
def ledger(
    container: ContainerDep,
    principal: AdminDep,
    cursor: CursorQuery,
    limit: LimitQuery = 50,
) -> Page[StatementLineOut]:
    return statement_page(container, principal.account_id, limit, cursor)


@router.get("/plans", response_model=list[PlanOut], summary="The plan catalog (public)")
def plans(container: ContainerDep) -> list[PlanOut]:
    return [PlanOut(**asdict(plan)) for plan in container.plans.catalog.plans.values()]


@router.post(
    "/subscriptions",
    response_model=SubscriptionOut,
    status_code=status.HTTP_201_CREATED,
    summary="Subscribe an account to a plan (operator; customers buy through orders)",
)
def subscribe(
    body: SubscribeForIn, container: ContainerDep, principal: OperatorDep
) -> SubscriptionOut:
    return subscribe_account(container, principal, body.account_id, body.plan)


def subscribe_account(
    container: ContainerDep, principal: OperatorDep, account_id: str, plan: str
) -> SubscriptionOut:
    """Grant the plan's current period (idempotent per period) and audit it, once per
    period: a replay writes the entry only if a failure lost the first call's."""
    receipt = container.plans.subscribe(account_id=account_id, plan=plan)
    container.audit.record(
        actor=principal,
        action="subscriptions.create",
        target=account_id,
        account_id=account_id,
        details={
            "plan": plan,
            "tokens_granted": receipt.tokens_granted,
            "lot_id": receipt.lot_id,
            "replayed": receipt.replayed,
        },
        once_for=receipt.subscription_id,
    )
    return SubscriptionOut(**asdict(receipt))
