"""Identity with in-memory fakes: keys, authentication, revocation, who may do what."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

import pytest

from comfygate.domain.errors import (
    AccountNotFoundError,
    ApiKeyNotFoundError,
    AuthenticationError,
    InvalidInputError,
    PermissionDeniedError,
    UserNotFoundError,
)
from comfygate.services.audit import AuditEntry, AuditLog
from comfygate.services.identity import IdentityService, hash_key, key_id_of
from comfygate.services.identity_ports import AccountSummary, ApiKey, User
from comfygate.services.identity_types import Principal, Role
from tests.fakes import FakeClock


class FakeIdentityStore:
    def __init__(self) -> None:
        self.accounts_by_id: dict[str, AccountSummary] = {}
        self.users_by_id: dict[str, User] = {}
        self.keys_by_id: dict[str, ApiKey] = {}
        self.key_reads = 0

    def insert_user(self, user: User, key: ApiKey | None = None) -> bool:
        if user.id in self.users_by_id:
            return False
        self.users_by_id[user.id] = user
        if key is not None:
            self.keys_by_id[key.id] = key
        return True

    def insert_key(self, key: ApiKey) -> None:
        self.keys_by_id[key.id] = key

    def user(self, user_id: str) -> User | None:
        return self.users_by_id.get(user_id)

    def users(self, account_id: str) -> list[User]:
        return [u for u in self.users_by_id.values() if u.account_id == account_id]

    def key(self, key_id: str) -> ApiKey | None:
        self.key_reads += 1
        return self.keys_by_id.get(key_id)

    def keys(self, account_id: str) -> list[ApiKey]:
        return [k for k in self.keys_by_id.values() if k.account_id == account_id]

    def revoke_key(self, key_id: str, at: datetime) -> bool:
        key = self.keys_by_id[key_id]
        if key.revoked_at is not None:
            return False
        self.keys_by_id[key_id] = replace(key, revoked_at=at)
        return True

    def operator_exists(self) -> bool:
        return any(u.role is Role.OPERATOR for u in self.users_by_id.values())

    def account(self, account_id: str) -> AccountSummary | None:
        return self.accounts_by_id.get(account_id)

    def accounts(self, *, limit: int, after: str | None) -> list[AccountSummary]:
        ids = sorted(i for i in self.accounts_by_id if after is None or i > after)
        return [self.accounts_by_id[i] for i in ids[:limit]]


class FakeLedger:
    """Opens accounts in the fake identity store (the directory reads them there)."""

    def __init__(self, store: FakeIdentityStore, clock: FakeClock) -> None:
        self.store = store
        self.clock = clock
        self.opened = 0

    def open_account(self, *, name: str, account_id: str | None = None) -> str:
        self.opened += 1
        account_id = account_id or f"acct_{self.opened}"
        self.store.accounts_by_id[account_id] = AccountSummary(account_id, name, self.clock.now())
        return account_id


class FakeAuditStore:
    def __init__(self) -> None:
        self.entries_list: list[AuditEntry] = []

    def append(self, entry: AuditEntry) -> None:
        self.entries_list.append(entry)

    def append_once(self, entry: AuditEntry) -> bool:
        if any(e.id == entry.id for e in self.entries_list):
            return False
        self.append(entry)
        return True

    def entries(
        self, *, account_id: str | None, limit: int, before: str | None
    ) -> list[AuditEntry]:
        return [e for e in self.entries_list if account_id is None or e.account_id == account_id]


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def world() -> tuple[IdentityService, FakeIdentityStore, FakeAuditStore, FakeMonotonic]:
    clock = FakeClock()
    store = FakeIdentityStore()
    audit_store = FakeAuditStore()
    monotonic = FakeMonotonic()
    service = IdentityService(
        store=store,
        ledger=FakeLedger(store, clock),  # type: ignore[arg-type]
        audit=AuditLog(store=audit_store, clock=clock),
        clock=clock,
        auth_cache_ttl_s=5.0,
        monotonic=monotonic,
    )
    return service, store, audit_store, monotonic


def test_key_format_and_only_the_hash_is_stored(world) -> None:  # type: ignore[no-untyped-def]
    service, store, _, _ = world
    made = service.create_account(name="acme", actor="cli")
    api_key = made.key.api_key
    assert api_key.startswith("cg_key_") and key_id_of(api_key) == made.key.key_id
    stored = store.keys_by_id[made.key.key_id]
    assert stored.key_hash == hash_key(api_key) and api_key not in repr(stored)
    assert len(api_key.partition(".")[2]) >= 43  # 256 random bits, url-safe base64


def test_authenticate_returns_the_principal_of_the_key(world) -> None:  # type: ignore[no-untyped-def]
    service, _, _, _ = world
    made = service.create_account(name="acme", actor="cli")
    principal = service.authenticate(made.key.api_key)
    assert principal == Principal(made.account_id, made.user.id, Role.ADMIN, made.key.key_id)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda k: k[:-1] + ("A" if k[-1] != "A" else "B"),  # wrong secret
        lambda k: "cg_key_nope." + k.partition(".")[2],  # unknown id
        lambda k: k.partition(".")[0],  # no secret
        lambda k: "Bearer " + k,
        lambda k: "",
        lambda k: k.replace("cg_", "xx_", 1),
    ],
)
def test_bad_keys_are_refused(world, mangle) -> None:  # type: ignore[no-untyped-def]
    service, _, _, _ = world
    made = service.create_account(name="acme", actor="cli")
    with pytest.raises(AuthenticationError):
        service.authenticate(mangle(made.key.api_key))


def test_cache_spares_the_store_and_revocation_here_is_immediate(world) -> None:  # type: ignore[no-untyped-def]
    service, store, audit, _ = world
    made = service.create_account(name="acme", actor="cli")
    service.authenticate(made.key.api_key)
    reads = store.key_reads
    for _ in range(5):
        assert service.authenticate_cached(made.key.api_key) is not None
        service.authenticate(made.key.api_key)
    assert store.key_reads == reads
    wrong = made.key.api_key[:-2] + "zz"
    assert service.authenticate_cached(wrong) is None
    service.revoke_key(key_id=made.key.key_id, actor="cli")
    assert service.authenticate_cached(made.key.api_key) is None
    with pytest.raises(AuthenticationError, match="revoked"):
        service.authenticate(made.key.api_key)
    assert [e.action for e in audit.entries_list][-1] == "keys.revoke"


def test_cache_expires_so_other_processes_revocations_take_effect(world) -> None:  # type: ignore[no-untyped-def]
    service, store, _, monotonic = world
    made = service.create_account(name="acme", actor="cli")
    service.authenticate(made.key.api_key)
    store.revoke_key(made.key.key_id, datetime.now().astimezone())  # as if another process did
    assert service.authenticate(made.key.api_key).key_id == made.key.key_id  # cached
    monotonic.now += 5.1
    with pytest.raises(AuthenticationError):
        service.authenticate(made.key.api_key)


def test_admin_manages_only_its_own_account(world) -> None:  # type: ignore[no-untyped-def]
    service, _, _, _ = world
    mine = service.create_account(name="mine", actor="cli")
    theirs = service.create_account(name="theirs", actor="cli")
    admin = service.authenticate(mine.key.api_key)
    user = service.create_user(account_id=mine.account_id, name="ann", role=Role.USER, actor=admin)
    assert service.users(account_id=mine.account_id, actor=admin)[-1] == user
    with pytest.raises(AccountNotFoundError):
        service.create_user(account_id=theirs.account_id, name="x", role=Role.USER, actor=admin)
    with pytest.raises(AccountNotFoundError):
        service.keys(account_id=theirs.account_id, actor=admin)
    with pytest.raises(ApiKeyNotFoundError):
        service.revoke_key(key_id=theirs.key.key_id, actor=admin)
    with pytest.raises(PermissionDeniedError):
        service.create_user(account_id=mine.account_id, name="o", role=Role.OPERATOR, actor=admin)
    with pytest.raises(PermissionDeniedError):
        service.create_account(name="more", actor=admin)
    with pytest.raises(PermissionDeniedError):
        service.accounts(actor=admin)


def test_users_may_revoke_their_own_keys_only(world) -> None:  # type: ignore[no-untyped-def]
    service, _, _, _ = world
    made = service.create_account(name="acme", actor="cli")
    first = service.create_key(account_id=made.account_id, actor="cli", role=Role.USER)
    second = service.create_key(account_id=made.account_id, actor="cli", role=Role.USER)
    user = service.authenticate(first.api_key)
    with pytest.raises(PermissionDeniedError):
        service.revoke_key(key_id=second.key_id, actor=user)
    with pytest.raises(PermissionDeniedError):
        service.create_key(account_id=made.account_id, actor=user)
    assert service.revoke_key(key_id=first.key_id, actor=user).revoked_at is not None


def test_key_role_cannot_exceed_its_user(world) -> None:  # type: ignore[no-untyped-def]
    service, _, _, _ = world
    made = service.create_account(name="acme", actor="cli")
    user = service.create_user(account_id=made.account_id, name="u", role=Role.USER, actor="cli")
    with pytest.raises(InvalidInputError):
        service.create_key(
            account_id=made.account_id, user_id=user.id, role=Role.ADMIN, actor="cli"
        )
    issued = service.create_key(account_id=made.account_id, user_id=user.id, actor="cli")
    assert issued.role is Role.USER and issued.user_id == user.id
    with pytest.raises(UserNotFoundError):
        service.create_key(account_id=made.account_id, user_id="user_nope", actor="cli")


def test_operator_is_bootstrapped_once_and_sees_everything(world) -> None:  # type: ignore[no-untyped-def]
    service, _, audit, _ = world
    issued = service.bootstrap_operator()
    assert issued is not None and issued.role is Role.OPERATOR
    assert service.bootstrap_operator() is None
    operator = service.authenticate(issued.api_key)
    made = service.create_account(name="acme", actor=operator)
    assert service.account(account_id=made.account_id, actor=operator).name == "acme"
    assert [a.id for a in service.accounts(actor=operator)] == sorted(
        ["acct_operator", made.account_id]
    )
    assert {"operator.bootstrap", "accounts.create"} <= {e.action for e in audit.entries_list}


def test_every_change_is_audited_with_its_actor(world) -> None:  # type: ignore[no-untyped-def]
    service, _, audit, _ = world
    made = service.create_account(name="acme", actor="cli")
    admin = service.authenticate(made.key.api_key)
    key = service.create_key(account_id=made.account_id, actor=admin, label="app")
    entry = audit.entries_list[-1]
    assert (entry.action, entry.target, entry.account_id) == (
        "keys.create",
        key.key_id,
        made.account_id,
    )
    assert entry.actor == f"admin:{made.user.id}" and entry.actor_account_id == made.account_id


def test_no_admin_gets_an_operator_key_and_no_operator_sits_in_a_customer_account(world) -> None:  # type: ignore[no-untyped-def]
    """An admin once minted an operator key by naming the operator's user: from the
    operator account, or from a customer account holding an operator user."""
    service, store, _, _ = world
    operator = service.authenticate(service.bootstrap_operator().api_key)
    (operator_user,) = [u for u in store.users_by_id.values() if u.role is Role.OPERATOR]
    support = service.authenticate(
        service.create_key(account_id="acct_operator", actor=operator, role=Role.ADMIN).api_key
    )
    with pytest.raises(PermissionDeniedError):
        service.create_key(account_id="acct_operator", actor=support, user_id=operator_user.id)
    user_key = service.create_key(
        account_id="acct_operator", actor=support, user_id=operator_user.id, role=Role.USER
    )
    assert service.authenticate(user_key.api_key).role is Role.USER
    acme = service.create_account(name="acme", actor=operator)
    with pytest.raises(InvalidInputError, match="operator account"):
        service.create_user(account_id=acme.account_id, name="o", role=Role.OPERATOR,
                            actor=operator)  # fmt: skip
    with pytest.raises(InvalidInputError, match="operator account"):
        service.create_key(account_id=acme.account_id, actor=operator, role=Role.OPERATOR)


def test_a_key_read_while_it_is_revoked_is_not_cached(world) -> None:  # type: ignore[no-untyped-def]
    """The read saw it active, the revoke dropped the (empty) cache entry, then the read
    cached it: it worked for the cache's lifetime after its revocation."""
    service, store, _, _ = world
    made = service.create_account(name="acme", actor="cli")
    read = store.key

    def revoked_meanwhile(key_id: str) -> ApiKey | None:
        found = read(key_id)
        store.key = read  # type: ignore[method-assign]
        service.revoke_key(key_id=key_id, actor="cli")
        return found

    store.key = revoked_meanwhile  # type: ignore[method-assign]
    assert service.authenticate(made.key.api_key).account_id == made.account_id  # raced
    with pytest.raises(AuthenticationError, match="revoked"):
        service.authenticate(made.key.api_key)


