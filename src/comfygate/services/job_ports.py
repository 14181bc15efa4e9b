"""Records and ports of the jobs side: the job store, result storage, share links,
image inspection, and the metrics the dispatcher reports.

A ``Job`` is a row of the jobs table as the services see it. State changes are
compare-and-set (``transition`` names the state it expects), so two actors racing on
one job (a cancel and the dispatcher, two processes after a restart) can never both
win.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from comfygate.domain.images import ImageInfo
from comfygate.domain.jobs import JobState
from comfygate.domain.pricing_options import JsonScalar
from comfygate.services.audit import AuditEntry


@dataclass(frozen=True, slots=True)
class Job:
    """A job and everything recorded about it."""

    id: str
    account_id: str
    user_id: str
    capability: str
    options: Mapping[str, JsonScalar]
    options_key: str
    state: JobState
    tier: int
    sha256: str
    md5: str
    size_bytes: int
    image_format: str
    width: int
    height: int
    tokens: int
    """Tokens on hold for the job (0 for an unlimited plan): what success charges."""
    list_tokens: int
    """The list price, recorded even when an unlimited plan pays nothing."""
    hold_id: str
    hold_expires_at: datetime
    price_book_version: str
    breakdown: Sequence[Mapping[str, str]]
    quote_id: str | None
    idempotency_key: str | None
    input_name: str
    created_at: datetime
    attempts: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    settled_at: datetime | None = None
    tokens_charged: int | None = None
    """Set at settlement: the tokens captured (0 for a failed or canceled job)."""
    failure_code: str | None = None
    failure_reason: str | None = None
    engine: str | None = None
    instance: str | None = None
    result_name: str | None = None
    result_width: int | None = None
    result_height: int | None = None
    result_expires_at: datetime | None = None
    result_deleted_at: datetime | None = None
    inference_s: float | None = None
    gpu_peak_mb: int | None = None
    result_metadata: Mapping[str, Any] = field(default_factory=dict)
    runner: str | None = None
    """The gateway (its ``instance_id``) that runs the job, or last ran it."""
    lease_until: datetime | None = None
    """While running: the runner holds the job until then, and renews it while it
    runs. Past it, any gateway may take the job as lost (``recovery``)."""

    @property
    def megapixels(self) -> float:
        """For reports only; prices are computed from the exact pixel count."""
        return self.width * self.height / 1_000_000

    @property
    def result_available(self) -> bool:
        return (
            self.state is JobState.SUCCEEDED
            and self.result_name is not None
            and self.result_deleted_at is None
        )


@dataclass(frozen=True, slots=True)
class JobEvent:
    """One entry of a job's event stream (``queued``, ``started``, ``progress`` ...)."""

    job_id: str
    seq: int
    kind: str
    data: Mapping[str, Any]
    created_at: datetime

    @property
    def is_terminal(self) -> bool:
        return self.kind in TERMINAL_EVENTS


TERMINAL_EVENTS = frozenset({"succeeded", "failed", "canceled"})


@dataclass(frozen=True, slots=True)
class UsageEvent:
    """What one settled job used and cost: the unit of usage reports and exports."""

    id: str
    job_id: str
    account_id: str
    user_id: str
    capability: str
    outcome: str
    tokens_charged: int
    list_tokens: int
    width: int
    height: int
    queue_wait_s: float | None
    inference_s: float | None
    engine: str | None
    price_book_version: str
    gpu_peak_mb: int | None
    failure_code: str | None
    created_at: datetime

    @property
    def megapixels(self) -> float:
        return self.width * self.height / 1_000_000


@dataclass(frozen=True, slots=True)
class UsageTotals:
    jobs: int
    """Settled jobs, whatever their outcome."""
    succeeded: int
    tokens_charged: int
    list_tokens: int
    """What the succeeded jobs cost at list price (a VIP's are charged 0): a failed or
    canceled job delivered nothing, at any price."""


