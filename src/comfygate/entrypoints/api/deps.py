"""FastAPI dependencies: the container, the calling principal, roles, rate limits.

Services are synchronous (SQLAlchemy). Call them from ``def`` routes (FastAPI runs
those in its threadpool) or through ``anyio.to_thread.run_sync`` from ``async`` ones.

``get_principal`` authenticates ``Authorization: Bearer <api key>`` (401
``unauthenticated`` when missing, unknown or revoked) and then takes one request from
the key's rate-limit bucket (429 ``rate_limited`` with ``Retry-After``). A verified key
is served from the identity service's short cache without leaving the event loop;
only a miss goes to the database, in a worker thread.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import anyio.to_thread
from fastapi import Depends, Query, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from comfygate.bootstrap import Container
from comfygate.domain.errors import (
    AccountNotFoundError,
    AuthenticationError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
)
from comfygate.services.identity_types import Principal, Role

T = TypeVar("T")

bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="An API key: `Authorization: Bearer cg_...`",
)


def get_container(request: Request) -> Container:
    """The process's container, set by ``create_app`` (a plain function: call it)."""
    container: Container = request.app.state.container
    return container


async def _container_dependency(request: Request) -> Container:
    # async on purpose: FastAPI runs a sync dependency in its threadpool, a thread hop
    # (and a GIL hand-off) per request for a dictionary lookup.
    return get_container(request)


async def get_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)],
) -> Principal:
    """The caller, authenticated and within its rate limit."""
    if credentials is None or not credentials.credentials:
        raise AuthenticationError("missing API key (Authorization: Bearer ...)")
    container = get_container(request)
    api_key = credentials.credentials
    principal = container.identity.authenticate_cached(api_key)
    if principal is None:
        principal = await anyio.to_thread.run_sync(container.identity.authenticate, api_key)
    request.state.principal = principal  # the access log names the key
    try:
        await container.rate_limiter.acquire(principal.key_id)
    except RateLimitedError:
        container.metrics.rate_limited.inc()
        raise
    return principal


async def run_on_hot_path(request: Request, fn: Callable[[], T]) -> T:
    """``fn()`` on the container's ``SerialWorker``: for the blocking part of a quote
    or a submission, cheaper under load than a thread-pool hand-off (see
    ``adapters.serial``)."""
    return await get_container(request).serial.run(fn)


def require_role(*roles: Role) -> Callable[..., Awaitable[Principal]]:
    """A dependency admitting only principals whose role is one of ``roles``."""
    allowed = frozenset(roles)

    async def dependency(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
        if principal.role not in allowed:
            wanted = " or ".join(sorted(r.value for r in allowed))
            raise PermissionDeniedError(f"this needs the {wanted} role")
        return principal

    return dependency


def ensure_visible(principal: Principal, account_id: str, *, what: str = "resource") -> None:
    """404 (never 403) unless the principal may see ``account_id``'s data."""
    if not principal.can_see_account(account_id):
        raise NotFoundError(f"no such {what}")


def _cursor(
    cursor: Annotated[
        str | None,
        Query(
            max_length=64,
            pattern=r"^([a-z]+_[0-9a-z_]+)?$",
            description="the previous page's next_cursor (empty: the first page)",
        ),
    ] = None,
) -> str | None:
    """A list's cursor: an id, as a previous page gave it. Anything else is
    ``invalid_input`` (it was a silently empty page); an empty one is the first page."""
    return cursor or None


def check_account_filter(
    container: Container, principal: Principal, account_id: str | None
) -> None:
    """A list's ``account_id`` filter names an account the caller may see, and that
    exists: another account's data does not exist for the caller, so both are
    ``account_not_found`` (an operator's list of an unknown account was an empty page,
    an admin's of another account was its own entries)."""
    if account_id is None:
        return
    if not principal.can_see_account(account_id):
        raise AccountNotFoundError(f"no account {account_id}", account_id=account_id)
    container.accounts.require(account_id)


ContainerDep = Annotated[Container, Depends(_container_dependency)]
CursorQuery = Annotated[str | None, Depends(_cursor)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
AdminDep = Annotated[Principal, Depends(require_role(Role.ADMIN, Role.OPERATOR))]
OperatorDep = Annotated[Principal, Depends(require_role(Role.OPERATOR))]
