"""Drop gpu_reservations.counts_toward_quota: a tenant's use is now each deployment's reservations up to its desired
replicas.

The flag (0004) left a platform surge out of the tenant's use, but a drain or a recovery that ended as a move kept
the surge rows and released the counted ones, so the moved replicas never counted again and the tenant could go
over its quota. Capping each deployment at replicas_desired x gpus_per_replica leaves every surge out while it
overlaps, whichever rows remain. The downgrade adds the column back with every row counted.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27 21:40:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from models.base import SCHEMA

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_column("gpu_reservations", "counts_toward_quota", schema=SCHEMA)


def downgrade() -> None:
    op.add_column(
        "gpu_reservations",
        sa.Column("counts_toward_quota", sa.Boolean(), server_default=sa.true(), nullable=False),
        schema=SCHEMA,
    )
