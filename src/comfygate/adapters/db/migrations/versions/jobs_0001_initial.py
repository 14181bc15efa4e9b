"""jobs: jobs, job events, usage events

Revision ID: jobs_0001
Revises:
Create Date: 2026-11-27 22:40:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import comfygate.adapters.db.base

revision: str = "jobs_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("jobs",)
depends_on: str | Sequence[str] | None = ("ledger_0001",)

UtcDateTime = comfygate.adapters.db.base.UtcDateTime
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _jobs_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("user_id", sa.String(length=40), nullable=False),
        sa.Column("capability", sa.String(length=64), nullable=False),
        sa.Column("options", sa.Text(), nullable=False),
        sa.Column("options_key", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(length=12), nullable=False),
        sa.Column("tier", sa.SmallInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("md5", sa.String(length=32), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("image_format", sa.String(length=8), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("tokens", sa.BigInteger(), nullable=False),
        sa.Column("list_tokens", sa.BigInteger(), nullable=False),
        sa.Column("hold_id", sa.String(length=40), nullable=False),
        sa.Column("hold_expires_at", UtcDateTime(), nullable=False),
        sa.Column("price_book_version", sa.String(length=64), nullable=False),
        sa.Column("breakdown", sa.Text(), nullable=False),
        sa.Column("quote_id", sa.String(length=40), nullable=True),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.Column("input_name", sa.String(length=64), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("started_at", UtcDateTime(), nullable=True),
        sa.Column("finished_at", UtcDateTime(), nullable=True),
        sa.Column("settled_at", UtcDateTime(), nullable=True),
        sa.Column("tokens_charged", sa.BigInteger(), nullable=True),
        sa.Column("failure_code", sa.String(length=64), nullable=True),
        sa.Column("failure_reason", sa.Text(), nullable=True),
        sa.Column("engine", sa.String(length=32), nullable=True),
        sa.Column("instance", sa.String(length=200), nullable=True),
        sa.Column("result_name", sa.String(length=64), nullable=True),
        sa.Column("result_width", sa.Integer(), nullable=True),
        sa.Column("result_height", sa.Integer(), nullable=True),
        sa.Column("result_expires_at", UtcDateTime(), nullable=True),
        sa.Column("result_deleted_at", UtcDateTime(), nullable=True),
        sa.Column("inference_s", sa.Float(), nullable=True),
        sa.Column("gpu_peak_mb", sa.Integer(), nullable=True),
        sa.Column("result_metadata", sa.Text(), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "jobs",
        *_jobs_columns(),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_jobs_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
        sa.UniqueConstraint("account_id", "idempotency_key", name="uq_jobs_idempotency"),
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index("ix_jobs_dedup", ["account_id", "sha256"], unique=False)
        batch_op.create_index("ix_jobs_account_state", ["account_id", "state"], unique=False)
        batch_op.create_index("ix_jobs_state", ["state"], unique=False)
        batch_op.create_index("ix_jobs_result_expires_at", ["result_expires_at"], unique=False)

    op.create_table(
        "job_events",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("job_id", sa.String(length=40), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_job_events_job_id_jobs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_events")),
        sa.UniqueConstraint("job_id", "seq", name="uq_job_events_seq"),
    )

    op.create_table(
        "usage_events",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("job_id", sa.String(length=40), nullable=False),
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("user_id", sa.String(length=40), nullable=False),
        sa.Column("capability", sa.String(length=64), nullable=False),
        sa.Column("outcome", sa.String(length=12), nullable=False),
        sa.Column("tokens_charged", sa.BigInteger(), nullable=False),
        sa.Column("list_tokens", sa.BigInteger(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("queue_wait_s", sa.Float(), nullable=True),
        sa.Column("inference_s", sa.Float(), nullable=True),
        sa.Column("engine", sa.String(length=32), nullable=True),
        sa.Column("price_book_version", sa.String(length=64), nullable=False),
        sa.Column("gpu_peak_mb", sa.Integer(), nullable=True),
        sa.Column("failure_code", sa.String(length=64), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_usage_events_account_id_accounts")
        ),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_usage_events_job_id_jobs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_events")),
        sa.UniqueConstraint("job_id", name=op.f("uq_usage_events_job_id")),
    )
    with op.batch_alter_table("usage_events", schema=None) as batch_op:
        batch_op.create_index(
            "ix_usage_events_account_created", ["account_id", "created_at"], unique=False
        )
        batch_op.create_index("ix_usage_events_created_at", ["created_at"], unique=False)


def downgrade() -> None:
    # Tables only, children first: dropping a table drops its indexes, and MariaDB
    # refuses to drop an index that serves a foreign key while the key is there.
    op.drop_table("usage_events")
    op.drop_table("job_events")
    op.drop_table("jobs")
