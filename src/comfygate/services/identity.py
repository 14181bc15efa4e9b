"""Accounts, users and API keys: create, authenticate, revoke, and who may do what.

API keys look like ``cg_<key_id>.<secret>``: the key id finds the row, the secret is
``secrets.token_urlsafe(32)`` (256 random bits) and only ``sha256(key)`` is stored. A
fast hash is enough here because the secret is not a password: slow hashes (bcrypt,
argon2) protect low-entropy secrets from guessing, and nobody can enumerate 2^256
candidates whatever the hash costs; a fast one keeps authentication cheap per request.

Successful authentications are cached in process for a few seconds (``auth_cache_ttl_s``);
revoking through this service drops the entry at once, a revocation made by another
process takes effect within that TTL.

Permissions: an operator may do anything; an admin manages users and keys of its own
account; a user may revoke its own keys. Another account's user or key is reported as
not found, never as forbidden, so ids cannot be probed.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable

from comfygate.domain.errors import (
    AccountNotFoundError,
    ApiKeyNotFoundError,
    AuthenticationError,
    InvalidInputError,
    PermissionDeniedError,
    UserNotFoundError,
)
from comfygate.domain.ids import new_id
from comfygate.services.audit import Actor, AuditLog
from comfygate.services.clock import Clock
from comfygate.services.identity_ports import (
    AccountSummary,
    ApiKey,
    IdentityStore,
    IssuedKey,
    NewAccount,
    User,
)
from comfygate.services.identity_types import Principal, Role
from comfygate.services.ledger import LedgerService

KEY_PREFIX = "cg_"
OPERATOR_ACCOUNT_ID = "acct_operator"
OPERATOR_USER_ID = "user_operator"
_RANK = {Role.USER: 0, Role.ADMIN: 1, Role.OPERATOR: 2}


def hash_key(api_key: str) -> str:
    """The stored form of a key (hex SHA-256 of the whole key string)."""
    return hashlib.sha256(api_key.encode()).hexdigest()


def key_id_of(api_key: str) -> str | None:
    """The key id inside ``cg_<key_id>.<secret>``, or None if it is not our format."""
    if not api_key.startswith(KEY_PREFIX):
        return None
    key_id, dot, secret = api_key[len(KEY_PREFIX) :].partition(".")
    return key_id if dot and key_id and secret else None


def role_at_least(role: Role, minimum: Role) -> bool:
    return _RANK[role] >= _RANK[minimum]


class IdentityService:
    """Creates and checks identities; every change is audited."""

    def __init__(
        self,
        *,
        store: IdentityStore,
        ledger: LedgerService,
        audit: AuditLog,
        clock: Clock,
        auth_cache_ttl_s: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._ledger = ledger
        self._audit = audit
        self._clock = clock
        self._ttl_s = auth_cache_ttl_s
        self._monotonic = monotonic
        self._cache: dict[str, tuple[str, Principal, float]] = {}
        self._revocations = 0
        """Bumped by every revocation in this process: a key read before one is not
        cached (the read may predate it)."""
        self._revoking = threading.Lock()  # the check and the write above, as one

    # -- authentication -------------------------------------------------------------

    def authenticate_cached(self, api_key: str) -> Principal | None:
        """The principal if this key was verified within the TTL; no I/O."""
        key_id = key_id_of(api_key)
        hit = self._cache.get(key_id) if key_id else None
        if hit is None or hit[2] < self._monotonic():
            return None
        return hit[1] if hmac.compare_digest(hit[0], hash_key(api_key)) else None

    def authenticate(self, api_key: str) -> Principal:
        """The principal of a valid, unrevoked key; else ``AuthenticationError``."""
        cached = self.authenticate_cached(api_key)
        if cached is not None:
            return cached
        key_id = key_id_of(api_key)
        revocations = self._revocations
        stored = self._store.key(key_id) if key_id else None
        digest = hash_key(api_key)
        if stored is None or not hmac.compare_digest(stored.key_hash, digest):
            raise AuthenticationError("invalid API key")
        if not stored.active:
            raise AuthenticationError("this API key has been revoked")
        principal = Principal(stored.account_id, stored.user_id, stored.role, stored.id)
        with self._revoking:
            if revocations == self._revocations:
                self._cache[stored.id] = (digest, principal, self._monotonic() + self._ttl_s)
        return principal

    # -- accounts and users ---------------------------------------------------------

    def create_account(self, *, name: str, actor: Actor, admin_name: str = "admin") -> NewAccount:
        """Open an account (empty balance) with a first admin user and its key."""
        _require_operator(actor)
        _check_name(admin_name)  # before the account is opened: a refusal leaves nothing
        account_id = self._ledger.open_account(name=name)
        user = self._new_user(account_id, admin_name, Role.ADMIN)
        issued, record = self._new_key(user, Role.ADMIN, "first key")
        self._store.insert_user(user, record)
        self._audit.record(
            actor=actor,
            action="accounts.create",
            target=account_id,
            account_id=account_id,
            details={"name": name, "admin_user_id": user.id, "key_id": issued.key_id},
        )
        return NewAccount(account_id, name, user, issued)

    def create_user(self, *, account_id: str, name: str, role: Role, actor: Actor) -> User:
        """Add a user to an account (admins: their own account, not operators)."""
        self._authorize(actor, account_id, Role.ADMIN)
        self._check_can_grant(actor, role, account_id)
        self._require_account(account_id)
        user = self._new_user(account_id, name, role)
        self._store.insert_user(user)
        self._audit.record(
            actor=actor,
            action="users.create",
            target=user.id,
            account_id=account_id,
            details={"name": name, "role": role.value},
        )
        return user

    def create_key(
        self,
        *,
        account_id: str,
        actor: Actor,
        role: Role | None = None,
        user_id: str | None = None,
        label: str = "",
    ) -> IssuedKey:
        """Issue a key for ``user_id`` (role up to the user's) or for a new user."""
        self._authorize(actor, account_id, Role.ADMIN)
        self._require_account(account_id)
        if user_id is None:
            role = role or Role.USER
            self._check_can_grant(actor, role, account_id)
            user = self._new_user(account_id, label or f"{role.value} key", role)
            self._store.insert_user(user)
        else:
            found = self._store.user(user_id)
            if found is None or found.account_id != account_id:
                raise UserNotFoundError(f"no user {user_id} in this account", user_id=user_id)
            user, role = found, role or found.role
            if not role_at_least(user.role, role):
                raise InvalidInputError(
                    f"a key's role cannot exceed its user's ({user.role.value})", role=role.value
                )
            # An admin once got an operator's key by naming the operator's user.
            self._check_can_grant(actor, role, account_id)
        issued, record = self._new_key(user, role, label)
        self._store.insert_key(record)
        self._audit.record(
            actor=actor,
            action="keys.create",
            target=issued.key_id,
            account_id=account_id,
            details={"user_id": user.id, "role": role.value, "label": label},
        )
        return issued

    def revoke_key(self, *, key_id: str, actor: Actor) -> ApiKey:
        """Revoke a key (idempotent). Users may revoke their own keys."""
        stored = self._store.key(key_id)
        own = (
            isinstance(actor, Principal) and stored is not None and stored.user_id == actor.user_id
        )
        if stored is None or not (own or self._visible(actor, stored.account_id)):
            raise ApiKeyNotFoundError(f"no key {key_id}", key_id=key_id)
        if not own:
            self._authorize(actor, stored.account_id, Role.ADMIN)
            if isinstance(actor, Principal) and not role_at_least(actor.role, stored.role):
                # An admin in the operator account once revoked the operator's keys.
                raise PermissionDeniedError(f"revoking an {stored.role.value} key needs that role")
        key_id = stored.id  # as stored: MariaDB finds it by a case or padding variant too
        now = self._clock.now()
        changed = self._store.revoke_key(key_id, now)
        with self._revoking:  # see ``authenticate``
            self._revocations += 1
            self._cache.pop(key_id, None)
        if changed:
            self._audit.record(
                actor=actor, action="keys.revoke", target=key_id, account_id=stored.account_id
            )
        return self._store.key(key_id) or stored

    def bootstrap_operator(self) -> IssuedKey | None:
        """Create the operator account, user and key once; None if they exist already."""
        if self._store.operator_exists():
            return None
        if self._store.account(OPERATOR_ACCOUNT_ID) is None:
            try:
                self._ledger.open_account(name="operator", account_id=OPERATOR_ACCOUNT_ID)
            except Exception:
                # Another process opened it between our check and insert: fine if it exists.
                if self._store.account(OPERATOR_ACCOUNT_ID) is None:
                    raise
        user = User(
            OPERATOR_USER_ID, OPERATOR_ACCOUNT_ID, "operator", Role.OPERATOR, self._clock.now()
        )
        issued, record = self._new_key(user, Role.OPERATOR, "first operator key")
        # The user id is fixed, so of two processes starting at once exactly one wins.
        if not self._store.insert_user(user, record):
            return None
        self._audit.record(
            actor="system:init",
            action="operator.bootstrap",
            target=issued.key_id,
            account_id=OPERATOR_ACCOUNT_ID,
        )
        return issued

    # -- queries --------------------------------------------------------------------

    def account(self, *, account_id: str, actor: Actor) -> AccountSummary:
        """One account, if the actor may see it."""
        self._authorize(actor, account_id, Role.USER)
        return self._require_account(account_id)

    def accounts(
        self, *, actor: Actor, limit: int = 100, after: str | None = None
    ) -> list[AccountSummary]:
        """Every account (operators only), ordered by id."""
        _require_operator(actor)
        return self._store.accounts(limit=max(1, min(limit, 1000)), after=after)

    def users(self, *, account_id: str, actor: Actor) -> list[User]:
        self._authorize(actor, account_id, Role.ADMIN)
        self._require_account(account_id)
        return self._store.users(account_id)

    def keys(self, *, account_id: str, actor: Actor) -> list[ApiKey]:
        self._authorize(actor, account_id, Role.ADMIN)
        self._require_account(account_id)
        return self._store.keys(account_id)

    # -- helpers --------------------------------------------------------------------

    def _require_account(self, account_id: str) -> AccountSummary:
        found = self._store.account(account_id)
        if found is None:
            raise AccountNotFoundError(f"no account {account_id}", account_id=account_id)
        return found

    @staticmethod
    def _visible(actor: Actor, account_id: str) -> bool:
        return not isinstance(actor, Principal) or actor.can_see_account(account_id)

    def _authorize(self, actor: Actor, account_id: str, minimum: Role) -> None:
        if not self._visible(actor, account_id):
            raise AccountNotFoundError(f"no account {account_id}", account_id=account_id)
        if isinstance(actor, Principal) and not role_at_least(actor.role, minimum):
            raise PermissionDeniedError(f"this needs the {minimum.value} role")

    @staticmethod
    def _check_can_grant(actor: Actor, role: Role, account_id: str) -> None:
        """Only operators make operators, and only in the operator account: an operator
        key sees every account, so none may sit in a customer's."""
        if role is Role.OPERATOR:
            _require_operator(actor)
            if account_id != OPERATOR_ACCOUNT_ID:
                raise InvalidInputError(
                    f"operators belong to the operator account ({OPERATOR_ACCOUNT_ID})",
                    role=role.value,
                )

    def _new_user(self, account_id: str, name: str, role: Role) -> User:
        _check_name(name)
        return User(new_id("user"), account_id, name, role, self._clock.now())

    def _new_key(self, user: User, role: Role, label: str) -> tuple[IssuedKey, ApiKey]:
        key_id = new_id("key")
        api_key = f"{KEY_PREFIX}{key_id}.{secrets.token_urlsafe(32)}"
        now = self._clock.now()
        record = ApiKey(key_id, user.account_id, user.id, role, hash_key(api_key), label, now)
        return IssuedKey(key_id, api_key, user.account_id, user.id, role, now), record


def _check_name(name: str) -> None:
    if not name.strip():
        raise InvalidInputError("a user needs a name")


def _require_operator(actor: Actor) -> None:
    if isinstance(actor, Principal) and not actor.is_operator:
        raise PermissionDeniedError("this needs the operator role")
