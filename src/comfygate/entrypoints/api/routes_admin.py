"""Operator and account-admin routes: accounts, users, keys, grants, subscriptions,
audit entries and minimal reports. (Price books: ``routes_price_books``.)

Operators may do everything; an account admin manages users and keys of its own
account only (another account is 404, as if it did not exist). Every money or admin
action writes an audit entry — the identity service audits its own changes; grants
and subscriptions are audited here.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, status

from comfygate.domain.errors import InvalidInputError
from comfygate.entrypoints.api.deps import (
    AdminDep,
    ContainerDep,
    CursorQuery,
    OperatorDep,
    PrincipalDep,
    check_account_filter,
)
from comfygate.entrypoints.api.routes_account import statement_page, subscribe_account
from comfygate.entrypoints.api.schemas import (
    AccountIn,
    AccountOut,
    AuditEntryOut,
    BalanceOut,
    GrantIn,
    GrantOut,
    IssuedKeyOut,
    KeyIn,
    KeyOut,
    NewAccountOut,
    Page,
    StatementLineOut,
    SubscribeIn,
    SubscriptionOut,
    UserIn,
    UserOut,
)

router = APIRouter(prefix="/v1/admin", tags=["admin"])

LimitQuery = Annotated[int, Query(ge=1, le=500)]


@router.post(
    "/accounts",
    response_model=NewAccountOut,
    status_code=status.HTTP_201_CREATED,
    summary="Open an account with a first admin user; its API key is shown once (operator)",
)
def create_account(
    body: AccountIn, container: ContainerDep, principal: OperatorDep
) -> NewAccountOut:
    made = container.identity.create_account(
        name=body.name, admin_name=body.admin_name, actor=principal
    )
    return NewAccountOut(
        account_id=made.account_id,
        name=made.name,
        user=UserOut.of(made.user),
        api_key=made.key.api_key,
        key_id=made.key.key_id,
    )


@router.get("/accounts", response_model=Page[AccountOut], summary="Every account (operator)")
def list_accounts(
    container: ContainerDep,
    principal: OperatorDep,
    cursor: CursorQuery,
    limit: LimitQuery = 100,
) -> Page[AccountOut]:
    found = container.identity.accounts(actor=principal, limit=limit + 1, after=cursor)
    items = [AccountOut(id=a.id, name=a.name, created_at=a.created_at) for a in found[:limit]]
    next_cursor = items[-1].id if len(found) > limit and items else None
    return Page[AccountOut](items=items, next_cursor=next_cursor)


@router.get(
    "/accounts/{account_id}", response_model=AccountOut, summary="An account and its balance"
)
def get_account(account_id: str, container: ContainerDep, principal: AdminDep) -> AccountOut:
    summary = container.identity.account(account_id=account_id, actor=principal)
    balance = BalanceOut.of(container.accounts.balance(account_id=account_id))
    return AccountOut(
        id=summary.id, name=summary.name, created_at=summary.created_at, balance=balance
    )


@router.get(
    "/accounts/{account_id}/ledger",
    response_model=Page[StatementLineOut],
    summary="An account's ledger statement",
)
def account_ledger(
    account_id: str,
    container: ContainerDep,
    principal: AdminDep,
    cursor: CursorQuery,
    limit: LimitQuery = 50,
) -> Page[StatementLineOut]:
    container.identity.account(account_id=account_id, actor=principal)  # 404 if foreign
    return statement_page(container, account_id, limit, cursor)


@router.post(
    "/accounts/{account_id}/users",
    response_model=UserOut,
    status_code=status.HTTP_201_CREATED,
    summary="Add a user to an account",
)
def create_user(
    account_id: str, body: UserIn, container: ContainerDep, principal: AdminDep
) -> UserOut:
    user = container.identity.create_user(
        account_id=account_id, name=body.name, role=body.role, actor=principal
    )
    return UserOut.of(user)


@router.get(
    "/accounts/{account_id}/users", response_model=list[UserOut], summary="An account's users"
)
def list_users(account_id: str, container: ContainerDep, principal: AdminDep) -> list[UserOut]:
    return [UserOut.of(u) for u in container.identity.users(account_id=account_id, actor=principal)]


@router.post(
    "/accounts/{account_id}/keys",
    response_model=IssuedKeyOut,
    status_code=status.HTTP_201_CREATED,
    summary="Issue an API key (shown once); without user_id a new user is made for it",
)
def create_key(
    account_id: str, body: KeyIn, container: ContainerDep, principal: AdminDep
) -> IssuedKeyOut:
    issued = container.identity.create_key(
        account_id=account_id,
        actor=principal,
        role=body.role,
        user_id=body.user_id,
        label=body.label,
    )
    return IssuedKeyOut.of(issued)


@router.get(
    "/accounts/{account_id}/keys",
    response_model=list[KeyOut],
    summary="An account's keys (no secrets)",
)
def list_keys(account_id: str, container: ContainerDep, principal: AdminDep) -> list[KeyOut]:
    return [KeyOut.of(k) for k in container.identity.keys(account_id=account_id, actor=principal)]


@router.delete("/keys/{key_id}", response_model=KeyOut, summary="Revoke a key (users: their own)")
def revoke_key(key_id: str, container: ContainerDep, principal: PrincipalDep) -> KeyOut:
    return KeyOut.of(container.identity.revoke_key(key_id=key_id, actor=principal))


@router.post(
    "/accounts/{account_id}/grants",
    response_model=GrantOut,
    status_code=status.HTTP_201_CREATED,
    summary="Grant tokens as a new lot (operator; idempotent by Idempotency-Key)",
)
def grant(
    account_id: str,
    body: GrantIn,
    container: ContainerDep,
    principal: OperatorDep,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> GrantOut:
    key = body.idempotency_key or idempotency_key
    if not key:  # a retry without one would grant again
        raise InvalidInputError(
            "a grant needs an Idempotency-Key header (or idempotency_key): a retry with the "
            "same key grants once",
            field="idempotency_key",
        )
    receipt = container.ledger.grant(
        account_id=account_id,
        amount=body.tokens,
        source=body.source,
        expires_at=body.expires_at,
        priority=body.priority,
        idempotency_key=key,
        memo={"by": principal.user_id},
    )
    container.audit.record(  # once per lot: a retry writes the entry a failure lost
        actor=principal,
        action="ledger.grant",
        target=account_id,
        account_id=account_id,
        details={"tokens": body.tokens, "source": body.source, "lot_id": receipt.lot_id},
        once_for=receipt.lot_id,
    )
    return GrantOut(**{name: getattr(receipt, name) for name in GrantOut.model_fields})


@router.post(
    "/accounts/{account_id}/subscriptions",
    response_model=SubscriptionOut,
    status_code=status.HTTP_201_CREATED,
    summary="Subscribe the account to a plan (operator; idempotent per period)",
)
def subscribe(
    account_id: str, body: SubscribeIn, container: ContainerDep, principal: OperatorDep
) -> SubscriptionOut:
    return subscribe_account(container, principal, account_id, body.plan)


@router.get(
    "/audit", response_model=Page[AuditEntryOut], summary="Audit entries (admins: own account)"
)
def audit(
    container: ContainerDep,
    principal: AdminDep,
    cursor: CursorQuery,
    account_id: Annotated[str | None, Query(max_length=40)] = None,
    limit: LimitQuery = 100,
) -> Page[AuditEntryOut]:
    check_account_filter(container, principal, account_id)
    scope = account_id if principal.is_operator else principal.account_id
    entries = container.audit.entries(account_id=scope, limit=limit + 1, before=cursor)
    items = [
        AuditEntryOut(**{f: getattr(e, f) for f in AuditEntryOut.model_fields})
        for e in entries[:limit]
    ]
    next_cursor = items[-1].id if len(entries) > limit and items else None
    return Page[AuditEntryOut](items=items, next_cursor=next_cursor)


@router.get("/reports/ledger", summary="Ledger totals and the reconcile check (operator)")
def ledger_report(container: ContainerDep, principal: OperatorDep) -> dict[str, object]:
    report = container.accounts.reconcile()
    return {
        "ok": report.ok,
        "book_totals": report.book_totals,
        "drifts": [
            {"account_id": d.account_id, "what": d.what, "cached": d.cached, "derived": d.derived}
            for d in report.drifts
        ],
    }
