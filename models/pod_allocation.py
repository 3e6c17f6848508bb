"""Pods seen on GPU nodes by the resource tracker, ours or not, with their usage."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, String, Text, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.mutable import MutableDict
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base

# Pod phases after which a pod holds no GPUs (and no node resources): it has run to its end.
FINISHED_POD_PHASES = ("Succeeded", "Failed")


class PodAllocation(Base):
    __tablename__ = "pod_allocations"
    __table_args__ = (
        Index("ix_pod_allocations_node_name_live", "node_name", postgresql_where=text("terminated_at IS NULL")),
        Index(
            "ix_pod_allocations_deployment_id_live",
            "deployment_id",
            postgresql_where=text("terminated_at IS NULL"),
        ),
        CheckConstraint("gpus >= 0", name="gpus_non_negative"),
        CheckConstraint("restarts >= 0", name="restarts_non_negative"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    pod_uid: Mapped[str] = mapped_column(String(64), unique=True)
    namespace: Mapped[str] = mapped_column(String(63))
    pod_name: Mapped[str] = mapped_column(String(253))
    # NULL for pods that are not ours (they still consume GPUs the placement has to account for).
    deployment_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("deployments.id", ondelete="SET NULL"))
    tenant_id: Mapped[str | None] = mapped_column(String(63))
    node_name: Mapped[str | None] = mapped_column(String(253))
    gpus: Mapped[int] = mapped_column(default=0, server_default="0")
    phase: Mapped[str] = mapped_column(String(32), default="Pending", server_default="Pending")
    ready: Mapped[bool] = mapped_column(default=False, server_default="false")
    restarts: Mapped[int] = mapped_column(default=0, server_default="0")
    reason: Mapped[str | None] = mapped_column(String(128))
    message: Mapped[str | None] = mapped_column(Text)
    cpu_usage_millicores: Mapped[int | None]
    memory_usage_bytes: Mapped[int | None] = mapped_column(BigInteger)
    gpu_utilization: Mapped[float | None]
    metrics: Mapped[dict[str, Any]] = mapped_column(
        MutableDict.as_mutable(JSONB), default=dict, server_default=text("'{}'::jsonb")
    )
    started_at: Mapped[datetime | None]
    observed_at: Mapped[datetime] = mapped_column(server_default=func.now())
    terminated_at: Mapped[datetime | None]

    def __repr__(self) -> str:
        return f"<PodAllocation {self.namespace}/{self.pod_name} on {self.node_name}>"
