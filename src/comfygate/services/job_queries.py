"""Reading jobs, results and usage, as the caller is allowed to see them.

Visibility: a ``user`` sees the jobs it submitted, an ``admin`` every job of its
account, an ``operator`` every job. Anything else is ``JobNotFoundError`` (404), never
"forbidden", so job ids cannot be probed across accounts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from comfygate.domain.errors import (
    AccountNotFoundError,
    InvalidInputError,
    JobNotFoundError,
    ResultExpiredError,
    ResultNotReadyError,
)
from comfygate.domain.jobs import JobState
from comfygate.services.clock import Clock
from comfygate.services.identity_types import Principal, Role
from comfygate.services.job_ports import (
    Job,
    JobStore,
    ResultStorage,
    ShareLinks,
    UsageEvent,
    UsageTotals,
)

MAX_PAGE = 200
DEFAULT_SHARE_S = 86_400


@dataclass(frozen=True, slots=True)
class JobPage:
    jobs: list[Job]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class ResultFile:
    job: Job
    path: Path


@dataclass(frozen=True, slots=True)
class ShareLink:
    token: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class UsageReport:
    events: list[UsageEvent]
    totals: UsageTotals | None
    """Over the whole range, with the first page (None on the pages after it)."""
    next_cursor: str | None


def can_see(principal: Principal, job: Job) -> bool:
    """Whether ``principal`` may see ``job`` (see the module docstring)."""
    if principal.is_operator:
        return True
    if job.account_id != principal.account_id:
        return False
    return principal.role is not Role.USER or job.user_id == principal.user_id


class JobQueries:
    """Jobs, results, share links and usage for API callers."""

    def __init__(
        self,
        *,
        store: JobStore,
        storage: ResultStorage,
        links: ShareLinks,
        clock: Clock,
        max_share_s: int,
    ) -> None:
        self._store = store
        self._storage = storage
        self._links = links
        self._clock = clock
        self._max_share_s = max_share_s

    def get(self, *, principal: Principal, job_id: str) -> Job:
        """The job, if ``principal`` may see it; else ``JobNotFoundError``."""
        job = self._store.get(job_id)
        if job is None or not can_see(principal, job):
            raise JobNotFoundError(f"no job {job_id}", job_id=job_id)
        return job

    def list(
        self,
        *,
        principal: Principal,
        state: JobState | None = None,
        limit: int = 50,
        cursor: str | None = None,
        account_id: str | None = None,
    ) -> JobPage:
        """The caller's jobs newest first; operators may name any ``account_id``
        (or none: every account)."""
        limit = max(1, min(limit, MAX_PAGE))
        owner, user = _scope(principal, account_id)
        jobs = self._store.list_jobs(
            account_id=owner, user_id=user, state=state, limit=limit, before=cursor
        )
        return JobPage(jobs, jobs[-1].id if len(jobs) == limit else None)

    def result(self, *, principal: Principal, job_id: str) -> ResultFile:
        """The result file of a succeeded job the caller may see."""
        return self._result_of(self.get(principal=principal, job_id=job_id))

    def _result_of(self, job: Job) -> ResultFile:
        if job.state is not JobState.SUCCEEDED:
            raise ResultNotReadyError(
                f"job {job.id} is {job.state.value}; it has no result",
                job_id=job.id,
                state=job.state.value,
            )
        path = None
        expired = job.result_expires_at is not None and job.result_expires_at <= self._clock.now()
        if job.result_name is not None and job.result_deleted_at is None and not expired:
            # (past its retention it is gone, whether or not the purge has run yet)
            path = self._storage.result_path(job.id, job.result_name)
        if path is None:
            raise ResultExpiredError(
                f"the result of job {job.id} was deleted after its retention period",
                job_id=job.id,
            )
        return ResultFile(job, path)

    def share(
        self, *, principal: Principal, job_id: str, expires_in_s: int | None = None
    ) -> ShareLink:
        """A signed link to the result, valid ``expires_in_s`` (default a day, never
        past the operator's maximum nor the result's own retention)."""
        if expires_in_s is None:
            expires_in_s = min(DEFAULT_SHARE_S, self._max_share_s)
        if not 0 < expires_in_s <= self._max_share_s:
            raise InvalidInputError(
                f"expires_in_s must be between 1 and {self._max_share_s}",
                max_s=self._max_share_s,
            )
        job = self._result_of(self.get(principal=principal, job_id=job_id)).job
        expires_at = self._clock.now() + timedelta(seconds=expires_in_s)
        if job.result_expires_at is not None:
            expires_at = min(expires_at, job.result_expires_at)
        return ShareLink(self._links.sign(job.id, expires_at=expires_at), expires_at)

    def shared_result(self, *, token: str) -> ResultFile:
        """The result a share token names (no caller: the token is the permission)."""
        job_id = self._links.verify(token, now=self._clock.now())
        job = self._store.get(job_id)
        if job is None:
            raise JobNotFoundError(f"no job {job_id}", job_id=job_id)
        return self._result_of(job)

    def usage(
        self,
        *,
        principal: Principal,
        account_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        cursor: str | None = None,
        totals: bool = True,
    ) -> UsageReport:
        """Usage events: a user's own, an admin's account's, an operator's chosen
        account (or all); with the range's ``totals`` on the first page, where they
        are asked for. (They sum the whole range: every page of an export summed it
        again.)"""
        limit = max(1, min(limit, 10_000))
        owner, user = _scope(principal, account_id)
        events = self._store.usage(
            account_id=owner, user_id=user, since=since, until=until, limit=limit + 1,
            before=cursor,
        )  # fmt: skip
        summed = None
        if totals and not cursor:
            summed = self._store.usage_totals(
                account_id=owner, user_id=user, since=since, until=until
            )
        more = len(events) > limit  # (one more than the page: a full last page has no next)
        return UsageReport(events[:limit], summed, events[limit - 1].id if more else None)


def _scope(principal: Principal, account_id: str | None) -> tuple[str | None, str | None]:
    """``(account_id, user_id)`` filters for what ``principal`` may list."""
    if principal.is_operator:
        return account_id, None
    if account_id is not None and account_id != principal.account_id:
        # Another account's data does not exist for this caller.
        raise AccountNotFoundError(f"no account {account_id}", account_id=account_id)
    if principal.role is Role.USER:
        return principal.account_id, principal.user_id
    return principal.account_id, None
