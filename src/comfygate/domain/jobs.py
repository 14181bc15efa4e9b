"""Jobs: the state machine, the duplicate rule, and the fair priority queue (pure).

A job moves ``queued -> running -> succeeded | failed | canceled``; a queued job may
also be canceled or failed (e.g. its hold can no longer cover it), and a running job
may go back to ``queued`` once when its worker is lost (restart recovery, retryable
worker errors). Terminal states never change.

Queue order: plan tier first (VIP before everyone else), then round-robin between
the accounts waiting in that tier, then first come first served inside an account, so
one customer's batch of a thousand photos cannot starve another customer's one photo.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import IntEnum, StrEnum
from typing import Any

from comfygate.domain.errors import JobStateError

MAX_ATTEMPTS = 2
"""A job runs at most twice: the first attempt and one retry after a lost worker."""


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES

    @property
    def is_active(self) -> bool:
        """Queued or running: counted against fair-use concurrency limits."""
        return self in ACTIVE_STATES


TERMINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELED})
ACTIVE_STATES = frozenset({JobState.QUEUED, JobState.RUNNING})

TRANSITIONS: Mapping[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.RUNNING, JobState.CANCELED, JobState.FAILED}),
    JobState.RUNNING: frozenset(
        {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELED, JobState.QUEUED}
    ),
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELED: frozenset(),
}


def can_transition(current: JobState, target: JobState) -> bool:
    """Whether the state machine allows ``current -> target``."""
    return target in TRANSITIONS[current]


def check_transition(job_id: str, current: JobState, target: JobState) -> None:
    """Raise ``JobStateError`` unless ``current -> target`` is allowed."""
    if not can_transition(current, target):
        raise JobStateError(
            f"job {job_id} is {current.value}; it cannot become {target.value}",
            job_id=job_id,
            state=current.value,
            target=target.value,
        )


class Tier(IntEnum):
    """Queue priority by plan: lower runs first."""

    VIP = 0
    STANDARD = 1


def options_key(options: Mapping[str, Any]) -> str:
    """A short stable digest of normalised options (part of the duplicate key)."""
    canonical = json.dumps(dict(options), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class DedupCandidate:
    """What the duplicate rule needs to know about an earlier job."""

    state: JobState
    created_at: datetime
    result_available: bool


def blocks_resubmission(earlier: DedupCandidate, *, now: datetime, window_s: int) -> bool:
    """Whether an earlier job with the same image, account, capability and options
    makes a new submission a duplicate.

    Queued and running jobs always do (charging twice for work in flight is never
    wanted); a succeeded job does within ``window_s`` while its result still exists;
    failed and canceled jobs never do, so a customer can always retry.
    """
    if earlier.state.is_active:
        return True
    if earlier.state is not JobState.SUCCEEDED or not earlier.result_available:
        return False
    return earlier.created_at >= now - timedelta(seconds=window_s)


TIMEOUT_GRACE_S = 10.0
"""How much later than the engine's own timeout the run's guard fires."""


def longest_run_s(job_timeout_s: float) -> float:
    """The longest one attempt may take: waiting for a worker (an engine with a pool
    waits at most the timeout), then the timeout from when it has one, then the guard's
    grace."""
    return 2 * job_timeout_s + TIMEOUT_GRACE_S


def hold_ttl_s(*, job_timeout_s: float, queue_allowance_s: int) -> int:
    """A hold lifetime that outlives every attempt of the job (its wait for a worker
    and its guard's grace included) plus its time in queue, so a hold can never expire
    under a job that is still allowed to run."""
    return int(longest_run_s(job_timeout_s) * MAX_ATTEMPTS) + queue_allowance_s


@dataclass(frozen=True, slots=True)
class QueueEntry:
    job_id: str
    account_id: str
    tier: int


class FairQueue:
    """Tier first, then round-robin between accounts, then FIFO within an account.

    Not thread-safe: owned by one dispatcher task.
    """

    def __init__(self) -> None:
        self._tiers: dict[int, OrderedDict[str, deque[str]]] = {}
        self._where: dict[str, QueueEntry] = {}

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._where

    def push(self, entry: QueueEntry) -> None:
        """Add a job at the back of its account's line (no-op if already queued)."""
        if entry.job_id in self._where:
            return
        accounts = self._tiers.setdefault(entry.tier, OrderedDict())
        accounts.setdefault(entry.account_id, deque()).append(entry.job_id)
        self._where[entry.job_id] = entry

    def pop(self) -> QueueEntry | None:
        """The next job to run, or None when empty."""
        for tier in sorted(self._tiers):
            accounts = self._tiers[tier]
            if not accounts:
                continue
            account_id, line = next(iter(accounts.items()))
            job_id = line.popleft()
            # The account just served goes to the back of its tier's rotation.
            accounts.move_to_end(account_id)
            if not line:
                del accounts[account_id]
            return self._where.pop(job_id)
        return None

    def remove(self, job_id: str) -> bool:
        """Take a job out of the queue (a cancel before start); False if not queued."""
        entry = self._where.pop(job_id, None)
        if entry is None:
            return False
        accounts = self._tiers[entry.tier]
        line = accounts[entry.account_id]
        line.remove(job_id)
        if not line:
            del accounts[entry.account_id]
        return True
