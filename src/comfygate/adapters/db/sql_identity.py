"""Users, API keys, the account directory and the audit log on SQL."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from comfygate.adapters.db.base import newest_first
from comfygate.adapters.db.engine import read_only
from comfygate.adapters.db.tables_identity import api_keys, audit_log, users
from comfygate.adapters.db.tables_ledger import accounts
from comfygate.services.audit import AuditEntry
from comfygate.services.identity_ports import AccountSummary, ApiKey, User
from comfygate.services.identity_types import Role

INSERT_AUDIT = audit_log.insert()


def audit_row(entry: AuditEntry) -> dict[str, Any]:
    """``entry`` as an ``audit_log`` row (for stores that write it with their action)."""
    return {
        "id": entry.id,
        "at": entry.at,
        "actor": entry.actor,
        "actor_account_id": entry.actor_account_id,
        "action": entry.action,
        "target": entry.target,
        "account_id": entry.account_id,
        "details": json.dumps(dict(entry.details), sort_keys=True, default=str),
    }


def _user(row: Any) -> User:
    return User(row.id, row.account_id, row.name, Role(row.role), row.created_at)


def _key(row: Any) -> ApiKey:
    return ApiKey(
        row.id,
        row.account_id,
        row.user_id,
        Role(row.role),
        row.key_hash,
        row.label,
        row.created_at,
        row.revoked_at,
    )


def _key_row(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "account_id": key.account_id,
        "user_id": key.user_id,
        "role": key.role.value,
        "key_hash": key.key_hash,
        "label": key.label,
        "created_at": key.created_at,
        "revoked_at": key.revoked_at,
    }


class SqlIdentityStore:
    """``IdentityStore`` on a SQLAlchemy engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def insert_user(self, user: User, key: ApiKey | None = None) -> bool:
        row = {
            "id": user.id,
            "account_id": user.account_id,
            "name": user.name,
            "role": user.role.value,
            "created_at": user.created_at,
        }
        try:
            with self.engine.begin() as conn:
                conn.execute(users.insert(), row)
                if key is not None:
                    conn.execute(api_keys.insert(), _key_row(key))
        except sa.exc.IntegrityError:
            if self.user(user.id) is not None:
                return False  # the id is taken: the caller lost a race for a fixed id
            raise
        return True

    def insert_key(self, key: ApiKey) -> None:
        with self.engine.begin() as conn:
            conn.execute(api_keys.insert(), _key_row(key))

    def user(self, user_id: str) -> User | None:
        with read_only(self.engine.connect()) as conn:
            row = conn.execute(sa.select(users).where(users.c.id == user_id)).first()
        return None if row is None else _user(row)

    def users(self, account_id: str) -> list[User]:
        query = sa.select(users).where(users.c.account_id == account_id).order_by(users.c.id)
        with read_only(self.engine.connect()) as conn:
            return [_user(row) for row in conn.execute(query)]

    def key(self, key_id: str) -> ApiKey | None:
        with read_only(self.engine.connect()) as conn:
            row = conn.execute(sa.select(api_keys).where(api_keys.c.id == key_id)).first()
        return None if row is None else _key(row)

    def keys(self, account_id: str) -> list[ApiKey]:
        query = (
            sa.select(api_keys).where(api_keys.c.account_id == account_id).order_by(api_keys.c.id)
        )
        with read_only(self.engine.connect()) as conn:
            return [_key(row) for row in conn.execute(query)]

    def revoke_key(self, key_id: str, at: datetime) -> bool:
        update = (
            api_keys.update()
            .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=at)
        )
        with self.engine.begin() as conn:
            return conn.execute(update).rowcount == 1

    def operator_exists(self) -> bool:
        query = sa.select(users.c.id).where(users.c.role == Role.OPERATOR.value).limit(1)
        with read_only(self.engine.connect()) as conn:
            return conn.execute(query).first() is not None

    def account(self, account_id: str) -> AccountSummary | None:
        query = sa.select(accounts).where(accounts.c.id == account_id)
        with read_only(self.engine.connect()) as conn:
            row = conn.execute(query).first()
        return None if row is None else AccountSummary(row.id, row.name, row.created_at)

    def accounts(self, *, limit: int, after: str | None) -> list[AccountSummary]:
        query = sa.select(accounts).order_by(accounts.c.id).limit(limit)
        if after is not None:
            query = query.where(accounts.c.id > after)
        with read_only(self.engine.connect()) as conn:
            return [AccountSummary(r.id, r.name, r.created_at) for r in conn.execute(query)]


class SqlAuditStore:
    """``AuditStore``: inserts only."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def append(self, entry: AuditEntry) -> None:
        with self.engine.begin() as conn:
            conn.execute(INSERT_AUDIT, audit_row(entry))

    def append_once(self, entry: AuditEntry) -> bool:
        try:
            self.append(entry)
        except sa.exc.IntegrityError:  # the id is the table's only key
            return False
        return True

    def entries(
        self, *, account_id: str | None, limit: int, before: str | None
    ) -> list[AuditEntry]:
        keys = [] if account_id is None else [(audit_log.c.account_id, account_id)]
        query = newest_first(
            sa.select(audit_log), audit_log.c.id, keys, before=before, limit=limit,
            dialect=self.engine.dialect,
        )  # fmt: skip
        with read_only(self.engine.connect()) as conn:
            return [
                AuditEntry(
                    r.id,
                    r.at,
                    r.actor,
                    r.actor_account_id,
                    r.action,
                    r.target,
                    r.account_id,
                    json.loads(r.details),
                )
                for r in conn.execute(query)
            ]
