"""Jobs tables: jobs, their event streams, and one usage event per settled job.

``jobs`` is the queue of record: the in-process dispatcher is rebuilt from it after a
restart. ``job_events`` lets a late subscriber replay a job's history. ``usage_events``
is unique per job, so settling twice records usage once.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from comfygate.adapters.db.base import (
    Id,
    IdempotencyKey,
    Tokens,
    UtcDateTime,
    metadata,
    partial_index,
)

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Seconds = sa.Float().with_variant(mysql.DOUBLE(asdecimal=False), "mysql")
"""Durations in seconds, in double precision everywhere (MariaDB's FLOAT has 4 bytes),
read as floats (MariaDB's DOUBLE would read as Decimal)."""

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("account_id", Id, sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("user_id", Id, nullable=False),
    sa.Column("capability", sa.String(64), nullable=False),
    sa.Column("options", sa.Text, nullable=False),
    sa.Column("options_key", sa.String(32), nullable=False),
    sa.Column("state", sa.String(12), nullable=False),
    sa.Column("tier", sa.SmallInteger, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("md5", sa.String(32), nullable=False),
    sa.Column("size_bytes", sa.BigInteger, nullable=False),
    sa.Column("image_format", sa.String(8), nullable=False),
    sa.Column("width", sa.Integer, nullable=False),
    sa.Column("height", sa.Integer, nullable=False),
    sa.Column("tokens", Tokens, nullable=False),
    sa.Column("list_tokens", Tokens, nullable=False),
    sa.Column("hold_id", Id, nullable=False),
    sa.Column("hold_expires_at", UtcDateTime, nullable=False),
    sa.Column("price_book_version", sa.String(64), nullable=False),
    sa.Column("breakdown", sa.Text, nullable=False),
    sa.Column("quote_id", Id, nullable=True),
    sa.Column("idempotency_key", IdempotencyKey, nullable=True),
    sa.Column("input_name", sa.String(64), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("started_at", UtcDateTime, nullable=True),
    sa.Column("finished_at", UtcDateTime, nullable=True),
    sa.Column("settled_at", UtcDateTime, nullable=True),
    sa.Column("tokens_charged", Tokens, nullable=True),
    sa.Column("failure_code", sa.String(64), nullable=True),
    sa.Column("failure_reason", sa.Text, nullable=True),
    sa.Column("engine", sa.String(32), nullable=True),
    sa.Column("instance", sa.String(200), nullable=True),
    sa.Column("result_name", sa.String(64), nullable=True),
    sa.Column("result_width", sa.Integer, nullable=True),
    sa.Column("result_height", sa.Integer, nullable=True),
    sa.Column("result_expires_at", UtcDateTime, nullable=True),
    sa.Column("result_deleted_at", UtcDateTime, nullable=True),
    sa.Column("inference_s", Seconds, nullable=True),
    sa.Column("gpu_peak_mb", sa.Integer, nullable=True),
    sa.Column("result_metadata", sa.Text, nullable=False),
    sa.Column("runner", sa.String(200), nullable=True),
    sa.Column("lease_until", UtcDateTime, nullable=True),
    sa.UniqueConstraint("account_id", "idempotency_key", name="uq_jobs_idempotency"),
    # Lists are newest first, a page at a time: each filter's index ends with the id,
    # so that a page is a range of it, whatever the history behind it.
    sa.Index("ix_jobs_account_newest", "account_id", "id"),
    sa.Index("ix_jobs_account_state", "account_id", "state", "id"),
    sa.Index("ix_jobs_user_newest", "user_id", "id"),
    sa.Index("ix_jobs_user_state", "user_id", "state", "id"),
    sa.Index("ix_jobs_state", "state", "id"),
    sa.Index("ix_jobs_dedup", "account_id", "sha256", "id"),
    partial_index(
        "ix_jobs_results_kept",
        "result_deleted_at",
        "result_expires_at",
        where="result_deleted_at IS NULL",
    ),
    partial_index("ix_jobs_unsettled", "settled_at", "state", where="settled_at IS NULL"),
)

job_events = sa.Table(
    "job_events",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("job_id", Id, sa.ForeignKey("jobs.id"), nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("data", sa.Text, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.UniqueConstraint("job_id", "seq", name="uq_job_events_seq"),
)

usage_events = sa.Table(
    "usage_events",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("job_id", Id, sa.ForeignKey("jobs.id"), nullable=False, unique=True),
    sa.Column("account_id", Id, sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("user_id", Id, nullable=False),
    sa.Column("capability", sa.String(64), nullable=False),
    sa.Column("outcome", sa.String(12), nullable=False),
    sa.Column("tokens_charged", Tokens, nullable=False),
    sa.Column("list_tokens", Tokens, nullable=False),
    sa.Column("width", sa.Integer, nullable=False),
    sa.Column("height", sa.Integer, nullable=False),
    sa.Column("queue_wait_s", Seconds, nullable=True),
    sa.Column("inference_s", Seconds, nullable=True),
    sa.Column("engine", sa.String(32), nullable=True),
    sa.Column("price_book_version", sa.String(64), nullable=False),
    sa.Column("gpu_peak_mb", sa.Integer, nullable=True),
    sa.Column("failure_code", sa.String(64), nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Index("ix_usage_events_account_created", "account_id", "created_at"),
    sa.Index("ix_usage_events_created_at", "created_at"),
    sa.Index("ix_usage_events_account_newest", "account_id", "id"),
    sa.Index("ix_usage_events_user_newest", "user_id", "id"),
)
