"""Use cases that move tokens: grant, place a hold, capture, release, expire.

This is the one way tokens move. Each use case runs in one unit of work that first
locks the account's balance row, then checks the idempotency key (a replay returns
the first answer and writes nothing; the same key with other parameters is refused),
then asks ``domain.ledger`` for the postings and appends them.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, TypeVar

import orjson

from comfygate.domain import ledger as dl
from comfygate.domain.errors import (
    AccountNotFoundError,
    ExpiredGrantError,
    HoldNotOpenError,
    IdempotencyConflictError,
    InsufficientBalanceError,
    InvalidInputError,
)
from comfygate.domain.ids import new_id
from comfygate.domain.instants import in_range
from comfygate.services.clock import Clock
from comfygate.services.ledger_batches import Deferred, MovementBatcher, Operation
from comfygate.services.ledger_ports import (
    LedgerStore,
    LedgerUnitOfWork,
    NewTransaction,
    StoredTransaction,
)


@dataclass(frozen=True, slots=True)
class GrantReceipt:
    txn_id: str
    lot_id: str
    account_id: str
    amount: int
    source: str
    expires_at: str | None
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class HoldReceipt:
    txn_id: str
    hold_id: str
    account_id: str
    amount: int
    list_tokens: int
    expires_at: str
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class SettleReceipt:
    txn_id: str
    hold_id: str
    account_id: str
    state: str
    captured: int
    released: int
    replayed: bool = False


_R = TypeVar("_R", "GrantReceipt", "HoldReceipt", "SettleReceipt")


@dataclass(frozen=True, slots=True)
class ExpiryReport:
    holds_expired: int
    tokens_released: int
    lots_expired: int
    tokens_written_off: int
    failed_accounts: tuple[str, ...] = ()
    """Accounts whose expiry failed (logged): the others' went ahead without them."""


class _Request(NamedTuple):
    """What a movement was asked to do, as its idempotency key remembers it: the
    journal keeps ``hash``, and a replay of the key must be the same request."""

    op: str
    params: dict[str, Any]
    hash: str

    @classmethod
    def of(cls, op: str, params: dict[str, Any]) -> _Request:
        """The request and its hash, instants in UTC: ``08:00+08:00`` is ``00:00Z``."""
        utc = {k: v.astimezone(UTC) if isinstance(v, datetime) else v for k, v in params.items()}
        return cls(op, params, _sha256(orjson.dumps({"op": op, **utc}, **_SORTED)))

    def made(self, stored_hash: str | None) -> bool:
        """Whether the stored transaction was this request. Keys used before an upgrade
        replay: earlier versions hashed instants with the offset they were given, and
        before that the standard library's JSON (with spaces); and before lots had a
        start, no grant's request named one. Every grant's request names it now (null
        for none), so only a grant from before can match a request without it (a
        plan's key names its period, and so its start)."""
        if stored_hash == self.hash:
            return True
        return any(stored_hash == earlier for earlier in self._earlier_hashes())

    def _earlier_hashes(self) -> Iterator[str]:
        params = {k: v for k, v in self.params.items() if k != "starts_at"}
        if len(params) < len(self.params):
            yield _Request.of(self.op, params).hash
        given = {"op": self.op, **params}
        yield _sha256(orjson.dumps(given, **_SORTED))
        yield _sha256(json.dumps(given, sort_keys=True, default=str).encode())


_SORTED: dict[str, Any] = {"default": str, "option": orjson.OPT_SORT_KEYS}


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


log = logging.getLogger(__name__)

GIVE_UP_AFTER = 3
"""Failed accounts in a row after which ``expire`` stops and raises."""

MAX_MOVEMENT_TOKENS = 10**12
"""The most tokens one movement may move: far past any real grant or job, and far
enough below the 64-bit columns that balances summing many of them cannot overflow."""
MAX_KEY_LENGTH = 200
MAX_NAME_LENGTH = 200  # the accounts.name column
MAX_TTL_S = 30 * 24 * 3600
PRIORITY_RANGE = range(-(2**31), 2**31)


def _positive(name: str, value: int, *, allow_zero: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(f"{name} must be an integer number of tokens")
    if value < 0 or (value == 0 and not allow_zero):
        raise InvalidInputError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value}")
    if value > MAX_MOVEMENT_TOKENS:
        raise InvalidInputError(f"{name} must be at most {MAX_MOVEMENT_TOKENS}, got {value}")


