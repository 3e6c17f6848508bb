"""GPU reservations: the admission ledger.

Admission writes a row per (deployment, node) before any pod exists, so two concurrent requests
cannot both be promised the same free GPUs; the row is released when the deployment shrinks or goes.
Every active row holds GPUs on its node; a tenant's quota use counts a deployment's rows only up to its
desired replicas (``workers.admission``), so a surge the platform adds (a restart's extra replica, a drain's
or a recovery's replacements) never counts against the tenant.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, CreatedAtMixin


class GpuReservation(CreatedAtMixin, Base):
    __tablename__ = "gpu_reservations"
    __table_args__ = (
        Index("ix_gpu_reservations_node_name_active", "node_name", postgresql_where=text("released_at IS NULL")),
        Index(
            "ix_gpu_reservations_deployment_id_active",
            "deployment_id",
            postgresql_where=text("released_at IS NULL"),
        ),
        Index("ix_gpu_reservations_tenant_id_active", "tenant_id", postgresql_where=text("released_at IS NULL")),
        CheckConstraint("gpus > 0", name="gpus_positive"),
        CheckConstraint("replicas > 0", name="replicas_positive"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    deployment_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("deployments.id", ondelete="CASCADE"))
    # Copied from the deployment so quota sums per tenant need no join.
    tenant_id: Mapped[str] = mapped_column(String(63))
    job_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    node_name: Mapped[str] = mapped_column(String(253))
    gpu_type: Mapped[str] = mapped_column(String(128))
    # Total GPUs this row holds on node_name: replicas x the deployment's gpus_per_replica.
    gpus: Mapped[int]
    # How many replicas of the deployment this row places on node_name.
    replicas: Mapped[int] = mapped_column(default=1, server_default="1")
    released_at: Mapped[datetime | None]

    @property
    def is_active(self) -> bool:
        return self.released_at is None

    def __repr__(self) -> str:
        return f"<GpuReservation {self.deployment_id} {self.gpus}x{self.gpu_type} on {self.node_name}>"
