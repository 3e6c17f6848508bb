"""Deployment status STOPPED: a deployment scaled to zero replicas, settled with nothing running.

It used to report RUNNING, which told a caller polling for readiness that something served the model. The
status column is a VARCHAR with a CHECK constraint (``models.base.str_enum_column_type``), so the new value
is one constraint replaced. Deployments already RUNNING at zero replicas (settled, since RUNNING is only ever
set once a rollout is complete) become STOPPED at once rather than at the next health sweep. Downgrading
reports stopped deployments as RUNNING again, as before.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 19:00:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from models.base import SCHEMA

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CONSTRAINT = "ck_deployments_deployment_status"
BEFORE = ("PENDING", "CREATING", "RUNNING", "DEGRADED", "RESTARTING", "SCALING", "DELETING", "DELETED", "FAILED")
AFTER = (*BEFORE, "STOPPED")


def _replace_constraint(values: tuple[str, ...]) -> None:
    op.drop_constraint(op.f(CONSTRAINT), "deployments", type_="check", schema=SCHEMA)
    op.create_check_constraint(op.f(CONSTRAINT), "deployments", sa.column("status").in_(values), schema=SCHEMA)


def _deployments() -> sa.TableClause:
    return sa.table(
        "deployments", sa.column("status"), sa.column("replicas_desired"), sa.column("deleted_at"), schema=SCHEMA
    )


def upgrade() -> None:
    _replace_constraint(AFTER)
    deployments = _deployments()
    op.execute(
        deployments.update()
        .where(
            deployments.c.status == "RUNNING",
            deployments.c.replicas_desired == 0,
            deployments.c.deleted_at.is_(None),
        )
        .values(status="STOPPED")
    )


def downgrade() -> None:
    deployments = _deployments()
    op.execute(deployments.update().where(deployments.c.status == "STOPPED").values(status="RUNNING"))
    _replace_constraint(BEFORE)