def test_an_admin_cannot_revoke_a_key_above_its_role(world) -> None:  # type: ignore[no-untyped-def]
    """An admin of the operator account (support staff) once revoked the operator's
    keys, locking the operator out of the API."""
    service, _, _, _ = world
    issued = service.bootstrap_operator()
    operator = service.authenticate(issued.api_key)
    support_key = service.create_key(account_id="acct_operator", actor=operator, role=Role.ADMIN)
    support = service.authenticate(support_key.api_key)
    with pytest.raises(PermissionDeniedError, match="operator key"):
        service.revoke_key(key_id=issued.key_id, actor=support)
    assert service.authenticate(issued.api_key) == operator
    helper = service.create_key(account_id="acct_operator", actor=support, role=Role.USER)
    assert service.revoke_key(key_id=helper.key_id, actor=support).revoked_at is not None
    assert service.revoke_key(key_id=support_key.key_id, actor=operator).revoked_at is not None


def test_a_key_revoked_by_a_variant_of_its_id_leaves_the_cache_at_once(world) -> None:  # type: ignore[no-untyped-def]
    """MariaDB's collation finds a key by its id in another case: the row was revoked,
    and the entry cached under the id as stored went on working until its TTL."""
    service, store, audit, _ = world

    def key_any_case(key_id: str) -> ApiKey | None:
        return next((k for k in store.keys_by_id.values() if k.id.lower() == key_id.lower()), None)

    store.key = key_any_case  # type: ignore[method-assign]
    made = service.create_account(name="acme", actor="cli")
    service.authenticate(made.key.api_key)  # cached
    service.revoke_key(key_id=made.key.key_id.upper(), actor="cli")
    assert service.authenticate_cached(made.key.api_key) is None
    with pytest.raises(AuthenticationError, match="revoked"):
        service.authenticate(made.key.api_key)
    assert audit.entries_list[-1].target == made.key.key_id


def test_a_refused_admin_name_opens_no_account(world) -> None:  # type: ignore[no-untyped-def]
    service, store, audit, _ = world
    with pytest.raises(InvalidInputError, match="needs a name"):
        service.create_account(name="ghost", actor="cli", admin_name="   ")
    assert store.accounts_by_id == {} and audit.entries_list == []


def test_users_and_keys_of_an_unknown_account_are_not_found(world) -> None:  # type: ignore[no-untyped-def]
    service, _, _, _ = world
    operator = service.authenticate(service.bootstrap_operator().api_key)
    for listing in (service.users, service.keys):
        with pytest.raises(AccountNotFoundError):
            listing(account_id="acct_nope", actor=operator)
