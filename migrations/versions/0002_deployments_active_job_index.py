"""Index the deployments held by a job (active_job_id), for the statement that ends each job.

Ending a job releases the deployment it held (``WHERE active_job_id = :job OR id = :deployment``) and
deleting a job row nulls the foreign key: without an index both scan every deployment. Partial: only the
few deployments an operation is running on are in it.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 15:40:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from models.base import SCHEMA

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_deployments_active_job_id",
        "deployments",
        ["active_job_id"],
        unique=False,
        schema=SCHEMA,
        postgresql_where=sa.text("active_job_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_deployments_active_job_id", table_name="deployments", schema=SCHEMA)
