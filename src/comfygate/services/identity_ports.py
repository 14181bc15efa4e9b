"""Records and the storage port of identity: users, API keys, the account directory."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from comfygate.services.identity_types import Role


@dataclass(frozen=True, slots=True)
class User:
    id: str
    account_id: str
    name: str
    role: Role
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A stored key: only the hash of its secret, never the secret."""

    id: str
    account_id: str
    user_id: str
    role: Role
    key_hash: str
    label: str
    created_at: datetime
    revoked_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A key just created: ``api_key`` is the plaintext, shown this once."""

    key_id: str
    api_key: str
    account_id: str
    user_id: str
    role: Role
    created_at: datetime


@dataclass(frozen=True, slots=True)
class AccountSummary:
    id: str
    name: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class NewAccount:
    """An account with its first (admin) user and that user's key."""

    account_id: str
    name: str
    user: User
    key: IssuedKey


class IdentityStore(Protocol):
    def insert_user(self, user: User, key: ApiKey | None = None) -> bool:
        """Insert the user (and a first key) atomically; False if the user id exists."""
        ...

    def insert_key(self, key: ApiKey) -> None: ...

    def user(self, user_id: str) -> User | None: ...

    def users(self, account_id: str) -> list[User]: ...

    def key(self, key_id: str) -> ApiKey | None: ...

    def keys(self, account_id: str) -> list[ApiKey]: ...

    def revoke_key(self, key_id: str, at: datetime) -> bool:
        """Mark the key revoked; False if it was revoked already."""
        ...

    def operator_exists(self) -> bool: ...

    def account(self, account_id: str) -> AccountSummary | None: ...

    def accounts(self, *, limit: int, after: str | None) -> list[AccountSummary]:
        """Ordered by id; ``after`` is the last id of the previous page."""
        ...
