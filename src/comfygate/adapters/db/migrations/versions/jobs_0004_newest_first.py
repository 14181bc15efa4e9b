"""jobs: lists read a page, not the history behind it

Job lists and usage pages are newest first, a page at a time, filtered by account,
user or state. Their indexes had the filter alone (or ended with something else), so
each page found every matching row and sorted them to keep a page: with 50,000 jobs
in an account, 66 ms a page on SQLite (165 ms for one state), 0.4 s on MariaDB. Now
each filter's index ends with the id and a page is a range of it. The duplicate check
keeps its plan (its index ends with the id too, else SQLite walked the account's jobs
newest first to find an image's). Result retention looked for expired results through
every result ever deleted; it now reads an index of the results still kept (partial
on SQLite and PostgreSQL).

On MariaDB indexes are created before those they replace are dropped, so that the
account's foreign key always has one.

Revision ID: jobs_0004
Revises: jobs_0003
Create Date: 2026-11-28 12:10:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "jobs_0004"
down_revision: str | Sequence[str] | None = "jobs_0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEPT = sa.text("result_deleted_at IS NULL")
NEW = {
    "ix_jobs_account_newest": ("jobs", ["account_id", "id"]),
    "ix_jobs_user_newest": ("jobs", ["user_id", "id"]),
    "ix_jobs_user_state": ("jobs", ["user_id", "state", "id"]),
    "ix_usage_events_account_newest": ("usage_events", ["account_id", "id"]),
    "ix_usage_events_user_newest": ("usage_events", ["user_id", "id"]),
}
WIDENED = {  # name: (before, after)
    "ix_jobs_account_state": (["account_id", "state"], ["account_id", "state", "id"]),
    "ix_jobs_state": (["state"], ["state", "id"]),
    "ix_jobs_dedup": (["account_id", "sha256"], ["account_id", "sha256", "id"]),
}


def upgrade() -> None:
    for name, (table, columns) in NEW.items():
        op.create_index(name, table, columns)
    for name, (_, after) in WIDENED.items():
        op.drop_index(name, table_name="jobs")
        op.create_index(name, "jobs", after)
    op.create_index(
        "ix_jobs_results_kept",
        "jobs",
        ["result_deleted_at", "result_expires_at"],
        sqlite_where=KEPT,
        postgresql_where=KEPT,
    )
    op.drop_index("ix_jobs_result_expires_at", table_name="jobs")


def downgrade() -> None:
    op.create_index("ix_jobs_result_expires_at", "jobs", ["result_expires_at"])
    op.drop_index("ix_jobs_results_kept", table_name="jobs")
    for name, (before, _) in WIDENED.items():
        op.drop_index(name, table_name="jobs")
        op.create_index(name, "jobs", before)
    for name, (table, _) in NEW.items():
        op.drop_index(name, table_name=table)
