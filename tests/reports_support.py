"""Settled jobs (and their usage) written straight to the database, for the report
tests."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from comfygate.adapters.db.sql_ledger import SqlLedgerStore
from comfygate.adapters.db.tables_jobs import jobs, usage_events
from comfygate.domain.ids import new_id

T0 = datetime(2026, 11, 27, 0, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Use:
    account_id: str
    capability: str
    outcome: str
    tokens_charged: int
    list_tokens: int
    inference_s: float | None
    failure_code: str | None
    at: datetime
    width: int = 800
    height: int = 600
    options: str = "{}"
    """As recorded on the job: canonical JSON."""
    engine: str = "preview"
    gpu_peak_mb: int | None = None


def new_account(engine: sa.Engine, name: str) -> str:
    account_id = new_id("acct")
    SqlLedgerStore(engine).create_account(account_id=account_id, name=name, created_at=T0)
    return account_id


def store_usage(engine: sa.Engine, uses: list[Use]) -> None:
    job_rows, usage_rows = [], []
    for use in uses:
        job_id = new_id("job")
        job_rows.append({
            "id": job_id, "account_id": use.account_id, "user_id": "user_1",
            "capability": use.capability, "options": use.options, "options_key": "k",
            "state": use.outcome, "tier": 1, "sha256": "ab" * 32, "md5": "cd" * 16,
            "size_bytes": 1, "image_format": "png", "width": use.width, "height": use.height,
            "tokens": use.list_tokens, "list_tokens": use.list_tokens,
            "hold_id": new_id("hold"), "hold_expires_at": use.at, "price_book_version": "v",
            "breakdown": "[]", "input_name": "in.png", "attempts": 1, "created_at": use.at,
            "settled_at": use.at, "tokens_charged": use.tokens_charged, "result_metadata": "{}",
        })  # fmt: skip
        usage_rows.append({
            "id": new_id("use"), "job_id": job_id, "account_id": use.account_id,
            "user_id": "user_1", "capability": use.capability, "outcome": use.outcome,
            "tokens_charged": use.tokens_charged, "list_tokens": use.list_tokens,
            "width": use.width, "height": use.height, "queue_wait_s": 0.1,
            "inference_s": use.inference_s, "engine": use.engine, "price_book_version": "v",
            "gpu_peak_mb": use.gpu_peak_mb,
            "failure_code": use.failure_code, "created_at": use.at,
        })  # fmt: skip
    with engine.begin() as conn:
        conn.execute(jobs.insert(), job_rows)
        conn.execute(usage_events.insert(), usage_rows)
