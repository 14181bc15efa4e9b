"""The audit log: who did which money or admin action to what, and when.

Every grant, subscription, order confirmation, key or user change, price-book
activation and job settlement records one entry. Entries are only ever appended.
Where the store of the action can take it (a job's hold and its settlement), the
entry is written in the action's own transaction (``entry`` builds it): both or
neither. Elsewhere it is written after the action has committed (``record``), so a
crash in between can lose an entry but never invent one for an action that did not
happen. An idempotent action that moved tokens (a grant, a plan's period, a paid
order) records ``once_for`` what it made: the entry's id is derived from that id, and
its retries and replays record again, so the entry that a failure after the action
lost is written by the next call, and never twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol

from comfygate.domain.ids import new_id
from comfygate.services.clock import Clock
from comfygate.services.identity_types import Principal

Actor = Principal | str
"""A caller (``Principal``) or a trusted system actor such as ``"cli"``,
``"system:dispatcher"`` or ``"provider:stripe"``."""


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: str
    at: datetime
    actor: str
    """``role:user_id`` for a principal, else the system actor's name."""
    actor_account_id: str | None
    action: str
    """Dotted verb, e.g. ``ledger.grant``, ``keys.revoke``, ``jobs.settle``."""
    target: str
    """What it acted on: an id such as ``acct_...``, ``key_...``, ``job_...``."""
    account_id: str | None
    """The account the action concerns, so an account's admins can list its entries."""
    details: Mapping[str, Any]


class AuditStore(Protocol):
    def append(self, entry: AuditEntry) -> None: ...

    def append_once(self, entry: AuditEntry) -> bool:
        """Append unless an entry with its id exists; whether it did."""
        ...

    def entries(
        self, *, account_id: str | None, limit: int, before: str | None
    ) -> list[AuditEntry]:
        """Newest first; ``account_id`` None means every account."""
        ...


def describe_actor(actor: Actor) -> tuple[str, str | None]:
    """``(actor, actor_account_id)`` as stored in an entry."""
    if isinstance(actor, Principal):
        return f"{actor.role.value}:{actor.user_id}", actor.account_id
    return actor, None


class AuditLog:
    """Records and lists audit entries."""

    def __init__(self, *, store: AuditStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    def record(
        self,
        *,
        actor: Actor,
        action: str,
        target: str,
        details: Mapping[str, Any] | None = None,
        account_id: str | None = None,
        once_for: str | None = None,
    ) -> AuditEntry:
        """Append one entry; ``details`` must be JSON-serialisable. With ``once_for``
        (the id of what the action made: ``lot_...``, ``sub_...``, ``ord_...``) only
        the first call for that id appends; it sorts where that id was made."""
        entry = self.entry(
            actor=actor, action=action, target=target, details=details, account_id=account_id
        )
        if once_for is None:
            self._store.append(entry)
            return entry
        # The id's time-ordered part, so the entry sorts where its action happened. Ids
        # share it only when one is made from another: a paid order's period
        # (``sub_X`` of ``ord_X``), whose entry is the order's, written once too.
        entry = replace(entry, id=f"aud_{once_for.partition('_')[2]}")
        self._store.append_once(entry)
        return entry

    def entry(
        self,
        *,
        actor: Actor,
        action: str,
        target: str,
        details: Mapping[str, Any] | None = None,
        account_id: str | None = None,
    ) -> AuditEntry:
        """A new entry, not stored: for a store that writes it with the action itself."""
        who, who_account = describe_actor(actor)
        return AuditEntry(
            id=new_id("aud"),
            at=self._clock.now(),
            actor=who,
            actor_account_id=who_account,
            action=action,
            target=target,
            account_id=account_id,
            details=dict(details or {}),
        )

    def entries(
        self, *, account_id: str | None = None, limit: int = 100, before: str | None = None
    ) -> list[AuditEntry]:
        """Newest first, paged by ``before`` (an entry id)."""
        return self._store.entries(
            account_id=account_id, limit=max(1, min(limit, 1000)), before=before
        )
