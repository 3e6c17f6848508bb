"""gpu_reservations.counts_toward_quota: a platform-started surge holds GPUs but not against the tenant's quota.

A single-replica restart's extra replica, and a drain's or a recovery's replacements, were admitted without a
quota check but then summed into the tenant's use like any reservation: while one ran, the tenant's own creates
could be refused with quota_exceeded. Existing rows count, as they did.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 20:05:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from models.base import SCHEMA

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "gpu_reservations",
        sa.Column("counts_toward_quota", sa.Boolean(), server_default=sa.true(), nullable=False),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_column("gpu_reservations", "counts_toward_quota", schema=SCHEMA)