def _instant(name: str, value: datetime | None) -> None:
    if value is None:
        return
    if value.tzinfo is None:
        raise InvalidInputError(f"{name} must carry a timezone")
    if not in_range(value):
        raise InvalidInputError(f"{name} is out of range")


def _key(idempotency_key: str) -> None:
    if not isinstance(idempotency_key, str) or not idempotency_key.strip():
        raise InvalidInputError("an idempotency key must be a non-empty string")
    if len(idempotency_key) > MAX_KEY_LENGTH:
        raise InvalidInputError(f"an idempotency key must be at most {MAX_KEY_LENGTH} characters")
    if "\x00" in idempotency_key:  # PostgreSQL's text cannot hold it: refused everywhere
        raise InvalidInputError("an idempotency key must not contain a NUL character")


class LedgerService:
    """Moves tokens; every public method is one atomic, idempotent ledger transaction."""

    def __init__(
        self, *, store: LedgerStore, clock: Clock, hold_ttl_s: int, batch_max: int = 1
    ) -> None:
        self._store = store
        self._batcher = MovementBatcher(store=store, max_batch=batch_max)
        self._clock = clock
        self._hold_ttl = timedelta(seconds=hold_ttl_s)

    # -- accounts -----------------------------------------------------------------

    def open_account(self, *, name: str, account_id: str | None = None) -> str:
        """Create a customer account with an empty balance; returns its id."""
        if not name.strip():
            raise InvalidInputError("an account needs a name")
        if len(name) > MAX_NAME_LENGTH:
            raise InvalidInputError(f"an account name must be at most {MAX_NAME_LENGTH} characters")
        account_id = account_id or new_id("acct")
        self._store.create_account(account_id=account_id, name=name, created_at=self._clock.now())
        return account_id

    # -- movements ------------------------------------------------------------------

    def grant(
        self,
        *,
        account_id: str,
        amount: int,
        source: str,
        idempotency_key: str,
        expires_at: datetime | None = None,
        valid_for: timedelta | None = None,
        starts_at: datetime | None = None,
        priority: int = 0,
        memo: dict[str, Any] | None = None,
    ) -> GrantReceipt:
        """Add a lot of ``amount`` tokens to the account, expiring at ``expires_at`` or
        ``valid_for`` after it is granted (a replay later is the same request), and
        spendable from ``starts_at`` (default: at once)."""
        _positive("amount", amount)
        _key(idempotency_key)
        if source not in set(dl.GrantSource):
            raise InvalidInputError(f"unknown grant source {source!r}")
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise InvalidInputError("priority must be an integer")
        if priority not in PRIORITY_RANGE:
            raise InvalidInputError(f"priority must be a 32-bit integer, got {priority}")
        _instant("expires_at", expires_at)
        _instant("starts_at", starts_at)
        if starts_at is not None and expires_at is not None and starts_at >= expires_at:
            raise InvalidInputError("starts_at must be before expires_at")
        if starts_at is not None and valid_for is not None:
            raise InvalidInputError("a grant with valid_for starts when it is granted")
        params: dict[str, Any] = {
            "amount": amount,
            "source": source,
            "expires_at": expires_at,
            "priority": priority,
        }
        if valid_for is not None:
            if expires_at is not None or valid_for <= timedelta(0):
                raise InvalidInputError("valid_for is a positive duration, instead of expires_at")
            params["valid_for_s"] = valid_for.total_seconds()
        params["starts_at"] = starts_at  # (null or not, unlike in grants from before it)
        key = f"{account_id}:grant:{idempotency_key}"
        request = _Request.of("grant", params)

        def body(uow: LedgerUnitOfWork) -> GrantReceipt:
            uow.lock_account(account_id)
            now = self._clock.now()
            if expires_at is not None and expires_at <= now:  # (a replay of a grant made
                raise ExpiredGrantError("expires_at is not in the future")  # earlier is not)
            expires = now + valid_for if valid_for is not None else expires_at
            lot_id = new_id("lot")
            lot = dl.Lot(
                lot_id, account_id, amount, amount, source, expires, priority, now, starts_at
            )
            receipt = GrantReceipt(new_id("txn"), lot.id, account_id, amount, source, _iso(expires))
            movement = dl.grant_movement(account_id=account_id, lot_id=lot.id, amount=amount)
            uow.append(_txn(receipt.txn_id, now, key, request.hash, memo, receipt), movement,
                       new_lot=lot)  # fmt: skip
            return receipt

        return self._once(key, request, body, GrantReceipt)

    def place_hold(
        self,
        *,
        account_id: str,
        amount: int,
        idempotency_key: str,
        list_tokens: int | None = None,
        ttl_s: int | None = None,
        memo: dict[str, Any] | None = None,
    ) -> HoldReceipt:
        """Reserve ``amount`` tokens (0 for unlimited plans, with the list price noted)."""
        _positive("amount", amount, allow_zero=True)
        list_tokens = amount if list_tokens is None else list_tokens
        _positive("list_tokens", list_tokens, allow_zero=True)
        _key(idempotency_key)
        if ttl_s is not None and (
            isinstance(ttl_s, bool) or not isinstance(ttl_s, int) or not 0 < ttl_s <= MAX_TTL_S
        ):
            raise InvalidInputError(f"ttl_s must be between 1 and {MAX_TTL_S} seconds")
        key = f"{account_id}:hold:{idempotency_key}"
        params = {"amount": amount, "list_tokens": list_tokens}
        if ttl_s is not None:  # (absent when not given: hashes from before stay valid)
            params["ttl_s"] = ttl_s
        request = _Request.of("hold", params)

        def body(uow: LedgerUnitOfWork) -> HoldReceipt:
            lots = uow.lock_account(account_id)
            now = self._clock.now()
            allocation = dl.allocate(lots, amount, now)
            expires_at = now + (timedelta(seconds=ttl_s) if ttl_s else self._hold_ttl)
            hold = dl.Hold(
                new_id("hold"), account_id, amount, list_tokens, dl.HoldState.OPEN, 0, now,
                expires_at, allocation,
            )  # fmt: skip
            receipt = HoldReceipt(
                new_id("txn"), hold.id, account_id, amount, list_tokens, _iso(expires_at) or ""
            )
            movement = dl.hold_movement(
                account_id=account_id, hold_id=hold.id, allocation=allocation
            )
            uow.append(_txn(receipt.txn_id, now, key, request.hash, memo, receipt), movement,
                       new_hold=hold)  # fmt: skip
            return receipt

        return self._once(key, request, body, HoldReceipt)

    def capture(
        self, *, hold_id: str, idempotency_key: str, amount: int | None = None
    ) -> SettleReceipt:
        """Charge ``amount`` (default: all) of an open hold; the rest goes back."""
        if amount is not None:
            _positive("amount", amount, allow_zero=True)
        return self._settle(hold_id, idempotency_key, amount, dl.TxnKind.CAPTURE, reason=None)

    def release(self, *, hold_id: str, idempotency_key: str, reason: str) -> SettleReceipt:
        """Return every token of an open hold to the lots it came from."""
        return self._settle(hold_id, idempotency_key, 0, dl.TxnKind.RELEASE, reason=reason)

    def _settle(
        self,
        hold_id: str,
        idempotency_key: str,
        amount: int | None,
        kind: dl.TxnKind,
        *,
        reason: str | None,
    ) -> SettleReceipt:
        _key(idempotency_key)
        key = f"{hold_id}:{kind.value}:{idempotency_key}"
        request = _Request.of(kind.value, {"hold_id": hold_id, "amount": amount})

        def body(uow: LedgerUnitOfWork) -> SettleReceipt:
            hold = uow.lock_hold(hold_id)
            if hold.state is not dl.HoldState.OPEN:
                raise HoldNotOpenError(
                    f"hold {hold_id} is {hold.state.value}", state=hold.state.value
                )
            now = self._clock.now()
            if hold.expires_at <= now:
                self._expire_hold(uow, hold, now)
                raise Deferred(
                    HoldNotOpenError(f"hold {hold_id} expired and was released", state="expired")
                )
            capture = hold.amount if amount is None else amount
            return self._append_settlement(uow, hold, capture, kind, key, request.hash, reason)

        return self._once(key, request, body, SettleReceipt)

    def _once(
        self,
        key: str,
        request: _Request,
        body: Callable[[LedgerUnitOfWork], _R],
        receipt_type: type[_R],
    ) -> _R:
        """Run ``body`` once per idempotency key; it starts by locking the account.

        The key is checked optimistically: the journal's unique index on it refuses a
        second use, and only then (or when the body fails in a way a replay would
        explain) is the first answer looked up and returned. Movements submitted at
        the same time by other threads may share the transaction (``ledger_batches``).
        """

        def attempt(uow: LedgerUnitOfWork) -> _R:
            try:
                return body(uow)
            except (InsufficientBalanceError, HoldNotOpenError, ExpiredGrantError):
                stored = uow.find_transaction(key)
                if stored is None:
                    raise
                return _replay(stored, request, receipt_type)

        def after_conflict() -> _R:
            with self._store.unit_of_work() as uow:
                stored = uow.find_transaction(key)
            assert stored is not None  # the unique index just said it exists
            return _replay(stored, request, receipt_type)

        return self._batcher.run(Operation(attempt, after_conflict))

    def _append_settlement(
        self,
        uow: LedgerUnitOfWork,
        hold: dl.Hold,
        capture: int,
        kind: dl.TxnKind,
        key: str | None,
        request_hash: str | None,
        reason: str | None,
    ) -> SettleReceipt:
        now = self._clock.now()
        movement = dl.settle_movement(hold, capture=capture, kind=kind)
        state = {
            dl.TxnKind.CAPTURE: dl.HoldState.CAPTURED,
            dl.TxnKind.RELEASE: dl.HoldState.RELEASED,
            dl.TxnKind.EXPIRE_HOLD: dl.HoldState.EXPIRED,
        }[kind]
        settled = dl.Hold(
            hold.id,
            hold.account_id,
            hold.amount,
            hold.list_tokens,
            state,
            capture,
            hold.created_at,
            hold.expires_at,
            hold.allocation,
        )
        receipt = SettleReceipt(
            new_id("txn"), hold.id, hold.account_id, state.value, capture, hold.amount - capture
        )
        memo = {"reason": reason} if reason else {}
        uow.append(
            _txn(receipt.txn_id, now, key, request_hash, memo, receipt),
            movement,
            settled_hold=settled,
        )
        return receipt

    def _expire_hold(self, uow: LedgerUnitOfWork, hold: dl.Hold, now: datetime) -> SettleReceipt:
        return self._append_settlement(uow, hold, 0, dl.TxnKind.EXPIRE_HOLD, None, None, "expired")

    def expire(self) -> ExpiryReport:
        """Release holds past their time limit and write off expired lots. Idempotent.

        One transaction per account; an account whose expiry fails is logged and
        reported, and the others' go ahead (it is tried again on the next run). When
        ``GIVE_UP_AFTER`` accounts in a row fail, the cause is not theirs (the
        database is down, say): the last failure is raised."""
        now = self._clock.now()
        holds = released = lots = written_off = 0
        failed: list[str] = []
        in_a_row = 0
        for account_id in self._store.accounts_with_expiring(now):
            try:
                done = self._expire_account(account_id, now)
            except Exception:
                in_a_row += 1
                if in_a_row >= GIVE_UP_AFTER:
                    raise
                log.exception("expiry of account %s failed", account_id)
                failed.append(account_id)
                continue
            in_a_row = 0
            holds += done.holds_expired
            released += done.tokens_released
            lots += done.lots_expired
            written_off += done.tokens_written_off
        return ExpiryReport(holds, released, lots, written_off, tuple(failed))

    def _expire_account(self, account_id: str, now: datetime) -> ExpiryReport:
        holds = released = lots = written_off = 0
        with self._store.unit_of_work() as uow:
            uow.lock_account(account_id)
            for hold in uow.open_holds_due(account_id, now):
                self._expire_hold(uow, hold, now)
                holds += 1
                released += hold.amount
            for lot in uow.lots(account_id):
                if lot.is_expired(now) and lot.remaining > 0:
                    named = {"lot_id": lot.id}  # the statement's line says which lot
                    txn = NewTransaction(new_id("txn"), now, None, None, named, named)
                    uow.append(txn, dl.expire_lot_movement(lot))
                    lots += 1
                    written_off += lot.remaining
            uow.commit()
        return ExpiryReport(holds, released, lots, written_off)


def _replay(stored: StoredTransaction, request: _Request, receipt_type: type[_R]) -> _R:
    if not request.made(stored.request_hash):
        raise IdempotencyConflictError("this idempotency key was used for a different request")
    return receipt_type(**stored.result, replayed=True)


def _txn(
    txn_id: str,
    now: datetime,
    key: str | None,
    request_hash: str | None,
    memo: dict[str, Any] | None,
    receipt: GrantReceipt | HoldReceipt | SettleReceipt,
) -> NewTransaction:
    result = {k: getattr(receipt, k) for k in receipt.__dataclass_fields__ if k != "replayed"}
    return NewTransaction(txn_id, now, key, request_hash, memo or {}, result)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def require_account(store: LedgerStore, account_id: str) -> None:
    """Raise ``AccountNotFoundError`` unless the account exists."""
    if not store.account_exists(account_id):
        raise AccountNotFoundError(f"no account {account_id}", account_id=account_id)
