"""jobs: a running job names its gateway and holds a lease

Several gateways may share one database: each job in ``running`` says which gateway
runs it (``runner``, its instance id) and until when that gateway holds it
(``lease_until``, renewed while it runs). A gateway takes over only the running jobs
whose lease ran out, or its own from before a restart, instead of every running job
it finds at its start (which ran the other gateways' jobs a second time).

Two nullable columns added at the end of the table: on MariaDB an instant change, on
PostgreSQL a change of the catalog only. Running jobs from before have neither, and
are taken as lost, as every running job found at a start was.

Revision ID: jobs_0006
Revises: jobs_0005
Create Date: 2026-11-28 20:10:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from comfygate.adapters.db.base import UtcDateTime

revision: str = "jobs_0006"
down_revision: str | Sequence[str] | None = "jobs_0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("runner", sa.String(200), nullable=True))
    op.add_column("jobs", sa.Column("lease_until", UtcDateTime, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.drop_column("lease_until")
        batch_op.drop_column("runner")
