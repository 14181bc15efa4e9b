"""Who is calling: the principal every API request and use case acts as."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    USER = "user"
    """Its own jobs, balance and usage."""
    ADMIN = "admin"
    """Its account: users, keys, usage of every user of the account."""
    OPERATOR = "operator"
    """Everything: accounts, grants, plans, price books, every job."""


@dataclass(frozen=True, slots=True)
class Principal:
    account_id: str
    user_id: str
    role: Role
    key_id: str

    @property
    def is_operator(self) -> bool:
        return self.role is Role.OPERATOR

    def can_see_account(self, account_id: str) -> bool:
        """Operators see every account; everyone else only their own."""
        return self.is_operator or self.account_id == account_id
