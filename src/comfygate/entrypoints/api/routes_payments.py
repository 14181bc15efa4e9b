"""Orders and payments: buy a plan, a provider's signed webhook, operator confirmation.

``POST /v1/orders`` makes a pending order. With the ``manual`` provider an operator
confirms it (``POST /v1/admin/orders/{id}/confirm``) once the money has arrived; a
provider with a webhook secret confirms it itself through
``POST /v1/payments/{provider}/webhook`` (no API key: the HMAC signature is the
authentication). Either way the plan is granted once.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, status

from comfygate.entrypoints.api.deps import ContainerDep, CursorQuery, OperatorDep, PrincipalDep
from comfygate.entrypoints.api.schemas import OrderIn, OrderOut, Page
from comfygate.services.identity_types import Role

router = APIRouter(tags=["orders"])

LimitQuery = Annotated[int, Query(ge=1, le=500)]
StateQuery = Annotated[str | None, Query(description="pending, paid or canceled")]


def _page(orders: list[OrderOut], limit: int) -> Page[OrderOut]:
    items = orders[:limit]
    next_cursor = items[-1].id if len(orders) > limit and items else None
    return Page[OrderOut](items=items, next_cursor=next_cursor)


@router.post(
    "/v1/orders",
    response_model=OrderOut,
    status_code=status.HTTP_201_CREATED,
    summary="Order a plan (pending until paid)",
)
def create_order(
    body: OrderIn,
    container: ContainerDep,
    principal: PrincipalDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=200,
            description="a retry with the same key answers the first order",
        ),
    ] = None,
) -> OrderOut:
    order = container.payments.create_order(
        actor=principal, plan=body.plan, provider=body.provider, idempotency_key=idempotency_key
    )
    return OrderOut.of(order)


@router.get(
    "/v1/orders",
    response_model=Page[OrderOut],
    summary="The caller's account's orders (a user key: the user's own)",
)
def list_orders(
    container: ContainerDep,
    principal: PrincipalDep,
    cursor: CursorQuery,
    state: StateQuery = None,
    limit: LimitQuery = 50,
) -> Page[OrderOut]:
    orders = container.payments.orders(
        account_id=principal.account_id,
        user_id=principal.user_id if principal.role is Role.USER else None,  # their own
        state=state,
        limit=limit + 1,
        before=cursor,
    )
    return _page([OrderOut.of(o) for o in orders], limit)


@router.get("/v1/orders/{order_id}", response_model=OrderOut, summary="One order")
def get_order(order_id: str, container: ContainerDep, principal: PrincipalDep) -> OrderOut:
    return OrderOut.of(container.payments.order(order_id=order_id, actor=principal))


@router.post(
    "/v1/orders/{order_id}/cancel", response_model=OrderOut, summary="Cancel a pending order"
)
def cancel_order(order_id: str, container: ContainerDep, principal: PrincipalDep) -> OrderOut:
    return OrderOut.of(container.payments.cancel(order_id=order_id, actor=principal))


@router.post(
    "/v1/payments/{provider}/webhook",
    response_model=OrderOut,
    summary="A payment provider's signed notice (HMAC; no API key)",
)
async def payment_webhook(provider: str, request: Request, container: ContainerDep) -> OrderOut:
    import anyio.to_thread

    body = await request.body()
    headers = dict(request.headers)
    order = await anyio.to_thread.run_sync(
        lambda: container.payments.handle_webhook(provider=provider, body=body, headers=headers)
    )
    return OrderOut.of(order)


@router.get(
    "/v1/admin/orders", response_model=Page[OrderOut], summary="Orders of every account (operator)"
)
def admin_orders(
    container: ContainerDep,
    principal: OperatorDep,
    cursor: CursorQuery,
    state: StateQuery = None,
    limit: LimitQuery = 50,
) -> Page[OrderOut]:
    orders = container.payments.orders(account_id=None, state=state, limit=limit + 1, before=cursor)
    return _page([OrderOut.of(o) for o in orders], limit)


@router.post(
    "/v1/admin/orders/{order_id}/confirm",
    response_model=OrderOut,
    summary="Confirm a manual payment: grants the plan (operator; idempotent)",
)
def confirm_order(order_id: str, container: ContainerDep, principal: OperatorDep) -> OrderOut:
    return OrderOut.of(container.payments.confirm(order_id=order_id, actor=principal))
