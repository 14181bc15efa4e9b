"""jobs: an index of the jobs not settled yet

The dispatcher's housekeeping looks for terminal jobs that are not settled every
minute. ``ix_jobs_state`` would walk every finished job to find the few unsettled
ones; this index holds only jobs with no ``settled_at`` on SQLite and PostgreSQL
(partial), and leads with ``settled_at`` on MariaDB, which has no partial indexes.

Revision ID: jobs_0002
Revises: jobs_0001
Create Date: 2026-11-28 01:52:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "jobs_0002"
down_revision: str | Sequence[str] | None = "jobs_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UNSETTLED = sa.text("settled_at IS NULL")


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.create_index(
            "ix_jobs_unsettled",
            ["settled_at", "state"],
            sqlite_where=UNSETTLED,
            postgresql_where=UNSETTLED,
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.drop_index("ix_jobs_unsettled")