class JobStore(Protocol):
    def add(
        self,
        job: Job,
        first_event: JobEvent,
        audit: AuditEntry | None = None,
        *,
        max_active: int | None = None,
        duplicate_rule: DuplicateRule | None = None,
    ) -> Job:
        """Insert a new job, its first event and ``audit`` in one transaction.

        Raises ``IdempotencyConflictError`` if the account already has a job under
        ``job.idempotency_key`` (the caller then loads that one), and
        ``ConcurrencyLimitError`` if ``max_active`` is given and the account already has
        that many active jobs (counted under the account's lock, so gateways that
        submit at the same moment cannot all pass). Under the same lock, the
        ``duplicate_rule`` is asked about the earlier jobs it selects with this job's
        image, capability and options; ``DuplicateSubmission`` carries the one it names.
        """
        ...

    def get(self, job_id: str) -> Job | None: ...

    def by_idempotency_key(self, account_id: str, key: str) -> Job | None: ...

    def find_duplicates(
        self,
        *,
        account_id: str,
        sha256: str,
        capability: str,
        options_key: str,
        rule: DuplicateRule,
    ) -> list[Job]:
        """Earlier jobs of the account with the same image, capability and options that
        ``rule`` selects (visible, blocking), newest first (a handful at most)."""
        ...

    def count_active(self, account_id: str) -> int:
        """Queued plus running jobs of the account."""
        ...

    def transition(
        self,
        job: Job,
        *,
        target: JobState,
        changes: Mapping[str, Any],
        events: Sequence[JobEvent] = (),
    ) -> Job | None:
        """Move ``job`` from its state (as read) to ``target``, set ``changes`` (names
        of ``Job`` fields) and store ``events``, in one transaction. Returns the job
        as now stored; None (and nothing written) if its state had changed meanwhile.

        Only state changes touch a job that is not terminal, so a job whose state is
        as read is as read in every field: the result is ``job`` with the changes."""
        ...

    def record_settlement(
        self,
        job: Job,
        *,
        tokens_charged: int,
        settled_at: datetime,
        usage: UsageEvent,
        events: Sequence[JobEvent],
        audit: AuditEntry | None = None,
    ) -> tuple[Job, bool]:
        """Mark the job settled, write its usage event, its last events and ``audit``,
        once, in one transaction; the flag says whether this call did it (False: it
        was settled already and nothing was written)."""
        ...

    def list_jobs(
        self,
        *,
        account_id: str | None,
        user_id: str | None,
        state: JobState | None,
        limit: int,
        before: str | None,
    ) -> list[Job]:
        """Newest first; ``before`` is a job id to page from; None filters mean all."""
        ...

    def in_states(self, states: Sequence[JobState]) -> list[Job]:
        """Every job in one of ``states``, oldest first (restart recovery)."""
        ...

    def unsettled(self) -> list[Job]:
        """Terminal jobs whose settlement has not been recorded (a crash in between)."""
        ...

    def reachable(self) -> bool:
        """Whether the store answers at all (a trivial read): tells a job's own
        failure from the store's."""
        ...

    def renew_leases(self, job_ids: Collection[str], *, runner: str, until: datetime) -> set[str]:
        """Extend to ``until`` the leases of those of ``job_ids`` that are running under
        ``runner``; the ids renewed."""
        ...

    def results_due(self, *, before: datetime, limit: int) -> list[Job]:
        """Jobs whose result expired before ``before`` and is not yet deleted."""
        ...

    def mark_result_deleted(self, job_id: str, *, at: datetime) -> None: ...

    def add_events(self, events: Sequence[JobEvent]) -> None: ...

    def events(self, job_id: str, *, after_seq: int) -> list[JobEvent]: ...

    def last_event_seq(self, job_id: str) -> int: ...

    def usage(
        self,
        *,
        account_id: str | None,
        user_id: str | None,
        since: datetime | None,
        until: datetime | None,
        limit: int,
        before: str | None,
    ) -> list[UsageEvent]:
        """Usage events newest first; None filters mean all."""
        ...

    def usage_totals(
        self,
        *,
        account_id: str | None,
        user_id: str | None,
        since: datetime | None,
        until: datetime | None,
    ) -> UsageTotals: ...


class ResultStorage(Protocol):
    """Where a job's input and result files live; each job owns one folder."""

    def adopt_input(self, job_id: str, upload: Path, *, suffix: str) -> str:
        """Move an upload into the job's folder; returns its name there."""
        ...

    def input_path(self, job_id: str, name: str) -> Path: ...

    def output_dir(self, job_id: str) -> Path:
        """A folder the engine writes the result into (created on demand)."""
        ...

    def result_name(self, job_id: str, output_path: Path) -> str:
        """The name under which an engine's output is kept (moved in if needed)."""
        ...

    def result_path(self, job_id: str, name: str) -> Path | None:
        """The result file, or None if it is gone."""
        ...

    def delete_input(self, job_id: str, name: str) -> None: ...

    def delete_job(self, job_id: str) -> None:
        """Remove everything the job owns."""
        ...


class ShareLinks(Protocol):
    def sign(self, job_id: str, *, expires_at: datetime) -> str:
        """A token that names ``job_id`` until ``expires_at``."""
        ...

    def verify(self, token: str, *, now: datetime) -> str:
        """The job id in a valid, unexpired token; ``ShareLinkInvalidError`` or
        ``ShareLinkExpiredError`` otherwise."""
        ...


class ImageInspector(Protocol):
    def __call__(
        self,
        path: Path,
        *,
        max_pixels: int,
        min_side_px: int,
        declared: tuple[int, int] | None = None,
    ) -> ImageInfo:
        """Header facts of an image on disk, limits enforced; never decodes pixels."""
        ...


class JobMetrics(Protocol):
    """What the jobs side reports (the Prometheus holder implements it)."""

    def job_state(self, capability: str, state: str) -> None: ...

    def queue_depth(self, capability: str, depth: int) -> None: ...

    def tokens(self, capability: str, what: str, amount: int) -> None:
        """``what`` is ``held``, ``captured`` or ``released``."""
        ...

    def inference(self, capability: str, engine: str, seconds: float) -> None: ...


class NullJobMetrics:
    """Metrics that go nowhere (CLI, unit tests)."""

    def job_state(self, capability: str, state: str) -> None:
        return None

    def queue_depth(self, capability: str, depth: int) -> None:
        return None

    def tokens(self, capability: str, what: str, amount: int) -> None:
        return None

    def inference(self, capability: str, engine: str, seconds: float) -> None:
        return None


@dataclass(frozen=True, slots=True)
class DuplicateRule:
    """Which earlier jobs with the same image, capability and options make a submission
    a duplicate. The store asks for exactly those in its query: visible to ``user_id``
    (None: the key sees the whole account), and queued, running, or succeeded at or
    after ``succeeded_since`` with the result still kept. So no cap on the rows read can
    hide a blocking job behind others; ``duplicate_of`` then names the one it is."""

    user_id: str | None
    succeeded_since: datetime
    duplicate_of: Callable[[Sequence[Job]], Job | None]


class DuplicateSubmission(Exception):
    """The job being stored duplicates ``job``, stored by another gateway meanwhile."""

    def __init__(self, job: Job) -> None:
        super().__init__(job.id)
        self.job = job
